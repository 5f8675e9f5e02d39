#include "proxy/engine.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/access_log.h"
#include "proxy/worker.h"

#include <chrono>

#include "core/clock.h"

namespace sluice::proxy {

Engine::Engine(EngineOptions opts) : opts_(std::move(opts)) {}

Engine::~Engine() {
  stop();
  join();
}

std::expected<void, std::string> Engine::start() {
  if (!opts_.accessLogPath.empty()) {
    std::string err;
    accessLog_ = AccessLog::open(opts_.accessLogPath, &err);
    if (!accessLog_) return std::unexpected(err);
  }
  int n = opts_.workers > 0 ? opts_.workers : 1;
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>(*this, i);
    if (auto r = w->init(opts_.outbound); !r) return std::unexpected(r.error());
    registry_.add(&w->stats());
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) threads_.emplace_back([wp = w.get()] { wp->run(); });
  // Ejections are immediate (made by the worker that sees the failure);
  // returns are this thread's job. 20 ms bounds how late past its interval
  // a host comes back.
  sweeper_ = std::thread([this] {
    core::SteadyClock clock;
    for (uint64_t tick = 0; !stopping(); ++tick) {
      health_.sweep(clock.nowNs());
      if (opts_.maxHeapBytes && tick % 5 == 0) sampleHeap();
      if (uint64_t at = trimAtNs_.load(std::memory_order_relaxed); at && clock.nowNs() >= at &&
          trimAtNs_.compare_exchange_strong(at, 0, std::memory_order_relaxed)) {
        // The snapshot a publish replaced is freed by now (workers adopt
        // the new one within 50 ms): give its pages back to the kernel, or
        // RSS keeps the high-water mark of two snapshots at once.
        malloc_trim(0);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  return {};
}

// malloc's bytes in use (small blocks and mmapped ones): what the daemon
// itself holds, which RSS would blur with freed pages not yet returned.
void Engine::sampleHeap() {
  struct mallinfo2 mi = mallinfo2();
  const bool over = mi.uordblks + mi.hblkhd > opts_.maxHeapBytes;
  overloaded_.store(over, std::memory_order_relaxed);
  if (over) shedEpoch_.fetch_add(1, std::memory_order_relaxed);
}

ListenerSockets::~ListenerSockets() {
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
}

namespace {

std::string addrText(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

// One SO_REUSEPORT listening socket per worker on `addr`.
std::expected<std::shared_ptr<ListenerSockets>, std::string> openListener(uint64_t key, const sockaddr_in& addr,
                                                                         int workers) {
  auto out = std::make_shared<ListenerSockets>();
  out->key = key;
  out->addr = addr;
  for (int i = 0; i < workers; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(std::string("socket: ") + strerror(errno));
    out->fds.push_back(fd);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0)
      return std::unexpected(std::string("bind: ") + strerror(errno));
    if (::listen(fd, 4096) < 0) return std::unexpected(std::string("listen: ") + strerror(errno));
  }
  return out;
}

}  // namespace

std::vector<std::shared_ptr<const ListenerSockets>> Engine::reconcileGatewayListeners(const route::Snapshot* s) {
  std::vector<std::shared_ptr<const ListenerSockets>> open;
  std::map<uint64_t, std::shared_ptr<const ListenerSockets>> keep;
  std::map<uint64_t, GatewayListenerStatus> status;
  std::map<uint64_t, GatewayListenerStatus> before;
  {
    std::lock_guard lock(snapMu_);
    before = gatewayStatus_;
  }
  const int workers = opts_.workers > 0 ? opts_.workers : 1;
  static const std::vector<std::unique_ptr<route::GatewayListener>> kNone;
  for (const auto& l : s ? s->gatewayListeners : kNone) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = l->bindBe;
    const uint64_t port = uint64_t(l->port) + opts_.gatewayPortOffset;
    addr.sin_port = htons(uint16_t(port));
    GatewayListenerStatus& st = status[l->key];
    st.address = addrText(addr);
    auto servers = [&] {
      std::string out;
      for (const std::string& srv : l->servers) out += (out.empty() ? "" : "; ") + srv;
      return out;
    };
    const bool anyAddr = addr.sin_addr.s_addr == htonl(INADDR_ANY) || opts_.outbound.sin_addr.s_addr == htonl(INADDR_ANY);
    if (port == 0 || port > 65535) {
      st.address = std::to_string(port);
      st.error = "port " + std::to_string(l->port) + " + --gateway-port-offset " +
                 std::to_string(opts_.gatewayPortOffset) + " is not a TCP port";
    } else if (addr.sin_port == opts_.outbound.sin_port &&
               (anyAddr || addr.sin_addr.s_addr == opts_.outbound.sin_addr.s_addr)) {
      // SO_REUSEPORT would let both bind and split connections between them.
      st.error = "the outbound listener's address";
    } else if (auto it = gatewaySockets_.find(l->key);
               it != gatewaySockets_.end() && it->second->addr.sin_addr.s_addr == addr.sin_addr.s_addr &&
               it->second->addr.sin_port == addr.sin_port) {
      keep.emplace(l->key, it->second);
      open.push_back(it->second);
      continue;
    } else if (auto made = openListener(l->key, addr, workers)) {
      fprintf(stderr, "sluiced: gateway listener %s open (%s)\n", st.address.c_str(), servers().c_str());
      keep.emplace(l->key, *made);
      open.push_back(std::move(*made));
      continue;
    } else {
      st.error = made.error();
    }
    // Said once, not at every publish while it lasts.
    if (auto was = before.find(l->key); was == before.end() || was->second.error != st.error)
      fprintf(stderr, "sluiced: gateway listener %s (%s) not served: %s\n", st.address.c_str(),
              servers().c_str(), st.error.c_str());
  }
  for (const auto& [key, socks] : gatewaySockets_) {
    if (!keep.contains(key)) fprintf(stderr, "sluiced: gateway listener %s closed\n", addrText(socks->addr).c_str());
  }
  gatewaySockets_ = std::move(keep);
  {
    std::lock_guard lock(snapMu_);
    gatewayStatus_ = std::move(status);
  }
  return open;
}

std::map<uint64_t, GatewayListenerStatus> Engine::gatewayListenerStatus() const {
  std::lock_guard lock(snapMu_);
  return gatewayStatus_;
}

void Engine::publish(std::shared_ptr<const route::Snapshot> s) {
  Published p;
  if (s) {
    p.health = health_.adopt(*s, opts_.onEjection);
    p.limits = limits_.adopt(*s);
  }
  p.gatewaySockets = reconcileGatewayListeners(s.get());
  p.snapshot = std::move(s);
  {
    std::lock_guard lock(snapMu_);
    published_ = std::move(p);
  }
  version_.fetch_add(1, std::memory_order_acq_rel);
  trimAtNs_.store(core::SteadyClock().nowNs() + kTrimAfterPublishNs, std::memory_order_relaxed);
}

Published Engine::published() const {
  std::lock_guard lock(snapMu_);
  return published_;
}

std::optional<ConnectionSlot> Engine::admit() {
  uint64_t now = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (opts_.maxConnections && now > opts_.maxConnections) {
    connections_.fetch_sub(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  return ConnectionSlot(&connections_);
}

void Engine::wakeWorker(int index) {
  if (index >= 0 && size_t(index) < workers_.size()) workers_[size_t(index)]->wake();
}

void Engine::join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  if (sweeper_.joinable()) sweeper_.join();
  // Workers (and their stats shards) stay until the engine is destroyed:
  // the admin thread may still read them.
}

std::unordered_map<std::string, uint64_t> Engine::activeRequests() const {
  std::unordered_map<std::string, uint64_t> out;
  for (const auto& w : workers_) w->collectActive(out);
  return out;
}

}  // namespace sluice::proxy
