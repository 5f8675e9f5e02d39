#include "proxy/shadow.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

#include "core/timer_wheel.h"
#include "http/h2.h"
#include "http/parser.h"
#include "proxy/connection.h"
#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/outbound.h"
#include "proxy/request_util.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {
// Idle keep-alive connections kept per mirror endpoint and worker: enough
// for a steady mirror rate without holding a socket per past burst.
constexpr size_t kMaxIdlePerEndpoint = 16;

using stats::Counter;
}  // namespace

// One connection to a mirror endpoint, carrying one mirrored request at a
// time. It owns itself like every Connection: it ends with close() and the
// worker deletes it once no io_uring operation refers to it. The primary
// only ever holds a ShadowStream, which this object nulls when it detaches.
class ShadowConn final : public OutboundConnection, public ShadowSink {
 public:
  // `connToken`: its unit of the mirror cluster's maxConnections (empty
  // when the cluster has no limit), given back when it closes. `settings`:
  // how the cluster connects (TLS or not, the connect timeout).
  ShadowConn(ShadowManager& mgr, int fd, const route::Endpoint& ep, upstream::LimitToken connToken,
             const route::UpstreamSettings& settings)
      : OutboundConnection(mgr.worker_, fd), mgr_(mgr), addr_(ep.sockaddr), key_(ep.key),
        connToken_(std::move(connToken)), settings_(settings), state_(mgr.worker_.endpointState(ep)) {
    next_ = mgr_.live_;
    if (next_) next_->prev_ = this;
    mgr_.live_ = this;
  }
  // Public: the manager deletes the connections still alive when the worker
  // exits (the worker reaps the others through Connection).
  ~ShadowConn() override { detachAll(); }

  void connect() { connectTo(addr_, settings_.connectTimeoutNs); }

  // Made the way `s` connects (plaintext, or TLS with the same credentials).
  bool sameTransport(const route::UpstreamSettings& s) const {
    return s.tls == settings_.tls && s.tlsCredentials == settings_.tlsCredentials;
  }

  // Binds a new mirrored request; counted in the manager's inFlight_ until
  // endMirror().
  void begin(ShadowStream* stream, ShadowRequest&& rq) {
    stream_ = stream;
    active_ = true;
    ++mgr_.inFlight_;
    reqDone_ = !rq.hasBody;
    chunked_ = rq.chunked;
    // A response to HEAD has no body whatever its headers say.
    isHead_ = rq.head.starts_with("HEAD ");
    respHeadDone_ = false;
    respBody_.reset({});
    timeoutNs_ = rq.timeoutNs;
    worker_.timers().schedule(rqTimer_, timeoutNs_ ? timeoutNs_
                                                   : worker_.engine().options().streamIdleTimeoutNs);
    send(std::move(rq.head));
  }

  void feedBody(std::string_view payload, bool last) override {
    if (!active_) return;
    touch();
    if (chunked_) {
      std::string framed;
      appendChunks({payload}, last, framed);
      send(std::move(framed));
    } else {
      send(payload);
    }
    if (last) reqDone_ = true;
    if (totalUnsent() > mgr_.maxUnsentBytes_) {
      // A mirror slower than the primary would otherwise buffer the whole
      // body; memory stays bounded, the mirror is dropped.
      worker_.stats().inc(Counter::RetryOrShadowAbandoned);
      endMirror();
      close();
    }
  }

  // The primary's handle is being destroyed.
  void streamGone(bool finished) override {
    stream_ = nullptr;
    if (finished || !active_) return;
    // The request will never be complete: the mirror cannot finish.
    endMirror();
    close();
  }

  // Back into the pool after a clean, reusable exchange.
  void park() {
    pooled_ = true;
    mgr_.idle_[key_].push_back(this);
    // Recv stays armed: a close from the server (or stray bytes) takes the
    // connection out of the pool before a request is sent on it.
    worker_.timers().schedule(poolTimer_, worker_.engine().options().idleTimeoutNs);
  }

  // Out of the pool for a new request.
  void unpark() {
    removeFromPool();
    poolTimer_.cancel();
  }

  // Closes a connection that carries no mirror, out of the pool first so
  // no new mirror picks it while it tears down.
  void retire() {
    unpark();
    close();
  }

  const std::string& key() const { return key_; }

 private:
  friend class ShadowManager;

  void onData() override {
    if (!active_) {
      // An idle HTTP/1.1 connection must be silent.
      retire();
      return;
    }
    touch();
    if (!respHeadDone_) {
      for (;;) {
        http::ParseError err;
        resp_.headers.clear();
        http::ParseStatus st =
            http::parseResponseHead(input_.data(), input_.size(), limits_, isHead_, resp_, err);
        if (st == http::ParseStatus::Incomplete) return;
        if (st == http::ParseStatus::Error) {
          fail();
          return;
        }
        if (resp_.status == 101) {  // nothing was upgraded: not HTTP from here on
          fail();
          return;
        }
        consumeInput(resp_.headBytes);
        if (resp_.status >= 200) break;  // 1xx: interim, the final head follows
      }
      respHeadDone_ = true;
      respBody_.reset(resp_.framing);
    }
    if (!respBody_.done() && !input_.empty()) {
      http::BodyFramer::Step step = respBody_.consume(input_.data(), input_.size());
      if (step.status == http::BodyFramer::Status::Error) {
        fail();
        return;
      }
      consumeInput(step.consumed);
    }
    if (respBody_.done()) finish();
  }

  void onPeerClosed(int err) override {
    if (tlsPending_) {
      // The handshake failed (the transport counted it), or the server
      // hung up during it.
      tlsPending_ = false;
      handshakeTimer_.cancel();
      fail();
      return;
    }
    if (active_ && respHeadDone_ && err == 0 && respBody_.finish() == http::BodyFramer::Status::Done) {
      endMirror();  // a body delimited by the close
      close();
      return;
    }
    if (active_) {
      fail();
      return;
    }
    retire();
  }

  void onSendProgress() override {
    if (active_) touch();
  }

  void onConnectFailed(bool timedOut) override {
    if (timedOut) worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
    if (active_ || !timedOut) {
      fail();
    } else {
      close();
    }
  }

  void onConnected() override {
    if (settings_.tls) {
      std::unique_ptr<TlsClientTransport> t = makeClientTls(worker_, settings_, state_, addr_);
      if (!t) {
        // Never plaintext to an upstream that wants TLS.
        worker_.stats().inc(Counter::UpstreamSslHandshakeError);
        fail();
        return;
      }
      tlsPending_ = true;
      startTls(std::move(t), handshakeTimer_, settings_.connectTimeoutNs);
      return;
    }
    flushPreConnect();
    startReading();
  }

  void onTransportReady() override {
    if (!tlsPending_) return;
    tlsPending_ = false;
    handshakeTimer_.cancel();
    flushPreConnect();
  }

  void onHandshakeTimeout() {
    if (!tlsPending_ || closing()) return;
    tlsPending_ = false;
    worker_.stats().inc(Counter::UpstreamSslHandshakeError);
    onConnectFailed(true);
  }

  void flushPreConnect() {
    if (!preConnect_.empty()) {
      write(std::move(preConnect_));
      preConnect_.clear();
    }
  }

  // An idle mirror connection must not sit on a maxConnections slot its
  // cluster is short of: requests may be waiting for one, and other
  // mirrors would be shed for the whole idle timeout.
  bool holdsNeededSlot() const {
    const upstream::ClusterLimits* l = connToken_.limits();
    return l && (!l->hasRoom(upstream::ClusterLimits::kConnections) ||
                 l->inUse(upstream::ClusterLimits::kPending) > 0);
  }

  void onDestroy() override {
    detachAll();
    if (connToken_) {
      // The slot goes back now; a request of that cluster waiting for one
      // is woken (here or on another worker).
      std::shared_ptr<upstream::ClusterLimits> limits = connToken_.shared();
      connToken_.reset();
      worker_.pool().slotFreed(limits);
    }
  }

  // The response is complete.
  void finish() {
    // Reuse only a connection whose exchange ended exactly: whole request
    // sent, no stray bytes after the response, and the server keeps it open.
    bool reusable = reqDone_ && resp_.keepAlive && input_.empty() && unsentBytes() == 0 &&
                    preConnect_.empty() && respBody_.framing().kind != http::Framing::Kind::UntilClose &&
                    !worker_.draining();
    endMirror();
    if (!reusable || holdsNeededSlot()) {
      close();
      return;
    }
    auto& idle = mgr_.idle_[key_];
    if (idle.size() >= kMaxIdlePerEndpoint) {
      close();
      return;
    }
    park();
  }

  void fail() {
    worker_.stats().inc(Counter::ShadowRqFailed);
    endMirror();
    close();
  }

  // The mirrored request is over (however it ended): it leaves the
  // manager's count, and its stream no longer refers to this connection.
  void endMirror() {
    if (active_) {
      active_ = false;
      --mgr_.inFlight_;
    }
    rqTimer_.cancel();
    if (stream_) {
      stream_->sink_ = nullptr;
      stream_ = nullptr;
    }
  }

  void detachAll() {
    endMirror();
    poolTimer_.cancel();
    if (pooled_) removeFromPool();
    if (prev_) {
      prev_->next_ = next_;
    } else if (mgr_.live_ == this) {
      mgr_.live_ = next_;
    }
    if (next_) next_->prev_ = prev_;
    prev_ = next_ = nullptr;
  }

  void removeFromPool() {
    pooled_ = false;
    auto it = mgr_.idle_.find(key_);
    if (it == mgr_.idle_.end()) return;
    auto& v = it->second;
    auto pos = std::find(v.begin(), v.end(), this);
    if (pos != v.end()) {
      *pos = v.back();
      v.pop_back();
    }
    if (v.empty()) mgr_.idle_.erase(it);
  }

  // Bytes go out once TCP (and TLS, if any) is up.
  bool ready() const { return connected() && !tlsPending_; }

  void send(std::string&& bytes) {
    if (ready()) {
      write(std::move(bytes));
    } else if (preConnect_.empty()) {
      preConnect_ = std::move(bytes);
    } else {
      preConnect_.append(bytes);
    }
  }
  void send(std::string_view bytes) {
    if (ready()) {
      write(bytes);
    } else {
      preConnect_.append(bytes);
    }
  }

  size_t totalUnsent() const { return preConnect_.size() + unsentBytes(); }

  // Progress re-arms the idle bound; an explicit timeout is end to end.
  void touch() {
    if (active_ && timeoutNs_ == 0) {
      worker_.timers().schedule(rqTimer_, worker_.engine().options().streamIdleTimeoutNs);
    }
  }

  void onRqTimer() {
    if (active_) fail();
  }
  void onPoolTimer() {
    if (pooled_) retire();
  }

  ShadowManager& mgr_;
  sockaddr_in addr_;
  std::string key_;
  upstream::LimitToken connToken_;
  route::UpstreamSettings settings_;
  EndpointState& state_;  // the endpoint's TLS session, for resumption
  ShadowStream* stream_ = nullptr;
  ShadowConn* prev_ = nullptr;
  ShadowConn* next_ = nullptr;
  // Request bytes written before the connect completed.
  std::string preConnect_;
  http::Limits limits_;
  http::ResponseHead resp_;
  http::BodyFramer respBody_;
  uint64_t timeoutNs_ = 0;
  core::MemberTimer<ShadowConn, &ShadowConn::onRqTimer> rqTimer_{this};
  core::MemberTimer<ShadowConn, &ShadowConn::onPoolTimer> poolTimer_{this};
  core::MemberTimer<ShadowConn, &ShadowConn::onHandshakeTimeout> handshakeTimer_{this};
  bool active_ = false;
  bool chunked_ = false;
  bool tlsPending_ = false;
  bool reqDone_ = false;
  bool isHead_ = false;
  bool respHeadDone_ = false;
  bool pooled_ = false;
};

// One mirrored request on a cluster that speaks HTTP/2: a stream on the
// worker's shared connections to the endpoint (H2UpstreamConn, as the
// router's attempts use), its response read and dropped. It owns itself:
// ending, it goes to the manager's reap list, freed outside its calls.
class ShadowH2 final : public ShadowSink, public H2StreamOwner {
 public:
  ShadowH2(ShadowManager& mgr, ShadowRequest&& rq, bool https)
      : mgr_(mgr), worker_(mgr.worker_), rq_(std::move(rq)), https_(https) {
    mgr_.liveH2_.push_back(this);
  }
  // Only the manager deletes one: ended (nothing refers to it), or alive
  // at the worker's exit, when it lets go of its stream and handle so
  // neither can call it again.
  ~ShadowH2() {
    if (handle_) handle_->sink_ = nullptr;
    if (stream_) stream_->cancel();
  }

  void begin(H2UpstreamConn& conn, ShadowStream* handle) {
    handle_ = handle;
    ++mgr_.inFlight_;
    stream_ = conn.openStream(this);
    worker_.timers().schedule(rqTimer_, rq_.timeoutNs ? rq_.timeoutNs
                                                      : worker_.engine().options().streamIdleTimeoutNs);
  }

  // ---- ShadowSink
  void feedBody(std::string_view payload, bool last) override {
    if (ended_) return;
    touch();
    if (stream_->submitted()) {
      stream_->write(payload, last);
    } else {
      pending_.append(payload);
      pendingEnd_ = pendingEnd_ || last;
    }
    if (pending_.size() + stream_->requestBacklog() > mgr_.maxUnsentBytes_) {
      // A mirror slower than the primary would otherwise buffer the whole
      // body; memory stays bounded, the mirror is dropped.
      worker_.stats().inc(Counter::RetryOrShadowAbandoned);
      end(false);
    }
  }

  void streamGone(bool finished) override {
    handle_ = nullptr;
    // The request will never be complete: the mirror cannot finish.
    if (!finished) end(false);
  }

  // ---- H2StreamOwner
  void onUpstreamConnected() override {
    if (ended_ || stream_->submitted()) return;
    thread_local http::H2RequestFields fields;
    if (!fields.build(rq_.head, https_ ? "https" : "http", rq_.teTrailers) ||
        !stream_->submit(fields.fields(), !rq_.hasBody)) {
      end(true);
      return;
    }
    std::string().swap(rq_.head);
    if (!pending_.empty() || pendingEnd_) {
      stream_->write(pending_, pendingEnd_);
      std::string().swap(pending_);
    }
  }
  void onUpstreamConnectFailed(bool) override { end(true); }
  void onUpstreamClosed(int) override { end(true); }
  void onUpstreamDrained() override {}
  void onH2UpstreamHead(int, std::vector<http::Header>&, bool endStream) override {
    touch();
    if (endStream) end(false);
  }
  void onH2UpstreamData() override {
    touch();
    stream_->take(stream_->responseBody().size());
    if (stream_->responseEnded()) end(false);
  }
  void onH2UpstreamTrailers(std::vector<http::Header>&) override { end(false); }
  void onH2UpstreamReset(uint32_t) override { end(true); }

 private:
  // Progress re-arms the idle bound; an explicit timeout is end to end.
  void touch() {
    if (!ended_ && rq_.timeoutNs == 0)
      worker_.timers().schedule(rqTimer_, worker_.engine().options().streamIdleTimeoutNs);
  }
  void onRqTimer() { end(true); }

  // However it ended: out of the count, the stream let go (reset if not
  // done both ways), the handle told, and onto the reap list.
  void end(bool failed) {
    if (ended_) return;
    ended_ = true;
    if (failed) worker_.stats().inc(Counter::ShadowRqFailed);
    --mgr_.inFlight_;
    rqTimer_.cancel();
    if (handle_) {
      handle_->sink_ = nullptr;
      handle_ = nullptr;
    }
    if (stream_) {
      std::shared_ptr<H2UpstreamStream> s = std::move(stream_);
      s->cancel();
    }
    std::erase(mgr_.liveH2_, this);
    mgr_.deadH2_.push_back(this);
    worker_.timers().schedule(mgr_.reapTimer_, 0);
  }

  ShadowManager& mgr_;
  Worker& worker_;
  ShadowRequest rq_;
  bool https_;
  std::shared_ptr<H2UpstreamStream> stream_;
  ShadowStream* handle_ = nullptr;
  // Body that came before the stream could be submitted.
  std::string pending_;
  bool pendingEnd_ = false;
  bool ended_ = false;
  core::MemberTimer<ShadowH2, &ShadowH2::onRqTimer> rqTimer_{this};
};

// ------------------------------------------------------------------ stream

ShadowStream::~ShadowStream() {
  if (sink_) sink_->streamGone(finished_);
}

void ShadowStream::feed(std::string_view payload, bool last) {
  if (!sink_ || finished_) return;
  if (last) finished_ = true;
  sink_->feedBody(payload, last);
}

// ----------------------------------------------------------------- manager

ShadowManager::ShadowManager(Worker& worker, size_t maxInFlight, size_t maxUnsentBytes)
    : worker_(worker), maxInFlight_(maxInFlight), maxUnsentBytes_(maxUnsentBytes) {}

ShadowManager::~ShadowManager() {
  // Only at worker exit: whatever is still open (drain deadline, or idle in
  // the pool) is freed here; pending completions die with the ring, and no
  // connection calls an HTTP/2 mirror again.
  idle_.clear();
  while (live_) delete live_;  // the destructor unlinks it
  for (ShadowH2* m : liveH2_) delete m;
  for (ShadowH2* m : deadH2_) delete m;
}

void ShadowManager::reap() {
  std::vector<ShadowH2*> dead;
  dead.swap(deadH2_);
  for (ShadowH2* m : dead) delete m;
}

std::unique_ptr<ShadowStream> ShadowManager::start(const route::Endpoint& ep, ShadowRequest rq,
                                                   const route::UpstreamSettings& settings,
                                                   const std::shared_ptr<upstream::ClusterLimits>& limits) {
  // Past the cap, or draining (no new connection would be closed in time).
  if (inFlight_ >= maxInFlight_ || worker_.draining()) {
    worker_.stats().inc(Counter::ShadowRqShed);
    return nullptr;
  }
  using Protocol = route::UpstreamSettings::Protocol;
  if (settings.protocol == Protocol::Http2 || (settings.protocol == Protocol::ClientProtocol && rq.clientHttp2))
    return startH2(ep, std::move(rq), settings, limits);
  ShadowConn* conn = nullptr;
  if (auto it = idle_.find(ep.key); it != idle_.end()) {
    // The most recently used one made the way this cluster connects: least
    // likely timed out by the server.
    for (auto c = it->second.rbegin(); c != it->second.rend(); ++c) {
      if ((*c)->sameTransport(settings)) {
        conn = *c;
        break;
      }
    }
    if (conn) conn->unpark();
  }
  upstream::LimitToken token;
  if (!conn) {
    // A new connection needs a unit of the mirror cluster's maxConnections:
    // a mirror is best effort, so without one it is shed, never queued.
    auto t = upstream::acquire(limits, upstream::ClusterLimits::kConnections);
    if (!t) {
      limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
      worker_.stats().inc(Counter::ShadowRqShed);
      return nullptr;
    }
    token = std::move(*t);
  }
  worker_.stats().inc(Counter::ShadowRqTotal);
  bool fresh = false;
  if (!conn) {
    int fd = OutboundConnection::openSocket(settings);
    if (fd < 0) {
      if (limits) {
        token.reset();
        worker_.pool().slotFreed(limits);  // a request waiting for a slot hears of it
      }
      worker_.stats().inc(Counter::ShadowRqFailed);
      return std::unique_ptr<ShadowStream>(new ShadowStream(nullptr));
    }
    conn = new ShadowConn(*this, fd, ep, std::move(token), settings);
    fresh = true;
  }
  const bool hasBody = rq.hasBody;
  std::unique_ptr<ShadowStream> stream(new ShadowStream(conn));
  stream->finished_ = !hasBody;
  conn->begin(stream.get(), std::move(rq));
  if (fresh) conn->connect();
  return stream;
}

std::unique_ptr<ShadowStream> ShadowManager::startH2(const route::Endpoint& ep, ShadowRequest&& rq,
                                                     const route::UpstreamSettings& settings,
                                                     const std::shared_ptr<upstream::ClusterLimits>& limits) {
  EndpointState& state = worker_.endpointState(ep);
  H2UpstreamConn* conn = H2UpstreamConn::sideChannel(state, settings);
  bool fresh = false;
  if (!conn) {
    // As for HTTP/1.1: a new connection within maxConnections, or shed.
    auto slot = upstream::acquire(limits, upstream::ClusterLimits::kConnections);
    if (!slot) {
      limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
      worker_.stats().inc(Counter::ShadowRqShed);
      return nullptr;
    }
    const int fd = OutboundConnection::openSocket(settings);
    if (fd < 0) {
      if (limits) {
        slot->reset();
        worker_.pool().slotFreed(limits);
      }
      worker_.stats().inc(Counter::ShadowRqTotal);
      worker_.stats().inc(Counter::ShadowRqFailed);
      return std::unique_ptr<ShadowStream>(new ShadowStream(nullptr));
    }
    conn = new H2UpstreamConn(worker_, fd, ep, state, std::move(*slot), settings, /*forMirrors=*/true);
    fresh = true;
  }
  worker_.stats().inc(Counter::ShadowRqTotal);
  const bool hasBody = rq.hasBody;
  auto* m = new ShadowH2(*this, std::move(rq), settings.tls);
  std::unique_ptr<ShadowStream> stream(new ShadowStream(m));
  stream->finished_ = !hasBody;
  m->begin(*conn, stream.get());
  if (fresh) {
    conn->connect();
  } else if (conn->ready()) {
    m->onUpstreamConnected();
  }  // else onUpstreamConnected follows once the connection is up
  return stream;
}

void ShadowManager::drain() {
  std::vector<ShadowConn*> idle;
  for (auto& [key, conns] : idle_) idle.insert(idle.end(), conns.begin(), conns.end());
  for (ShadowConn* c : idle) c->retire();
}

}  // namespace sluice::proxy
