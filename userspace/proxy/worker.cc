#include "proxy/worker.h"

#include "proxy/hello_sniffer.h"
#include "proxy/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "proxy/access_log.h"
#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/http_session.h"
#include "proxy/stream.h"

namespace sluice::proxy {

namespace {
constexpr unsigned kRingEntries = 1024;
// Buffers go back to the kernel as soon as their bytes are copied out, so
// only what arrives within one loop turn is held: 256 x 16 KiB (4 MiB of
// address space, touched lazily) covers bursts; a dry ring costs one re-arm
// (counted as recv_buffer_exhausted), not data.
constexpr unsigned kBufferCount = 256;
constexpr unsigned kBufferSize = 16384;
constexpr uint64_t kMaxWaitNs = 50'000'000;  // bounds reaction to stop and config swaps
// Accepting again after running out of descriptors or memory: first wait,
// and the cap it doubles to while the shortage lasts.
constexpr uint64_t kMinAcceptBackoffNs = 20'000'000;
constexpr uint64_t kMaxAcceptBackoffNs = 1'000'000'000;
constexpr uint64_t kAcceptErrorLogEveryNs = 10'000'000'000;  // a shortage that comes and goes logs this often
}  // namespace

// SO_REUSEPORT listener with one multishot accept; the kernel spreads
// connections over the workers' listeners.
class Worker::Listener final : public core::CompletionHandler {
 public:
  explicit Listener(Worker& w) : worker_(w) {}
  // A gateway listener: this worker's socket of `socks`, which the engine
  // opened and which close when the last worker lets go of them.
  Listener(Worker& w, std::shared_ptr<const ListenerSockets> socks)
      : worker_(w), shared_(std::move(socks)), fd_(shared_->fds.at(size_t(w.index()))),
        local_(shared_->addr), gatewayKey_(shared_->key) {}
  ~Listener() { closeFd(); }
  const ListenerSockets* sockets() const { return shared_.get(); }

  std::expected<void, std::string> bind(const sockaddr_in& addr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return std::unexpected(std::string("socket: ") + strerror(errno));
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0) {
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
      return std::unexpected(std::string("bind ") + ip + ":" + std::to_string(ntohs(addr.sin_port)) +
                             ": " + strerror(errno));
    }
    if (::listen(fd_, 4096) < 0) return std::unexpected(std::string("listen: ") + strerror(errno));
    local_ = addr;
    return {};
  }

  void arm() {
    if (armed_ || fd_ < 0) return;
    io_uring_sqe* s = worker_.ring().sqeFor(op_);
    io_uring_prep_multishot_accept(s, fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    armed_ = true;
  }

  // The VIP a captured connection was dialled to; false if it was not
  // captured (or no capture is configured).
  bool originalDst(int fd, const sockaddr_in& peer, sockaddr_in* orig) {
    const auto& lookup = worker_.engine().options().originalDst;
    if (!lookup) return false;
    sockaddr_in local = local_;
    if (local.sin_addr.s_addr == htonl(INADDR_ANY)) {
      socklen_t len = sizeof(local);
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
    }
    return lookup(peer, local, orig);
  }

  void stop() {
    if (fd_ < 0) return;
    // A gateway socket closes only when every worker has let go of it;
    // until then it would take connections into its backlog that nobody
    // accepts. Shut down, it leaves its SO_REUSEPORT group and refuses them.
    if (shared_) ::shutdown(fd_, SHUT_RD);
    backoff_.cancel();
    if (armed_) {
      io_uring_sqe* s = worker_.ring().sqe();
      io_uring_prep_cancel(s, &op_, 0);
      io_uring_sqe_set_data(s, nullptr);
    }
    stopped_ = true;
  }
  bool idle() const { return !armed_; }

  void onCompletion(uint8_t, int32_t res, uint32_t flags) override {
    if (!(flags & IORING_CQE_F_MORE)) armed_ = false;
    if (res < 0 && res != -ECANCELED && !stopped_) onAcceptError(-res);
    if (res >= 0) {
      backoffNs_ = 0;
      std::optional<ConnectionSlot> slot;
      if (!stopped_) slot = worker_.engine().admit();
      if (stopped_) {
        ::close(res);
      } else if (!slot) {
        // --max-connections: refused at once rather than left waiting.
        worker_.stats().inc(stats::Counter::DownstreamCxOverflow);
        ::close(res);
      } else {
        int one = 1;
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        sockaddr_in peer{};
        socklen_t len = sizeof(peer);
        getpeername(res, reinterpret_cast<sockaddr*>(&peer), &len);
        sockaddr_in orig{};
        // Gateway listeners serve clients that dialled them: nothing was captured.
        bool captured = !gatewayKey_ && originalDst(res, peer, &orig);
        // The kernel captures a new VIP only once its snapshot is published;
        // route with that snapshot even if this loop turn has not adopted it.
        if (captured) worker_.adoptSnapshotIfChanged();
        const auto& snap = worker_.snapshot();
        const route::TcpService* tcp =
            captured && snap ? snap->findTcp(orig.sin_addr.s_addr, ntohs(orig.sin_port)) : nullptr;
        if (tcp) {
          TcpProxy::start(worker_, res, peer, orig, snap, *tcp, std::move(*slot));
        } else {
          // This worker adopted the snapshot that opened the listener, so
          // it knows whether the listener speaks TLS: then the ClientHello
          // decides who takes the connection.
          const route::GatewayListener* gl = gatewayKey_ && snap ? snap->findGatewayListener(gatewayKey_) : nullptr;
          if (gl && gl->tcp()) {
            TcpProxy::startRoute(worker_, res, snap, *gl->tcpRoute, std::move(*slot), {});
          } else if (gl && gl->tls()) {
            (new HelloSniffer(worker_, res, peer, std::move(*slot), gatewayKey_))->start();
          } else {
            auto* c = new DownstreamConn(worker_, res, peer, captured ? &orig : nullptr, std::move(*slot),
                                         gatewayKey_);
            c->start();
          }
        }
      }
    }
    if (!armed_ && !stopped_ && !backoff_.armed()) arm();
    if (stopped_ && !armed_) closeFd();
  }

 private:
  // Out of descriptors or memory, accept fails at once for every waiting
  // connection, so re-arming straight away would spin a core. The listener
  // pauses instead (the connections wait in the listen backlog), twice as
  // long each time the shortage persists; other errors (a connection reset
  // before it was accepted) only count.
  void onAcceptError(int err) {
    worker_.stats().inc(stats::Counter::DownstreamCxAcceptError);
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return;
    const uint64_t now = worker_.clock().nowNs();
    if (lastLogNs_ == 0 || now - lastLogNs_ >= kAcceptErrorLogEveryNs) {
      lastLogNs_ = now;
      fprintf(stderr, "sluiced: worker %d: accept: %s; pausing new connections\n", worker_.index(),
              strerror(err));
    }
    backoffNs_ = backoffNs_ == 0 ? kMinAcceptBackoffNs : std::min(backoffNs_ * 2, kMaxAcceptBackoffNs);
    worker_.timers().schedule(backoff_, backoffNs_);
    if (armed_) {  // a multishot that survived its error: stop it for the pause
      io_uring_sqe* s = worker_.ring().sqe();
      io_uring_prep_cancel(s, &op_, 0);
      io_uring_sqe_set_data(s, nullptr);
    }
  }
  void onBackoffEnd() {
    if (!stopped_) arm();
  }

  void closeFd() {
    if (fd_ >= 0 && !shared_) ::close(fd_);
    fd_ = -1;
  }

  Worker& worker_;
  core::IoOp op_{this, 0};
  core::MemberTimer<Listener, &Listener::onBackoffEnd> backoff_{this};
  std::shared_ptr<const ListenerSockets> shared_;  // gateway listeners only
  int fd_ = -1;
  sockaddr_in local_{};
  uint64_t gatewayKey_ = 0;  // route::GatewayListener::key; 0: the outbound listener
  uint64_t backoffNs_ = 0;  // current pause; 0 while accepts succeed
  uint64_t lastLogNs_ = 0;
  bool armed_ = false;
  bool stopped_ = false;
};

// An eventfd read on the ring: other workers write it when they give back
// a connection slot of a cluster this worker has requests waiting for.
class Worker::Waker final : public core::CompletionHandler {
 public:
  explicit Waker(Worker& w) : worker_(w) {}
  ~Waker() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::expected<void, std::string> open() {
    fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd_ < 0) return std::unexpected(std::string("eventfd: ") + strerror(errno));
    return {};
  }
  void arm() {
    io_uring_sqe* s = worker_.ring().sqeFor(op_);
    io_uring_prep_read(s, fd_, &value_, sizeof(value_), 0);
  }
  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof(one));
  }

 private:
  void onCompletion(uint8_t, int32_t res, uint32_t) override {
    if (res == -ECANCELED) return;
    arm();
    worker_.pool().onWake();
  }

  Worker& worker_;
  core::IoOp op_{this, 0};
  int fd_ = -1;
  uint64_t value_ = 0;
};

void Worker::wake() { waker_->wake(); }

Worker::Worker(Engine& engine, int index)
    : engine_(engine), index_(index), timers_(clock_),
      rng_(clock_.nowNs() ^ (uint64_t(index + 1) * 0x9e3779b97f4a7c15ull)),
      clusters_(clock_, rng_), shadows_(*this) {}

Worker::~Worker() {
  // Connections still alive at exit (drain timeout) are force-closed and
  // their memory freed; pending completions die with the ring.
  for (Connection* c : downstreams_) delete c;
  downstreams_.clear();
  for (auto& [key, st] : endpoints_) {
    for (UpstreamConn* c : st.idle) delete c;
    st.idle.clear();
  }
}

AccessLog* Worker::accessLog() { return engine_.accessLog(); }

std::expected<void, std::string> Worker::init(const sockaddr_in& listenAddr) {
  listener_ = std::make_unique<Listener>(*this);
  if (auto r = listener_->bind(listenAddr); !r) return r;
  if (const auto& redis = engine_.options().redis) redis_ = std::make_unique<RedisClient>(*this, *redis);
  waker_ = std::make_unique<Waker>(*this);
  return waker_->open();
}

void Worker::addDownstream(Connection* c) { downstreams_.push_back(c); }

void Worker::removeDownstream(Connection* c) {
  auto it = std::find(downstreams_.begin(), downstreams_.end(), c);
  if (it != downstreams_.end()) {
    *it = downstreams_.back();
    downstreams_.pop_back();
  }
}

EndpointState& Worker::endpointState(const route::Endpoint& ep) {
  auto it = endpoints_.find(ep.key);
  if (it != endpoints_.end()) return it->second;
  std::lock_guard lock(endpointsMu_);
  return endpoints_[ep.key];
}

void Worker::collectActive(std::unordered_map<std::string, uint64_t>& out) const {
  std::lock_guard lock(endpointsMu_);
  for (const auto& [key, st] : endpoints_) out[key] += st.active.load(std::memory_order_relaxed);
}

int Worker::pickEndpoint(const route::Cluster& cluster, const upstream::PickContext& ctx) {
  auto active = [&](size_t i) { return endpointState(cluster.endpoints[i]).active.load(std::memory_order_relaxed); };
  return clusters_.pick(cluster, active, ctx);
}

int Worker::pickEndpointForConnection(const route::Cluster& cluster) {
  const auto& kernel = engine_.options().kernelActiveConnections;
  if (!kernel || cluster.lb != route::LbPolicy::LeastRequest) return pickEndpoint(cluster);
  auto active = [&](size_t i) -> uint32_t {
    if (auto n = kernel(cluster.endpoints[i].sockaddr)) return *n;
    return endpointState(cluster.endpoints[i]).active.load(std::memory_order_relaxed);
  };
  return clusters_.pick(cluster, active);
}

void Worker::adoptSnapshotIfChanged() {
  uint64_t v = engine_.publishedVersion();
  if (v == snapshotVersion_) return;
  snapshotVersion_ = v;
  Published p = engine_.published();
  snapshot_ = std::move(p.snapshot);
  if (snapshot_) clusters_.adopt(*snapshot_, std::move(p.health), std::move(p.limits));
  if (running_ && !draining_) reconcileListeners(p.gatewaySockets);
}

// Gateway listeners follow the published set: new sockets start accepting,
// those no longer published stop (and are freed once their accept is
// cancelled). Connections already accepted are not touched.
void Worker::reconcileListeners(const std::vector<std::shared_ptr<const ListenerSockets>>& socks) {
  std::map<uint64_t, std::unique_ptr<Listener>> next;
  for (const auto& sock : socks) {
    auto it = gatewayListeners_.find(sock->key);
    if (it != gatewayListeners_.end() && it->second->sockets() == sock.get()) {
      next.emplace(sock->key, std::move(it->second));
      gatewayListeners_.erase(it);
      continue;
    }
    auto l = std::make_unique<Listener>(*this, sock);
    l->arm();
    next.emplace(sock->key, std::move(l));
  }
  for (auto& [key, l] : gatewayListeners_) retireListener(std::move(l));
  gatewayListeners_ = std::move(next);
}

void Worker::retireListener(std::unique_ptr<Listener> l) {
  l->stop();
  retiredListeners_.push_back(std::move(l));
}

bool Worker::listenersIdle() const {
  if (!listener_->idle() || !retiredListeners_.empty()) return false;
  for (const auto& [key, l] : gatewayListeners_) {
    if (!l->idle()) return false;
  }
  return true;
}

void Worker::beginDrain() {
  draining_ = true;
  drainDeadlineNs_ = clock_.nowNs() + engine_.options().drainTimeoutNs;
  listener_->stop();
  for (auto& [key, l] : gatewayListeners_) l->stop();
  // Copy: drain() may close and unregister connections.
  std::vector<Connection*> conns = downstreams_;
  for (Connection* c : conns) c->drain();
  for (auto& [key, st] : endpoints_) {
    std::vector<UpstreamConn*> idle = st.idle;
    for (UpstreamConn* c : idle) c->close();
    std::vector<H2UpstreamConn*> h2 = st.h2;  // retiring unregisters
    for (H2UpstreamConn* c : h2) c->retireWhenIdle();
  }
  shadows_.drain();
}

// Overloaded: idle client connections and pooled upstream connections go,
// so their buffers do.
void Worker::shedIdle() {
  std::vector<Connection*> conns = downstreams_;  // a close unregisters
  for (Connection* c : conns) c->shedIfIdle();
  for (auto& [key, st] : endpoints_) {
    std::vector<UpstreamConn*> idle = st.idle;
    for (UpstreamConn* c : idle) c->retire();
    std::vector<H2UpstreamConn*> h2 = st.h2;
    for (H2UpstreamConn* c : h2) c->retireWhenIdle(/*onlyIfIdle=*/true);
  }
}

void Worker::flushWrites() {
  // Index loop: a flush never queues another, but keep it safe anyway.
  for (size_t i = 0; i < flushQueue_.size(); ++i) flushQueue_[i]->flush();
  flushQueue_.clear();
}

void Worker::deleteLater(std::unique_ptr<Stream> s) { deadStreams_.push_back(std::move(s)); }

void Worker::reap() {
  while (!graveyard_.empty()) {
    std::vector<Connection*> dead;
    dead.swap(graveyard_);
    for (Connection* c : dead) {
      c->onDestroy();
      delete c;
    }
  }
  deadStreams_.clear();
}

void Worker::flushLog() {
  if (logBuf_.empty()) return;
  if (AccessLog* log = engine_.accessLog()) log->write(logBuf_);
  logBuf_.clear();
}

void Worker::run() {
  if (auto r = ring_.init(kRingEntries); !r) {
    fprintf(stderr, "sluiced: worker %d: %s\n", index_, r.error().c_str());
    return;
  }
  if (auto r = buffers_.init(ring_, 1, kBufferCount, kBufferSize); !r) {
    fprintf(stderr, "sluiced: worker %d: %s\n", index_, r.error().c_str());
    return;
  }
  running_ = true;
  adoptSnapshotIfChanged();
  listener_->arm();
  waker_->arm();
  for (;;) {
    ring_.submitAndWait(timers_.nextTimeoutNs(kMaxWaitNs));
    stats_.inc(stats::Counter::LoopIterations);
    ring_.drain([](core::IoOp* op, int32_t res, uint32_t flags) {
      if (op && op->owner) op->owner->onCompletion(op->kind, res, flags);
    });
    timers_.advance();
    flushWrites();  // before reap: queued connections are still alive
    reap();
    std::erase_if(retiredListeners_, [](const std::unique_ptr<Listener>& l) { return l->idle(); });
    flushLog();
    adoptSnapshotIfChanged();
    if (uint64_t e = engine_.shedEpoch(); e != shedSeen_) {
      shedSeen_ = e;
      shedIdle();
    }
    if (engine_.stopping() && !draining_) {
      beginDrain();
      flushWrites();
    }
    if (draining_) {
      // In-flight mirrors may finish (each is bounded by its own timer and
      // all by the drain deadline); idle mirror connections were closed.
      if (downstreams_.empty() && shadows_.inFlight() == 0 && listenersIdle()) break;
      if (clock_.nowNs() > drainDeadlineNs_) break;
    }
  }
  if (redis_) redis_->shutdown();
  rls_.shutdown();
  // Let cancellations settle so fds close cleanly.
  for (int i = 0; i < 3; ++i) {
    ring_.submitAndWait(1'000'000);
    ring_.drain([](core::IoOp* op, int32_t res, uint32_t flags) {
      if (op && op->owner) op->owner->onCompletion(op->kind, res, flags);
    });
    flushWrites();
    reap();
  }
  flushLog();
}

}  // namespace sluice::proxy
