// H2Session and H2Stream: HTTP/2 from clients (see h2_session.h).
#include "proxy/h2_session.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "http/status.h"
#include "proxy/engine.h"
#include "proxy/stream.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

namespace {

ssize_t readCallback(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                     nghttp2_data_source* source, void*) {
  return static_cast<H2Stream*>(source->ptr)->readResponse(buf, length, flags);
}

}  // namespace

// ------------------------------------------------------------------ stream

H2Stream::H2Stream(H2Session& session, DownstreamInfo& info, int32_t id)
    : HttpExchange(session.worker(), info), session_(session), id_(id), reqHead_(info.limits) {}

H2Stream::~H2Stream() = default;

bool H2Stream::onHeader(std::string_view name, std::string_view value) { return reqHead_.add(name, value); }

void H2Stream::onHeadersTimeout() { session_.onHeadersTimeout(); }

void H2Stream::onSendIdle() {
  if (closed_) return;
  wk_.stats().inc(Counter::DownstreamRqIdleTimeout);
  reset(NGHTTP2_CANCEL);
}

void H2Stream::onHeadersEnd(bool endStream) {
  headersTimer_.cancel();
  Worker& w = wk_;
  w.stats().inc(Counter::DownstreamRqTotal);
  stream_ = std::make_unique<Stream>(this);
  Stream& s = *stream_;
  s.startNs = w.clock().nowNs();
  if (info_.gatewayKey) s.forwardedProto = info_.tls ? "https" : "http";
  touchStream();
  reqEnded_ = endStream;
  http::RequestHead head;
  const bool overflow = reqHead_.overflow();
  if (overflow || !reqHead_.build(endStream, head)) {
    if (overflow) w.stats().inc(Counter::Http2HeaderOverflow);
    w.stats().inc(Counter::DownstreamRqBad);
    s.reqDone = true;
    localReply(overflow ? 431 : 400, overflow ? "request header list too large" : "bad request", "DPE");
    return;
  }
  s.adoptHead(head, reqHead_.bytes().data());
  reqHead_.release();
  if (!acceptHead() || !resolveRoute()) return;
  runFilters();
}

void H2Stream::onBody(std::string_view bytes) {
  if (!stream_ || stream_->reqDone) {
    // Nobody will take it (the exchange was answered already): the window
    // opens again at once.
    nghttp2_session_consume(session_.session(), id_, bytes.size());
    session_.wantSend();
    return;
  }
  touchStream();
  reqIn_.append(bytes);
  if (upstreamOpen() && stream_->upstreamSentNs && !pausedForUpstream_) forwardRequestBody();
}

void H2Stream::onBodyEnd() {
  reqEnded_ = true;
  if (stream_ && !stream_->reqDone && upstreamOpen() && stream_->upstreamSentNs && !pausedForUpstream_)
    forwardRequestBody();
}

int64_t H2Stream::pullRequestBody(std::vector<std::string_view>& payload, bool& done) {
  if (!reqIn_.empty()) payload.emplace_back(reqIn_);
  done = reqEnded_;
  return int64_t(reqIn_.size());
}

void H2Stream::releaseRequestBody(size_t n) {
  reqIn_.erase(0, n);
  if (closed_ || n == 0) return;
  // The client may send as many bytes again (WINDOW_UPDATE).
  nghttp2_session_consume(session_.session(), id_, n);
  session_.wantSend();
}

void H2Stream::sendContinue() {
  const nghttp2_nv nv[] = {http::h2Field(":status", "100")};
  nghttp2_submit_headers(session_.session(), NGHTTP2_FLAG_NONE, id_, nullptr, nv, 1, nullptr);
  session_.wantSend();
}

size_t H2Stream::submitHead(int status, const http::HeaderMap& fields, const http::Framing* length,
                            bool endStream) {
  // HTTP/2 field names are lower case; an HTTP/1.1 upstream's may not be.
  thread_local std::string names;
  thread_local std::vector<nghttp2_nv> nva;
  names.clear();
  nva.clear();
  size_t total = 0;
  for (const http::HeaderMap::Field& f : fields) total += f.name.size();
  names.reserve(total);
  char statusText[4];
  std::to_chars(statusText, statusText + 3, std::clamp(status, 100, 999));
  nva.push_back(http::h2Field(":status", std::string_view(statusText, 3)));
  for (const http::HeaderMap::Field& f : fields) {
    if (std::none_of(f.name.begin(), f.name.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
      nva.push_back(http::h2Field(f.name, f.value));  // already lower case (an HTTP/2 upstream's always are)
      continue;
    }
    const size_t at = names.size();
    for (char c : f.name) names.push_back(c >= 'A' && c <= 'Z' ? char(c + 32) : c);
    nva.push_back(http::h2Field(std::string_view(names).substr(at, f.name.size()), f.value));
  }
  char lengthText[24];
  if (length && length->kind == http::Framing::Kind::ContentLength) {
    auto [end, ec] = std::to_chars(lengthText, lengthText + sizeof(lengthText), length->length);
    nva.push_back(http::h2Field("content-length", std::string_view(lengthText, size_t(end - lengthText))));
  }
  size_t bytes = 0;
  for (const nghttp2_nv& nv : nva) bytes += nv.namelen + nv.valuelen + 4;
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = readCallback;
  headSent_ = true;
  responseEnded_ = endStream;
  const int rv = nghttp2_submit_response(session_.session(), id_, nva.data(), nva.size(),
                                         endStream ? nullptr : &provider);
  if (rv != 0) reset(NGHTTP2_INTERNAL_ERROR);
  session_.wantSend();
  return bytes;
}

size_t H2Stream::sendResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields) {
  const bool noBody = resp.framing.kind == http::Framing::Kind::None;
  // A HEAD or 304 answer tells the length a GET would have had.
  const http::Framing* length = noBody ? (resp.status >= 200 && resp.status != 204 ? &resp.declared : nullptr)
                                       : &resp.framing;
  return submitHead(resp.status, fields, length, noBody);
}

void H2Stream::sendResponseBody(std::string_view raw, const std::vector<std::string_view>* payload, bool last) {
  if (payload) {
    for (std::string_view p : *payload) out_.append(p);
  } else {
    out_.append(raw);
  }
  if (last) outEnded_ = responseEnded_ = true;
  touchStream();
  resumeData();
}

size_t H2Stream::sendLocalResponse(int status, std::string_view body, const http::HeaderMap* extra) {
  const Stream& s = *stream_;
  http::HeaderMap fields;
  if (extra) {
    for (const http::HeaderMap::Field& f : *extra) fields.add(f.name, f.value);
  }
  // A gRPC trailers-only answer carries no length either (Envoy's do not).
  const bool trailersOnly = body.empty() && extra && extra->find("grpc-status");
  const bool bodiless = status == 204 || status == 304 || status < 200 || trailersOnly;
  const bool withBody = !body.empty() && !s.isHead && !bodiless;
  if (!body.empty() && !bodiless && !fields.has("content-type")) fields.add("content-type", "text/plain");
  // A length only where a body is (or, for HEAD, would be): a 204 with
  // one is malformed to a strict client.
  http::Framing length{http::Framing::Kind::ContentLength, body.size()};
  const size_t n = submitHead(status, fields, bodiless ? nullptr : &length, !withBody);
  if (withBody) {
    out_.append(body);
    outEnded_ = true;
    responseEnded_ = true;
    resumeData();
  }
  return n + (withBody ? body.size() : 0);
}

void H2Stream::resumeData() {
  if (deferred_ && !closed_) {
    deferred_ = false;
    nghttp2_session_resume_data(session_.session(), id_);
  }
  session_.wantSend();
}

ssize_t H2Stream::readResponse(uint8_t* buf, size_t length, uint32_t* flags) {
  const size_t avail = out_.size() - outOff_;
  if (avail == 0) {
    if (outEnded_) {
      endData(flags);
      return 0;
    }
    deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  const bool wasBacklogged = avail > kH2StreamHighWater;
  const size_t n = std::min(avail, length);
  std::memcpy(buf, out_.data() + outOff_, n);
  outOff_ += n;
  if (outOff_ == out_.size()) {
    out_.clear();
    outOff_ = 0;
    if (outEnded_) endData(flags);
  } else if (outOff_ > (64u << 10) && outOff_ * 2 > out_.size()) {
    out_.erase(0, outOff_);
    outOff_ = 0;
  }
  if (!stream_ && sendIdleTimer_.armed())
    wk_.timers().schedule(sendIdleTimer_, wk_.engine().options().streamIdleTimeoutNs);
  if (stream_) {
    touchStream();
    // The upstream was paused with this much waiting: read it again once
    // the client has taken it (after nghttp2 returns, not inside its call).
    if (wasBacklogged || upstreamResponsePaused()) session_.resumeLater(this);
  }
  return ssize_t(n);
}

void H2Stream::sendResponseTrailers(const http::HeaderMap& trailers) {
  for (const http::HeaderMap::Field& f : trailers) {
    std::string name(f.name);
    for (char& c : name) c = c >= 'A' && c <= 'Z' ? char(c + 32) : c;
    trailers_.emplace_back(std::move(name), std::string(f.value));
  }
}

void H2Stream::endData(uint32_t* flags) {
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  if (trailers_.empty()) return;
  // gRPC's status rides here: a HEADERS frame with END_STREAM after the data.
  std::vector<nghttp2_nv> nva;
  nva.reserve(trailers_.size());
  for (const auto& [n, v] : trailers_) nva.push_back(http::h2Field(n, v));
  if (nghttp2_submit_trailer(session_.session(), id_, nva.data(), nva.size()) == 0)
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  trailers_.clear();
}

void H2Stream::onResponseDrained() {
  if (closed_ || !stream_ || responseBacklogged()) return;
  onDownstreamDrained();
}

void H2Stream::onExchangeEnd(bool) {
  // The response's END_STREAM is submitted (or in out_, sent once drained).
  if (!responseEnded_) {
    outEnded_ = responseEnded_ = true;
    if (!headSent_) {
      reset(NGHTTP2_INTERNAL_ERROR);
    } else {
      resumeData();
    }
  }
  if (!counted_) {
    counted_ = true;
    session_.noteStreamEnd(true);
  }
  if (!closed_) wk_.timers().schedule(sendIdleTimer_, wk_.engine().options().streamIdleTimeoutNs);
}

void H2Stream::onExchangeCut() { reset(NGHTTP2_INTERNAL_ERROR); }

void H2Stream::resetDownstream() { reset(NGHTTP2_INTERNAL_ERROR); }

void H2Stream::reset(uint32_t errorCode) {
  if (closed_) return;
  responseEnded_ = true;
  wk_.stats().inc(Counter::Http2TxReset);
  nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, errorCode);
  session_.wantSend();
}

void H2Stream::onClosed(uint32_t errorCode, bool connectionGone) {
  (void)errorCode;
  closed_ = true;
  headersTimer_.cancel();
  sendIdleTimer_.cancel();
  // Bytes the client sent that nobody took still count against the
  // connection's window: it opens again.
  if (!reqIn_.empty()) {
    nghttp2_session_consume_connection(session_.session(), reqIn_.size());
    std::string().swap(reqIn_);
  }
  if (stream_) {
    // The client reset the stream (or the connection went) before its
    // response was done: Envoy's downstream termination.
    wk_.stats().inc(Counter::DownstreamCxDestroyRemoteActiveRq);
    abortStream("DC");
    // A stream that closes with its exchange still running was reset (by
    // the client, any error code, NO_ERROR included: the response was not
    // done); one lost with its connection is not the client's doing.
    if (!counted_ && !connectionGone) {
      counted_ = true;
      session_.noteStreamEnd(false);
    }
  }
}

// ----------------------------------------------------------------- session

H2Session::H2Session(DownstreamConn& conn, DownstreamInfo& info) : conn_(conn), info_(info) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &H2Session::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &H2Session::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &H2Session::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &H2Session::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &H2Session::onStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &H2Session::onFrameSend);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, &H2Session::onInvalidFrame);
  session_ = http::newH2ServerSession(cbs, this);
  nghttp2_session_callbacks_del(cbs);
  worker().stats().inc(Counter::DownstreamCxHttp2Total);
  worker().stats().inc(Counter::DownstreamCxHttp2Active);
  updateIdle();
}

H2Session::~H2Session() {
  onConnectionGone();
  worker().stats().dec(Counter::DownstreamCxHttp2Active);
  nghttp2_session_del(session_);
}

Worker& H2Session::worker() { return conn_.worker(); }

void H2Session::wantSend() {
  if (!pumping_) conn_.requestSend();
}

H2Stream* H2Session::find(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

bool H2Session::upgrade(std::string_view settings, const http::RequestHead& head) {
  auto made = std::make_unique<H2Stream>(*this, info_, 1);
  H2Stream* s = made.get();
  if (nghttp2_session_upgrade2(session_, reinterpret_cast<const uint8_t*>(settings.data()), settings.size(),
                               head.method == "HEAD", s) != 0)
    return false;
  streams_.emplace(1, std::move(made));
  updateIdle();
  s->onHeader(":method", head.method);
  s->onHeader(":scheme", "http");
  s->onHeader(":path", head.target);
  s->onHeader(":authority", head.host);
  std::string name;
  for (const http::Header& h : head.headers) {
    name.assign(h.name);
    for (char& c : name) c = c >= 'A' && c <= 'Z' ? char(c + 32) : c;
    // What belonged to the HTTP/1.1 hop (and Host, now :authority).
    if (name == "host" || name == "connection" || name == "upgrade" || name == "http2-settings" ||
        name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" || name == "te")
      continue;
    s->onHeader(name, h.value);
  }
  s->onHeadersEnd(true);
  return true;
}

void H2Session::onData() {
  std::string& in = conn_.inputBuffer();
  if (in.empty() || failed_) return;
  inRecv_ = true;
  const ssize_t n =
      nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(in.data()), in.size());
  inRecv_ = false;
  if (n < 0) {
    fail(n);
    return;
  }
  conn_.consumeInputBytes(size_t(n));
  pump();
}

void H2Session::pump() {
  if (inRecv_ || pumping_ || conn_.closing()) return;
  pumping_ = true;
  for (int round = 0; round < 8; ++round) {
    while (conn_.unsentBytes() < kH2SendBuffer) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        pumping_ = false;
        fail(n);
        return;
      }
      if (n == 0) break;
      conn_.write(std::string_view(reinterpret_cast<const char*>(data), size_t(n)));
    }
    if (resume_.empty()) break;
    std::vector<int32_t> ids;
    ids.swap(resume_);
    for (int32_t id : ids) {
      if (H2Stream* s = find(id)) s->onResponseDrained();
    }
  }
  pumping_ = false;
  reap();
  closeIfDone();
}

void H2Session::closeIfDone() {
  if (conn_.closing()) return;
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    conn_.closeAfterFlush();
  } else if (goaway_ && streams_.empty() && !nghttp2_session_want_write(session_)) {
    conn_.closeAfterFlush();  // drained: every stream the GOAWAY let through is done
  }
}

void H2Session::reap() {
  // Also called from the stream-close callback's aftermath only: no H2Stream
  // of dead_ is on the stack here.
  dead_.clear();
}

void H2Session::fail(ssize_t err) {
  if (failed_) return;
  failed_ = true;
  stats::StatsShard& st = worker().stats();
  switch (err) {
    case NGHTTP2_ERR_FLOODED:
      st.inc(Counter::Http2InboundControlFlood);
      break;
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
      st.inc(Counter::Http2ContinuationFlood);
      break;
    default:
      st.inc(Counter::Http2ProtocolError);
      break;
  }
  flushLastFrames();
  onConnectionGone();
  conn_.closeAfterFlush();
}

void H2Session::flushLastFrames() {
  // nghttp2 may have queued a GOAWAY saying why (maybe behind other
  // frames): what it has goes out, bounded.
  for (int i = 0; i < 64 && conn_.unsentBytes() < 4 * kH2SendBuffer; ++i) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) break;
    conn_.write(std::string_view(reinterpret_cast<const char*>(data), size_t(n)));
  }
}

void H2Session::drain() {
  if (goaway_ || failed_) return;
  goaway_ = true;
  // Streams already opened finish; the client opens its next ones on a
  // new connection.
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  wantSend();
}

void H2Session::onPeerClosed(int) { onConnectionGone(); }

void H2Session::onConnectionGone() {
  for (auto& [id, s] : streams_) {
    if (!s->closed()) s->onClosed(NGHTTP2_CANCEL, /*connectionGone=*/true);
  }
  for (auto& [id, s] : streams_) dead_.push_back(std::move(s));
  streams_.clear();
  if (!inRecv_ && !pumping_) dead_.clear();
}

void H2Session::updateIdle() {
  if (streams_.empty()) {
    conn_.armIdleTimer();
  } else {
    conn_.cancelIdleTimer();
  }
}

void H2Session::onIdle() {
  if (!streams_.empty()) return;
  if (idleClosing_ || failed_) {
    conn_.close();  // the GOAWAY had its chance to go out
    return;
  }
  idleClosing_ = true;
  drain();
  pump();
  conn_.closeAfterFlush();
  conn_.armIdleTimer(kCutFlushNs);  // a client that reads nothing does not hold it
}

void H2Session::onHeadersTimeout() {
  if (failed_) return;
  worker().stats().inc(Counter::DownstreamRqHeaderTimeout);
  failed_ = true;
  nghttp2_session_terminate_session(session_, NGHTTP2_PROTOCOL_ERROR);
  flushLastFrames();
  onConnectionGone();
  conn_.closeAfterFlush();
  conn_.armIdleTimer(kCutFlushNs);
}

void H2Session::noteStreamEnd(bool completed) {
  if (completed) {
    ++completed_;
    return;
  }
  ++premature_;
  if (premature_ >= kH2PrematureResetMin && premature_ > completed_ && !failed_) {
    // Rapid reset: the client makes work and throws it away faster than it
    // lets any finish.
    worker().stats().inc(Counter::Http2PrematureResets);
    goaway_ = true;
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    wantSend();
  }
}

// ------------------------------------------------------ nghttp2 callbacks

int H2Session::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  const int32_t id = frame->hd.stream_id;
  auto s = std::make_unique<H2Stream>(*self, self->info_, id);
  nghttp2_session_set_stream_user_data(self->session_, id, s.get());
  if (const uint64_t limit = self->worker().engine().options().requestHeadersTimeoutNs)
    self->worker().timers().schedule(s->headersTimer_, limit);
  self->streams_.emplace(id, std::move(s));
  self->updateIdle();
  return 0;
}

int H2Session::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                        const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: dropped
  H2Stream* s = self->find(frame->hd.stream_id);
  if (!s) return 0;
  // Past the limit the fields are dropped (the block is still decoded, to
  // keep HPACK's table in step) and the stream is answered 431.
  s->onHeader(std::string_view(reinterpret_cast<const char*>(name), namelen),
              std::string_view(reinterpret_cast<const char*>(value), valuelen));
  return 0;
}

int H2Session::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Session*>(user);
  const bool endStream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      H2Stream* s = self->find(frame->hd.stream_id);
      if (!s) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->onHeadersEnd(endStream);
      } else if (endStream) {
        s->onBodyEnd();  // trailers end the body
      }
      return 0;
    }
    case NGHTTP2_DATA:
      if (endStream) {
        if (H2Stream* s = self->find(frame->hd.stream_id)) s->onBodyEnd();
      }
      return 0;
    case NGHTTP2_RST_STREAM:
      self->worker().stats().inc(Counter::Http2RxReset);
      return 0;
    default:
      return 0;
  }
}

int H2Session::onDataChunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (H2Stream* s = self->find(id)) {
    s->onBody(std::string_view(reinterpret_cast<const char*>(data), len));
  } else {
    nghttp2_session_consume_connection(self->session_, len);
  }
  return 0;
}

int H2Session::onStreamClose(nghttp2_session*, int32_t id, uint32_t errorCode, void* user) {
  auto* self = static_cast<H2Session*>(user);
  auto it = self->streams_.find(id);
  if (it == self->streams_.end()) return 0;
  it->second->onClosed(errorCode);
  self->dead_.push_back(std::move(it->second));
  self->streams_.erase(it);
  self->updateIdle();
  return 0;
}

int H2Session::onFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    self->worker().stats().inc(Counter::Http2GoawaySent);
    return 0;
  }
  // The response is whole but the client is still sending a body nobody
  // will read: tell it to stop (RFC 9113, 8.1).
  if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

int H2Session::onInvalidFrame(nghttp2_session*, const nghttp2_frame*, int, void* user) {
  // A frame that breaks the rules of its stream (a bad header field, say):
  // nghttp2 resets that stream; the connection goes on.
  static_cast<H2Session*>(user)->worker().stats().inc(Counter::Http2RxMessagingError);
  return 0;
}

}  // namespace sluice::proxy
