// Traffic mirroring (VirtualService `mirror`, `mirrors`): fire-and-forget
// copies of a request sent to another cluster. The mirror's response is read
// and thrown away; its latency or failure never reaches the primary request.
//
// Memory stays bounded however slow the mirror is: each worker caps the
// mirrored requests it has in flight (past the cap a mirror is shed and
// counted), and a mirror whose unsent bytes pass a per-request cap is
// abandoned (counted as retry_or_shadow_abandoned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "route/table.h"
#include "upstream/circuit_breaker.h"

namespace sluice::proxy {

class Worker;
class ShadowConn;

// The primary request's handle on one mirrored copy while the request body
// still flows. Destroying it before `feed(..., true)` abandons the mirror
// (the primary's client went away mid-body); after, the mirror finishes on
// its own.
class ShadowStream {
 public:
  ~ShadowStream();
  ShadowStream(const ShadowStream&) = delete;
  ShadowStream& operator=(const ShadowStream&) = delete;

  // Request body bytes exactly as forwarded to the primary (framing
  // included). `last`: the request is complete.
  void feed(std::string_view bytes, bool last);
  // The mirror connection is gone (failed, abandoned or done).
  bool dead() const { return conn_ == nullptr; }

 private:
  friend class ShadowConn;
  friend class ShadowManager;
  explicit ShadowStream(ShadowConn* conn) : conn_(conn) {}
  ShadowConn* conn_;
  bool finished_ = false;
};

class ShadowManager {
 public:
  // `maxInFlight`: mirrored requests this worker may have in flight;
  // `maxUnsentBytes`: what one mirror may hold unsent before it is abandoned.
  ShadowManager(Worker& worker, size_t maxInFlight = 1024, size_t maxUnsentBytes = 1 << 20);
  ~ShadowManager();

  // Starts a mirrored request to `ep`: `head` is the complete request head
  // (already carrying the "-shadow" authority). `timeoutNs`: the longest the
  // mirror may take end to end (0: the engine's stream idle timeout bounds
  // it instead). `settings` and `limits`: the mirror cluster's connection
  // settings (connectTimeout, tcpKeepalive) and circuit breakers (null:
  // none); a new connection takes a unit of its maxConnections. Returns
  // null when shed (too many mirrors in flight, or no connection slot).
  // Without a body the stream comes back finished, and dropping it at once
  // is fine.
  std::unique_ptr<ShadowStream> start(const route::Endpoint& ep, std::string head, bool hasBody,
                                      uint64_t timeoutNs, const route::UpstreamSettings& settings = {},
                                      const std::shared_ptr<upstream::ClusterLimits>& limits = nullptr);
  size_t inFlight() const { return inFlight_; }
  // The worker began draining: idle pooled mirror connections close now
  // (and, the worker draining, finished mirrors no longer enter the pool).
  void drain();

 private:
  friend class ShadowConn;
  Worker& worker_;
  size_t maxInFlight_;
  size_t maxUnsentBytes_;
  size_t inFlight_ = 0;
  // Every live ShadowConn (intrusive list), deleted with the manager when
  // the worker exits; and the idle keep-alive ones by endpoint key.
  ShadowConn* live_ = nullptr;
  std::unordered_map<std::string, std::vector<ShadowConn*>> idle_;
};

}  // namespace sluice::proxy
