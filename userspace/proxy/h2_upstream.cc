// H2UpstreamConn and H2UpstreamStream: HTTP/2 to upstreams (see h2_upstream.h).
#include "proxy/h2_upstream.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "proxy/engine.h"
#include "proxy/http_session.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

// ------------------------------------------------------------------ stream

bool H2UpstreamStream::ready() const { return !closed_ && conn_.ready(); }

bool H2UpstreamStream::submit(const std::vector<nghttp2_nv>& head, bool endStream) {
  if (closed_) return false;
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = &H2UpstreamConn::readRequest;
  reqEnded_ = endStream;
  const int32_t id = nghttp2_submit_request(conn_.session(), nullptr, head.data(), head.size(),
                                            endStream ? nullptr : &provider, this);
  if (id < 0) return false;
  id_ = id;
  // Move from the waiting list (or the stream was opened on a live connection).
  for (auto it = conn_.waiting_.begin(); it != conn_.waiting_.end(); ++it) {
    if (it->get() == this) {
      conn_.streams_[id] = std::move(*it);
      conn_.waiting_.erase(it);
      break;
    }
  }
  conn_.wantSend();
  return true;
}

void H2UpstreamStream::write(std::string_view bytes, bool end) {
  if (closed_) return;
  reqOut_.append(bytes);
  if (end) reqEnded_ = true;
  if (deferred_ && id_ > 0 && !closed_) {
    deferred_ = false;
    nghttp2_session_resume_data(conn_.session(), id_);
  }
  conn_.wantSend();
}

void H2UpstreamStream::take(size_t n) {
  respIn_.erase(0, n);
  if (n == 0 || closed_ || id_ <= 0) return;
  nghttp2_session_consume(conn_.session(), id_, n);
  conn_.wantSend();
}

void H2UpstreamStream::cancel() {
  if (closed_) {
    owner_ = nullptr;  // the connection may be gone: nothing to tell it
    return;
  }
  conn_.forget(this);
}

// -------------------------------------------------------------- connection

H2UpstreamConn::H2UpstreamConn(Worker& worker, int fd, const route::Endpoint& ep, EndpointState& state,
                               upstream::LimitToken connToken, const route::UpstreamSettings& settings,
                               bool forMirrors)
    : OutboundConnection(worker, fd),
      state_(state),
      connToken_(std::move(connToken)),
      settings_(settings),
      addr_(ep.sockaddr),
      forMirrors_(forMirrors) {
  worker_.stats().inc(Counter::UpstreamCxTotal);
  worker_.stats().inc(Counter::UpstreamCxActive);
  worker_.stats().inc(Counter::UpstreamCxHttp2Total);
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &H2UpstreamConn::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &H2UpstreamConn::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &H2UpstreamConn::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &H2UpstreamConn::onStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &H2UpstreamConn::onFrameSend);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_continuations(opt, 8);
  // Until the server's SETTINGS say otherwise, assume its streams are few
  // (RFC 9113 recommends allowing at least 100): a burst while connecting
  // spreads over connections instead of queueing on one.
  nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
  nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  const nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kH2UpstreamStreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 96 * 1024},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries, std::size(entries));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kH2UpstreamConnectionWindow);
  state_.h2.push_back(this);
  pooled_ = true;
}

void H2UpstreamConn::connect() {
  if (!connected() && streamsOpened_ <= 1) connectTo(addr_, settings_.connectTimeoutNs);
}

bool H2UpstreamConn::canOpen(const route::UpstreamSettings& s, bool forMirrors) const {
  if (goaway_ || closing() || !pooled_ || forMirrors != forMirrors_) return false;
  // Stream ids run out at last (2^30 requests on one connection).
  if (!nghttp2_session_check_request_allowed(session_)) return false;
  if (s.tls != settings_.tls || s.tlsCredentials != settings_.tlsCredentials) return false;
  if (s.h2PingIntervalNs != settings_.h2PingIntervalNs || s.h2PingTimeoutNs != settings_.h2PingTimeoutNs) return false;
  const size_t open = streams_.size() + waiting_.size();
  const uint32_t peerMax = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (open >= std::min<uint32_t>(peerMax, s.maxConcurrentStreams ? s.maxConcurrentStreams : peerMax)) return false;
  if (connToken_) {
    const uint32_t perConn = connToken_.limits()->limits().maxRequestsPerConnection;
    if (perConn && streamsOpened_ >= perConn) return false;
  }
  return true;
}

H2UpstreamConn* H2UpstreamConn::sideChannel(const EndpointState& state, const route::UpstreamSettings& s) {
  for (H2UpstreamConn* c : state.h2) {
    if (c->canOpen(s, /*forMirrors=*/true)) return c;
  }
  return nullptr;
}

std::shared_ptr<H2UpstreamStream> H2UpstreamConn::openStream(H2StreamOwner* owner) {
  ++streamsOpened_;
  idleTimer_.cancel();
  if (connToken_) {
    // maxRequestsPerConnection used up: no more streams here, and the
    // connection closes (its slot freed) once this one is done.
    const uint32_t perConn = connToken_.limits()->limits().maxRequestsPerConnection;
    if (perConn && streamsOpened_ >= perConn) leavePool();
  }
  auto s = std::make_shared<H2UpstreamStream>(*this, owner, streamsOpened_ > 1);
  waiting_.push_back(s);
  ++attached_;
  if (streamsOpened_ > 1) worker_.stats().inc(Counter::UpstreamCxReused);
  return s;
}

void H2UpstreamConn::unlive(H2UpstreamStream& s) {
  if (!s.live_) return;
  s.live_ = false;
  --attached_;
}

void H2UpstreamConn::detachOwner(H2UpstreamStream& s) {
  s.owner_ = nullptr;
  unlive(s);
}

void H2UpstreamConn::forget(H2UpstreamStream* s) {
  detachOwner(*s);
  if (s->id_ <= 0) {
    // Never submitted: it just goes.
    s->closed_ = true;
    std::erase_if(waiting_, [&](const std::shared_ptr<H2UpstreamStream>& w) { return w.get() == s; });
  } else {
    // What it received and nobody will read opens the windows again.
    if (!s->respIn_.empty()) {
      nghttp2_session_consume(session_, s->id_, s->respIn_.size());
      std::string().swap(s->respIn_);
      wantSend();
    }
    if (!(s->respEnded_ && s->reqEnded_ && s->requestBacklog() == 0)) {
      // Not done both ways: the server stops working on it.
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id_, NGHTTP2_CANCEL);
      wantSend();
    }
  }
  scheduleIdle();
}

void H2UpstreamConn::onConnected() {
  if (settings_.tls) {
    std::unique_ptr<TlsClientTransport> t = makeClientTls(worker_, settings_, state_, addr_);
    if (!t) {
      // Never plaintext to an upstream that wants TLS.
      worker_.stats().inc(Counter::UpstreamSslHandshakeError);
      onConnectFailed(false);
      return;
    }
    tls_ = t.get();
    tlsPending_ = true;
    startTls(std::move(t), handshakeTimer_, settings_.connectTimeoutNs);
    return;
  }
  startReading();  // the server's SETTINGS, then responses, for as long as the connection lives
  becomeReady();
}

void H2UpstreamConn::onTransportReady() {
  if (!tlsPending_) return;
  tlsPending_ = false;
  handshakeTimer_.cancel();
  if (tls_->alpn() != "h2") {
    // The server would not speak HTTP/2 (ALPN): nothing can go out on it.
    worker_.stats().inc(Counter::UpstreamSslHandshakeError);
    onConnectFailed(false);
    return;
  }
  becomeReady();
}

void H2UpstreamConn::onHandshakeTimeout() {
  if (!tlsPending_ || closing()) return;
  tlsPending_ = false;
  worker_.stats().inc(Counter::UpstreamSslHandshakeError);
  onConnectFailed(true);
}

void H2UpstreamConn::becomeReady() {
  if (settings_.h2PingIntervalNs) worker_.timers().schedule(pingTimer_, settings_.h2PingIntervalNs);
  // Each waiting exchange submits its request now (onUpstreamConnected);
  // one that fails may drop others, so go by a copy of the owners.
  std::vector<H2StreamOwner*> owners;
  for (auto& s : waiting_) {
    if (s->owner_) owners.push_back(s->owner_);
  }
  wantSend();
  for (H2StreamOwner* o : owners) o->onUpstreamConnected();
}

void H2UpstreamConn::onConnectFailed(bool timedOut) {
  if (timedOut) worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
  worker_.stats().inc(Counter::UpstreamCxConnectFail);
  leavePool();
  std::shared_ptr<upstream::ClusterLimits> freed = giveBackSlot();
  std::vector<H2StreamOwner*> owners;
  for (auto& s : waiting_) {
    if (s->owner_) owners.push_back(s->owner_);
    detachOwner(*s);
    s->closed_ = true;
  }
  waiting_.clear();
  close();
  for (H2StreamOwner* o : owners) o->onUpstreamConnectFailed(timedOut);
  if (freed) worker_.pool().slotFreed(freed);
}

void H2UpstreamConn::onData() {
  inRecv_ = true;
  const ssize_t n = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(input_.data()), input_.size());
  inRecv_ = false;
  if (n < 0) {
    worker_.stats().inc(Counter::UpstreamCxProtocolError);
    failAll(-EPROTO);
    close();
    return;
  }
  consumeInput(size_t(n));
  pump();
}

void H2UpstreamConn::beforeSend() { pump(); }

void H2UpstreamConn::onDrained() { pump(); }

void H2UpstreamConn::pump() {
  if (inRecv_ || closing() || !ready()) return;
  for (int round = 0; round < 4; ++round) {
    while (unsentBytes() < 128 * 1024) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        failAll(-EPROTO);
        close();
        return;
      }
      if (n == 0) break;
      write(std::string_view(reinterpret_cast<const char*>(data), size_t(n)));
    }
    // Streams whose request bytes all went out: their exchange may send
    // more (it paused past its high water), then those go out too.
    if (wantBody_.empty()) break;
    std::vector<std::shared_ptr<H2UpstreamStream>> drained;
    for (int32_t id : wantBody_) {
      auto it = streams_.find(id);
      if (it == streams_.end()) continue;
      const auto& s = it->second;
      if (s->owner_ && s->deferred_ && !s->reqEnded_ && s->requestBacklog() == 0) drained.push_back(s);
    }
    wantBody_.clear();
    for (auto& s : drained) {
      if (s->owner_) s->owner_->onUpstreamDrained();
    }
  }
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    leavePool();
    closeAfterFlush();
  }
}

std::shared_ptr<upstream::ClusterLimits> H2UpstreamConn::giveBackSlot() {
  if (!connToken_) return nullptr;
  std::shared_ptr<upstream::ClusterLimits> limits = connToken_.shared();
  connToken_.reset();
  return limits;
}

void H2UpstreamConn::failAll(int err) {
  leavePool();
  std::shared_ptr<upstream::ClusterLimits> freed = giveBackSlot();
  std::vector<H2StreamOwner*> owners;
  for (auto& s : waiting_) {
    if (s->owner_) owners.push_back(s->owner_);
    detachOwner(*s);
    s->closed_ = true;
  }
  for (auto& [id, s] : streams_) {
    if (s->owner_) owners.push_back(s->owner_);
    detachOwner(*s);
    s->closed_ = true;
  }
  waiting_.clear();
  streams_.clear();
  for (H2StreamOwner* o : owners) o->onUpstreamClosed(err);
  if (freed) worker_.pool().slotFreed(freed);
}

void H2UpstreamConn::onPeerClosed(int err) {
  if (tlsPending_) {
    // The handshake failed (or the server hung up during it): a connection
    // failure (UF), retried as one.
    tlsPending_ = false;
    handshakeTimer_.cancel();
    onConnectFailed(false);
    return;
  }
  failAll(err);
  close();
}

void H2UpstreamConn::leavePool() {
  if (!pooled_) return;
  pooled_ = false;
  std::erase(state_.h2, this);
}

void H2UpstreamConn::closeGracefully() {
  if (closing()) return;
  leavePool();
  pingTimer_.cancel();
  pingDeadline_.cancel();
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  pump();
  closeAfterFlush();
}

void H2UpstreamConn::retireWhenIdle(bool onlyIfIdle) {
  const bool idle = attached_ == 0 && waiting_.empty();
  if (onlyIfIdle && !idle) return;
  leavePool();
  if (idle) closeGracefully();
}

void H2UpstreamConn::scheduleIdle() {
  // A connection with no stream left closes after the idle timeout; one
  // that takes no new streams (GOAWAY, maxRequestsPerConnection, drain)
  // closes now.
  if (attached_ > 0 || closing()) return;
  if (!pooled_) {
    if (inRecv_) {
      worker_.timers().schedule(idleTimer_, 1);  // not inside nghttp2's call
    } else {
      closeGracefully();
    }
    return;
  }
  worker_.timers().schedule(idleTimer_, settings_.idleTimeoutNs ? settings_.idleTimeoutNs
                                                                : worker_.engine().options().idleTimeoutNs);
}

void H2UpstreamConn::onPingInterval() {
  if (closing()) return;
  worker_.timers().schedule(pingTimer_, settings_.h2PingIntervalNs);
  if (pingOut_) return;
  if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) != 0) return;
  pingOut_ = true;
  pump();  // the deadline starts once the PING is written (onFrameSend)
}

int H2UpstreamConn::onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2UpstreamConn*>(user);
  // A PING waiting behind request bodies the socket has not taken is not
  // late yet: its ACK is due from when it goes out.
  if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK) && self->pingOut_)
    self->worker_.timers().schedule(self->pingDeadline_, self->settings_.h2PingTimeoutNs);
  return 0;
}

void H2UpstreamConn::onPingTimeout() {
  if (!pingOut_ || closing()) return;
  worker_.stats().inc(Counter::UpstreamHttp2KeepaliveTimeout);
  failAll(-ETIMEDOUT);
  close();
}

void H2UpstreamConn::onIdleTimeout() {
  if (attached_ > 0 || !waiting_.empty()) return;
  closeGracefully();
}

void H2UpstreamConn::onDestroy() {
  leavePool();
  failAll(-ECONNABORTED);
  worker_.stats().dec(Counter::UpstreamCxActive);
  if (session_) nghttp2_session_del(session_);
  session_ = nullptr;
  if (connToken_) {
    std::shared_ptr<upstream::ClusterLimits> limits = connToken_.shared();
    connToken_.reset();
    worker_.pool().slotFreed(limits);
  }
}

// ------------------------------------------------------ nghttp2 callbacks

ssize_t H2UpstreamConn::readRequest(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                                    nghttp2_data_source* source, void*) {
  auto* s = static_cast<H2UpstreamStream*>(source->ptr);
  const size_t avail = s->reqOut_.size() - s->reqOff_;
  if (avail == 0) {
    if (s->reqEnded_) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    s->deferred_ = true;
    s->conn_.wantBody_.push_back(s->id_);
    return NGHTTP2_ERR_DEFERRED;
  }
  const size_t n = std::min(avail, length);
  std::memcpy(buf, s->reqOut_.data() + s->reqOff_, n);
  s->reqOff_ += n;
  if (s->reqOff_ == s->reqOut_.size()) {
    s->reqOut_.clear();
    s->reqOff_ = 0;
    if (s->reqEnded_) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else {
      s->deferred_ = true;  // pump() tells the exchange it may send more
      s->conn_.wantBody_.push_back(s->id_);
    }
  }
  return ssize_t(n);
}

int H2UpstreamConn::onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                             size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* s = static_cast<H2UpstreamStream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!s) return 0;
  const std::string_view n(reinterpret_cast<const char*>(name), namelen);
  const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    int status = 0;
    std::from_chars(v.data(), v.data() + v.size(), status);
    s->status_ = status;
    return 0;
  }
  if (n.starts_with(':')) return 0;
  H2UpstreamStream::FieldPos pos{uint32_t(s->fieldBytes_.size()), uint32_t(n.size()),
                                 uint32_t(s->fieldBytes_.size() + n.size()), uint32_t(v.size())};
  s->fieldBytes_.append(n).append(v);
  s->fields_.push_back(pos);
  return 0;
}

int H2UpstreamConn::onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2UpstreamConn*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // No new streams here; those above last_stream_id close as refused.
    self->goaway_ = true;
    self->leavePool();
    return 0;
  }
  if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
    self->pingOut_ = false;
    self->pingDeadline_.cancel();
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  auto* s = static_cast<H2UpstreamStream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!s) return 0;
  const bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (end) s->respEnded_ = true;
  H2StreamOwner* o = s->owner_;
  if (frame->hd.type == NGHTTP2_DATA) {
    if (end && o) o->onH2UpstreamData();
    return 0;
  }
  // The head's fields, or the trailers' (the fields after the head's).
  std::vector<http::Header> fields;
  const size_t first = s->headDone_ ? s->trailerField_ : 0;
  fields.reserve(s->fields_.size() - first);
  const std::string_view bytes = s->fieldBytes_;
  for (size_t i = first; i < s->fields_.size(); ++i) {
    const auto& f = s->fields_[i];
    fields.push_back({bytes.substr(f.name, f.nameLen), bytes.substr(f.value, f.valueLen)});
  }
  if (!s->headDone_) {
    if (s->status_ >= 100 && s->status_ < 200) {
      // An interim answer: the final one follows.
      s->fields_.clear();
      s->fieldBytes_.clear();
      s->status_ = 0;
      return 0;
    }
    s->headDone_ = true;
    s->trailerField_ = s->fields_.size();
    if (o) o->onH2UpstreamHead(s->status_, fields, end);
  } else if (o) {
    o->onH2UpstreamTrailers(fields);
  }
  return 0;
}

int H2UpstreamConn::onDataChunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len,
                                void*) {
  auto* s = static_cast<H2UpstreamStream*>(nghttp2_session_get_stream_user_data(session, id));
  if (!s || !s->owner_) {
    nghttp2_session_consume(session, id, len);  // nobody reads it: the window opens at once
    return 0;
  }
  s->respIn_.append(reinterpret_cast<const char*>(data), len);
  s->owner_->onH2UpstreamData();
  return 0;
}

int H2UpstreamConn::onStreamClose(nghttp2_session*, int32_t id, uint32_t errorCode, void* user) {
  auto* self = static_cast<H2UpstreamConn*>(user);
  auto it = self->streams_.find(id);
  if (it == self->streams_.end()) return 0;
  std::shared_ptr<H2UpstreamStream> s = std::move(it->second);
  self->streams_.erase(it);
  s->closed_ = true;
  self->unlive(*s);
  // Its unread bytes count against the connection's window no more (the
  // stream's own window goes with it); an exchange may still read them.
  if (!s->respIn_.empty()) nghttp2_session_consume_connection(self->session_, s->respIn_.size());
  // A stream whose response ended stays with its exchange, which may still
  // be passing its last bytes on; any other end is a reset to it.
  const bool ended = s->respEnded_;  // a reset after END_STREAM cannot take the response back
  if (!ended && s->owner_) {
    H2StreamOwner* o = s->owner_;
    self->detachOwner(*s);
    o->onH2UpstreamReset(errorCode);
  }
  self->scheduleIdle();
  return 0;
}

}  // namespace sluice::proxy
