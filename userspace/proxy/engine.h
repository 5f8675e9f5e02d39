// The L7 engine: N workers, the current route snapshot, graceful drain.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "route/table.h"
#include "stats/stats.h"
#include "upstream/circuit_breaker.h"
#include "upstream/cluster_manager.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

class Worker;
class AccessLog;
class L4Splicer;

struct EngineOptions {
  sockaddr_in outbound{};
  int workers = 1;
  std::string accessLogPath;  // "" = none, "-" = stdout
  uint64_t drainTimeoutNs = 10'000'000'000ull;
  uint64_t connectTimeoutNs = 10'000'000'000ull;  // Istio's default connectTimeout
  uint64_t idleTimeoutNs = 3600'000'000'000ull;   // Istio's default idle timeout
  // A request head must be complete this long after its first byte, or the
  // connection gets 408 and is closed (Envoy's request_headers_timeout). 0:
  // no limit. On by default here: a node proxy serves every pod on the
  // node, and one pod trickling heads (slowloris) must not hold its
  // descriptors and memory for the hour the idle timeout allows.
  uint64_t requestHeadersTimeoutNs = 10'000'000'000ull;
  // A TLS handshake on a gateway HTTPS server must end this long after the
  // connection is accepted, or it is closed (ssl.handshake_timeout).
  uint64_t tlsHandshakeTimeoutNs = 10'000'000'000ull;
  // Client connections (HTTP and TCP routes, all workers) open at once;
  // past it a new one is closed as soon as it is accepted (Envoy's
  // global_downstream_max_connections, counted as downstream_cx_overflow).
  // 0: no limit. The daemon derives it from RLIMIT_NOFILE.
  uint64_t maxConnections = 0;
  // Heap in use (malloc's, sampled every 100 ms) past which the daemon is
  // overloaded: new requests get 503 (flag OM, x-envoy-overloaded) and
  // idle connections are closed, as Envoy's overload manager does with a
  // heap monitor. 0: no limit.
  uint64_t maxHeapBytes = 0;
  // No bytes moving either way on an active request for this long ends it
  // (Envoy's stream_idle_timeout, 5 minutes by default).
  uint64_t streamIdleTimeoutNs = 300'000'000'000ull;
  // With eBPF capture: the address a captured connection was dialled to,
  // from its client and local ends (as accepted). Called once per accepted
  // connection on the worker thread; must be thread-safe. Unset, or false:
  // not captured, and the Host/URI port decides.
  std::function<bool(const sockaddr_in& client, const sockaddr_in& local, sockaddr_in* orig)>
      originalDst;
  // With eBPF: hands L4 (TCP route) connections to the kernel's splice.
  // Unset: the worker relays their bytes itself. Must outlive the engine.
  L4Splicer* l4Splicer = nullptr;
  // Outlier detection ejected (true) or returned (false) an endpoint; from a
  // worker or the sweeper thread. Optional (the daemon mirrors it into the
  // kernel's endpoint map).
  upstream::ClusterHealth::Hook onEjection;
  // With eBPF: connections open right now to an endpoint, as the kernel
  // counts them for every socket in the attached cgroup (this proxy's on all
  // workers, and anyone else's). LEAST_REQUEST of TCP routes balances on it;
  // nullopt (not seen) falls back to this worker's own count. Thread-safe.
  std::function<std::optional<uint32_t>(const sockaddr_in&)> kernelActiveConnections;
  // Gateway listeners (route::GatewayListener): the address a server
  // without `bind` listens on, the offset added to every server port (tests
  // and unprivileged runs), and --gateway-labels (which Gateways are served;
  // unset: all of them).
  in_addr gatewayBind{};  // INADDR_ANY
  uint32_t gatewayPortOffset = 0;
  std::optional<std::map<std::string, std::string>> gatewayLabels;
  // --redis: where global rate limits count (route/global_rate_limit.h).
  // Unset: they cannot decide, and act on failure_mode_deny.
  std::optional<sockaddr_in> redis;
};

// The listening sockets of one gateway listener, one per worker
// (SO_REUSEPORT), opened by the engine when a snapshot first asks for the
// listener and closed when the last worker has let go of them.
struct ListenerSockets {
  uint64_t key = 0;  // route::GatewayListener::key
  sockaddr_in addr{};
  std::vector<int> fds;  // by worker index
  ListenerSockets() = default;
  ListenerSockets(const ListenerSockets&) = delete;
  ListenerSockets& operator=(const ListenerSockets&) = delete;
  ~ListenerSockets();
};

// Whether a gateway listener of the published snapshot is open.
struct GatewayListenerStatus {
  std::string address;  // "0.0.0.0:18080"
  std::string error;    // empty when listening
};


// What workers route with, published together: the snapshot and the shared
// per-cluster state of its clusters (by Cluster::index).
struct Published {
  std::shared_ptr<const route::Snapshot> snapshot;
  std::shared_ptr<const upstream::HealthTable> health;
  std::shared_ptr<const upstream::LimitsTable> limits;
  // The open sockets of the snapshot's gateway listeners (those that could
  // not be opened are left out).
  std::vector<std::shared_ptr<const ListenerSockets>> gatewaySockets;
};

// One admitted client connection, counted against maxConnections for as
// long as it lives.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  explicit ConnectionSlot(std::atomic<uint64_t>* count) : count_(count) {}
  ConnectionSlot(ConnectionSlot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  ConnectionSlot& operator=(ConnectionSlot&& o) noexcept {
    if (this != &o) {
      reset();
      count_ = std::exchange(o.count_, nullptr);
    }
    return *this;
  }
  ~ConnectionSlot() { reset(); }
  void reset() {
    if (count_) count_->fetch_sub(1, std::memory_order_relaxed);
    count_ = nullptr;
  }

 private:
  std::atomic<uint64_t>* count_ = nullptr;
};

class Engine {
 public:
  // A slot for a newly accepted client connection; nullopt past
  // maxConnections. Thread-safe.
  std::optional<ConnectionSlot> admit();
  // --max-heap: over the limit at the last sample; and a counter that moves
  // at every sample taken while over it (workers shed idle connections
  // each time it moves).
  bool overloaded() const { return overloaded_.load(std::memory_order_relaxed); }
  uint64_t shedEpoch() const { return shedEpoch_.load(std::memory_order_relaxed); }

  explicit Engine(EngineOptions opts);
  ~Engine();

  // Binds every worker's listener and starts the threads.
  std::expected<void, std::string> start();
  // Makes `s` the snapshot for new requests on every worker.
  void publish(std::shared_ptr<const route::Snapshot> s);
  Published published() const;
  // Asks worker `index` to look at its waiting requests (see ConnPool).
  // Thread-safe; out-of-range indexes are ignored.
  void wakeWorker(int index);
  // Every cluster with outlier detection / connection-pool limits, for
  // /clusters and metrics.
  std::vector<std::shared_ptr<upstream::ClusterHealth>> outlierClusters() const { return health_.live(); }
  std::vector<std::shared_ptr<upstream::ClusterLimits>> limitedClusters() const { return limits_.live(); }
  uint64_t publishedVersion() const { return version_.load(std::memory_order_acquire); }
  // By route::GatewayListener::key, for the published snapshot.
  std::map<uint64_t, GatewayListenerStatus> gatewayListenerStatus() const;

  // Stop accepting, let in-flight requests finish (up to drainTimeout), exit.
  void stop() { stopping_.store(true, std::memory_order_release); }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  void join();

  const EngineOptions& options() const { return opts_; }
  stats::Registry& stats() { return registry_; }
  AccessLog* accessLog() { return accessLog_.get(); }
  // For /clusters: requests in flight per endpoint ("address:port"),
  // summed over workers.
  std::unordered_map<std::string, uint64_t> activeRequests() const;

 private:
  EngineOptions opts_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  mutable std::mutex snapMu_;
  Published published_;
  // Opens (or keeps) the sockets of `s`'s gateway listeners; on the
  // publishing thread.
  std::vector<std::shared_ptr<const ListenerSockets>> reconcileGatewayListeners(const route::Snapshot* s);
  std::map<uint64_t, std::shared_ptr<const ListenerSockets>> gatewaySockets_;  // publish() only
  std::map<uint64_t, GatewayListenerStatus> gatewayStatus_;                    // under snapMu_
  std::atomic<uint64_t> version_{0};
  std::atomic<uint64_t> connections_{0};
  void sampleHeap();
  std::atomic<bool> overloaded_{false};
  // When the sweeper returns freed memory to the kernel after a publish (0:
  // nothing to do); long enough after it for every worker to have let the
  // old snapshot go.
  static constexpr uint64_t kTrimAfterPublishNs = 250'000'000;
  std::atomic<uint64_t> trimAtNs_{0};
  std::atomic<uint64_t> shedEpoch_{0};
  upstream::HealthRegistry health_;
  upstream::LimitsRegistry limits_;
  std::thread sweeper_;  // returns ejected hosts every outlier interval
  std::atomic<bool> stopping_{false};
  stats::Registry registry_;
  std::unique_ptr<AccessLog> accessLog_;
};

}  // namespace sluice::proxy
