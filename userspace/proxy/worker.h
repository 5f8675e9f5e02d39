// One worker thread: its io_uring, provided buffers, timer wheel, listeners
// (SO_REUSEPORT: the outbound one and the gateway listeners), upstream connection pools and stats shard. Nothing here is
// touched by another thread except through Engine's atomics and the stats
// shard's relaxed counters.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/ring.h"
#include "core/timer_wheel.h"
#include "proxy/conn_pool.h"
#include "proxy/redis_client.h"
#include "proxy/rls_client.h"
#include "proxy/shadow.h"
#include "route/table.h"
#include "stats/stats.h"
#include "upstream/cluster_manager.h"

namespace sluice::tls {
class ResumptionSlot;
}  // namespace sluice::tls

namespace sluice::proxy {

class Connection;
class Engine;
struct ListenerSockets;
class UpstreamConn;
class H2UpstreamConn;
class AccessLog;
struct Stream;

// Per-worker view of one endpoint (keyed by "address:port", so it survives
// config reloads): active requests for LEAST_REQUEST and idle keep-alive
// connections.
struct EndpointState {
  // Written only by the owning worker; relaxed atomic so /clusters can read
  // it from the admin thread without a lock on the request path.
  std::atomic<uint32_t> active{0};
  std::vector<UpstreamConn*> idle;
  // HTTP/2 connections that may take more streams (h2_upstream.h).
  std::vector<H2UpstreamConn*> h2;
  // The TLS session this endpoint last gave (DestinationRule tls), offered
  // on the next connection made with the same client context only: another
  // cluster's (other CA, SANs) or a rotated one starts afresh, since a
  // resumed session skips certificate verification.
  std::shared_ptr<tls::ResumptionSlot> tlsSession;
  const void* tlsSessionContext = nullptr;
  void incActive() { active.store(active.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  void decActive() { active.store(active.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed); }
};

class Worker {
 public:
  Worker(Engine& engine, int index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  std::expected<void, std::string> init(const sockaddr_in& listenAddr);
  // Runs the event loop until the engine stops and every connection is gone.
  void run();

  core::Ring& ring() { return ring_; }
  core::BufferRing& buffers() { return buffers_; }
  core::TimerWheel& timers() { return timers_; }
  const core::Clock& clock() const { return clock_; }
  core::Rng& rng() { return rng_; }
  stats::StatsShard& stats() { return stats_; }
  Engine& engine() { return engine_; }
  int index() const { return index_; }
  AccessLog* accessLog();
  // Buffers an access-log line; flushed once per event-loop turn.
  void logLine(std::string_view line) { logBuf_.append(line); }
  bool draining() const { return draining_; }
  // Traffic mirroring: this worker's mirrored requests and their connections.
  ShadowManager& shadows() { return shadows_; }
  // Requests waiting for an upstream connection on this worker.
  ConnPool& pool() { return pool_; }
  // Global rate limiting's counters (--redis); null without one.
  RedisClient* redis() { return redis_.get(); }
  // Global rate limiting's calls to a rate limit service (gRPC).
  RlsClient& rls() { return rls_; }
  // Runs pool().onWake() on this worker's thread soon; callable from any
  // thread (an eventfd the ring reads).
  void wake();

  // The snapshot new requests route with; in-flight requests keep theirs.
  const std::shared_ptr<const route::Snapshot>& snapshot() const { return snapshot_; }

  void destroyLater(Connection* c) { graveyard_.push_back(c); }
  // A finished request's stream, freed at the end of this loop turn: the
  // code that finished it may still be on the stack.
  void deleteLater(std::unique_ptr<Stream> s);
  // Connections with bytes to send; flushed once per loop turn.
  void flushLater(Connection* c) { flushQueue_.push_back(c); }
  void noteBufferExhaustion() { stats_.inc(stats::Counter::RecvBufferExhausted); }

  EndpointState& endpointState(const route::Endpoint& ep);
  void collectActive(std::unordered_map<std::string, uint64_t>& out) const;
  // Picks an endpoint of `cluster` for one request (upstream::ClusterManager
  // holds the rules), weighing the requests in flight on this worker; -1
  // when no endpoint is left.
  int pickEndpoint(const route::Cluster& cluster, const upstream::PickContext& ctx = {});
  // For one L4 connection: like pickEndpoint, but LEAST_REQUEST weighs the
  // kernel's count of open connections per endpoint when the engine has it.
  int pickEndpointForConnection(const route::Cluster& cluster);
  upstream::ClusterManager& clusters() { return clusters_; }
  // Connection registry, for draining and shutdown.
  void addDownstream(Connection* c);
  void removeDownstream(Connection* c);

 private:
  class Listener;
  class Waker;
  void adoptSnapshotIfChanged();
  void reconcileListeners(const std::vector<std::shared_ptr<const ListenerSockets>>& socks);
  void retireListener(std::unique_ptr<Listener> l);
  bool listenersIdle() const;
  void beginDrain();
  void shedIdle();
  uint64_t shedSeen_ = 0;
  void reap();
  void flushLog();
  void flushWrites();

  Engine& engine_;
  int index_;
  core::SteadyClock clock_;
  core::Ring ring_;
  core::BufferRing buffers_;
  core::TimerWheel timers_;
  core::Rng rng_;
  stats::StatsShard stats_;
  std::unique_ptr<Listener> listener_;  // the outbound (capture) listener
  std::map<uint64_t, std::unique_ptr<Listener>> gatewayListeners_;  // by route::GatewayListener::key
  std::vector<std::unique_ptr<Listener>> retiredListeners_;         // stopped, accept not yet cancelled
  bool running_ = false;  // the ring is up: listeners can be armed
  std::unique_ptr<Waker> waker_;
  ConnPool pool_{*this};
  std::shared_ptr<const route::Snapshot> snapshot_;
  uint64_t snapshotVersion_ = 0;
  // Inserted into only by this worker, under endpointsMu_ so the admin
  // thread can iterate it; lookups on the request path take no lock.
  std::unordered_map<std::string, EndpointState> endpoints_;
  mutable std::mutex endpointsMu_;
  upstream::ClusterManager clusters_;
  std::vector<Connection*> graveyard_;
  std::vector<std::unique_ptr<Stream>> deadStreams_;
  std::vector<Connection*> flushQueue_;
  std::vector<Connection*> downstreams_;
  std::string logBuf_;
  bool draining_ = false;
  uint64_t drainDeadlineNs_ = 0;
  std::unique_ptr<RedisClient> redis_;
  RlsClient rls_{*this};
  // Last: destroyed first, while the ring and timer wheel its connections
  // use still exist.
  ShadowManager shadows_;
};

}  // namespace sluice::proxy
