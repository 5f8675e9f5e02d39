#include "proxy/shadow.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

#include "core/timer_wheel.h"
#include "http/parser.h"
#include "proxy/connection.h"
#include "proxy/outbound.h"
#include "proxy/engine.h"
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
class ShadowConn final : public OutboundConnection {
 public:
  // `connToken`: its unit of the mirror cluster's maxConnections (empty
  // when the cluster has no limit), given back when it closes.
  ShadowConn(ShadowManager& mgr, int fd, const route::Endpoint& ep, upstream::LimitToken connToken)
      : OutboundConnection(mgr.worker_, fd), mgr_(mgr), addr_(ep.sockaddr), key_(ep.key),
        connToken_(std::move(connToken)) {
    next_ = mgr_.live_;
    if (next_) next_->prev_ = this;
    mgr_.live_ = this;
  }
  // Public: the manager deletes the connections still alive when the worker
  // exits (the worker reaps the others through Connection).
  ~ShadowConn() override { detachAll(); }

  // `timeoutNs`: the mirror cluster's tcp.connectTimeout (0: Istio's 10 s).
  void connect(uint64_t timeoutNs) { connectTo(addr_, timeoutNs); }

  // Binds a new mirrored request; counted in the manager's inFlight_ until
  // endMirror().
  void begin(ShadowStream* stream, std::string&& head, bool hasBody, uint64_t timeoutNs) {
    stream_ = stream;
    active_ = true;
    ++mgr_.inFlight_;
    reqDone_ = !hasBody;
    // A response to HEAD has no body whatever its headers say.
    isHead_ = head.starts_with("HEAD ");
    respHeadDone_ = false;
    respBody_.reset({});
    timeoutNs_ = timeoutNs;
    worker_.timers().schedule(rqTimer_, timeoutNs_ ? timeoutNs_
                                                   : worker_.engine().options().streamIdleTimeoutNs);
    send(std::move(head));
  }

  void feedBody(std::string_view bytes, bool last) {
    if (!active_) return;
    touch();
    send(bytes);
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
  void streamGone(bool finished) {
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
    if (active_ || !timedOut) {
      fail();
    } else {
      close();
    }
  }

  void onConnected() override {
    if (!preConnect_.empty()) {
      write(std::move(preConnect_));
      preConnect_.clear();
    }
    startReading();
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
      stream_->conn_ = nullptr;
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

  void send(std::string&& bytes) {
    if (connected()) {
      write(std::move(bytes));
    } else if (preConnect_.empty()) {
      preConnect_ = std::move(bytes);
    } else {
      preConnect_.append(bytes);
    }
  }
  void send(std::string_view bytes) {
    if (connected()) {
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
  bool active_ = false;
  bool reqDone_ = false;
  bool isHead_ = false;
  bool respHeadDone_ = false;
  bool pooled_ = false;
};

// ------------------------------------------------------------------ stream

ShadowStream::~ShadowStream() {
  if (conn_) conn_->streamGone(finished_);
}

void ShadowStream::feed(std::string_view bytes, bool last) {
  if (!conn_ || finished_) return;
  if (last) finished_ = true;
  conn_->feedBody(bytes, last);
}

// ----------------------------------------------------------------- manager

ShadowManager::ShadowManager(Worker& worker, size_t maxInFlight, size_t maxUnsentBytes)
    : worker_(worker), maxInFlight_(maxInFlight), maxUnsentBytes_(maxUnsentBytes) {}

ShadowManager::~ShadowManager() {
  // Only at worker exit: whatever is still open (drain deadline, or idle in
  // the pool) is freed here; pending completions die with the ring.
  idle_.clear();
  while (live_) delete live_;  // the destructor unlinks it
}

std::unique_ptr<ShadowStream> ShadowManager::start(const route::Endpoint& ep, std::string head,
                                                   bool hasBody, uint64_t timeoutNs,
                                                   const route::UpstreamSettings& settings,
                                                   const std::shared_ptr<upstream::ClusterLimits>& limits) {
  if (inFlight_ >= maxInFlight_) {
    worker_.stats().inc(Counter::ShadowRqShed);
    return nullptr;
  }
  if (settings.tls || settings.protocol != route::UpstreamSettings::Protocol::Http1) {
    // Mirrors speak neither TLS nor HTTP/2 yet, and a cluster that wants
    // either never gets plaintext HTTP/1.1: the mirror is not made.
    worker_.stats().inc(Counter::ShadowRqShed);
    return nullptr;
  }
  ShadowConn* conn = nullptr;
  if (auto it = idle_.find(ep.key); it != idle_.end() && !it->second.empty()) {
    conn = it->second.back();  // the most recently used: least likely timed out by the server
    conn->unpark();
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
    conn = new ShadowConn(*this, fd, ep, std::move(token));
    fresh = true;
  }
  std::unique_ptr<ShadowStream> stream(new ShadowStream(conn));
  stream->finished_ = !hasBody;
  conn->begin(stream.get(), std::move(head), hasBody, timeoutNs);
  if (fresh) conn->connect(settings.connectTimeoutNs);
  return stream;
}

void ShadowManager::drain() {
  std::vector<ShadowConn*> idle;
  for (auto& [key, conns] : idle_) idle.insert(idle.end(), conns.begin(), conns.end());
  for (ShadowConn* c : idle) c->retire();
}

}  // namespace sluice::proxy
