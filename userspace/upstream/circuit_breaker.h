// Connection-pool limits of a DestinationRule (trafficPolicy.connectionPool)
// as Envoy's circuit breakers enforce them under Istio: per cluster, across
// every worker. Counting is a relaxed atomic add on the request path; a limit
// reached is an overflow the caller answers with 503 UO at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "config/model.h"
#include "upstream/cluster_registry.h"

namespace sluice::upstream {

struct PoolLimits {
  static constexpr uint32_t kUnlimited = std::numeric_limits<uint32_t>::max();  // Istio's default
  uint32_t maxConnections = kUnlimited;     // tcp.maxConnections
  uint32_t maxPending = kUnlimited;         // http.http1MaxPendingRequests
  uint32_t maxRequests = kUnlimited;        // http.http2MaxRequests (HTTP/1 too)
  uint32_t maxRetries = kUnlimited;         // http.maxRetries
  uint32_t maxRequestsPerConnection = 0;    // 0: unlimited

  static PoolLimits from(const config::ConnectionPoolSettings& cp);
  bool operator==(const PoolLimits&) const = default;
};

class ClusterLimits {
 public:
  enum Kind { kConnections, kPending, kRequests, kRetries, kKinds };

  ClusterLimits(std::string name, PoolLimits limits) : name_(std::move(name)), limits_(limits) {}

  // Takes one unit of `k` unless that would pass its limit.
  bool tryAcquire(Kind k) {
    uint64_t now = inUse_[k].fetch_add(1, std::memory_order_relaxed) + 1;
    if (now <= limitOf(k)) return true;
    inUse_[k].fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void release(Kind k) { inUse_[k].fetch_sub(1, std::memory_order_relaxed); }
  uint64_t inUse(Kind k) const { return inUse_[k].load(std::memory_order_relaxed); }
  bool hasRoom(Kind k) const { return inUse(k) < limitOf(k); }

  const std::string& name() const { return name_; }
  const PoolLimits& limits() const { return limits_; }

  // Envoy's per-cluster overflow counters.
  std::atomic<uint64_t> cxOverflow{0};         // upstream_cx_overflow
  std::atomic<uint64_t> rqPendingOverflow{0};  // upstream_rq_pending_overflow
  std::atomic<uint64_t> rqRetryOverflow{0};    // upstream_rq_retry_overflow

  // Workers (bit = index % 64) with requests queued for a connection of
  // this cluster: a worker that gives a connection slot back wakes them.
  std::atomic<uint64_t> waitingWorkers{0};

 private:
  uint64_t limitOf(Kind k) const {
    switch (k) {
      case kConnections: return limits_.maxConnections;
      case kPending: return limits_.maxPending;
      case kRequests: return limits_.maxRequests;
      case kRetries: return limits_.maxRetries;
      default: return 0;
    }
  }
  std::string name_;
  PoolLimits limits_;
  std::atomic<uint64_t> inUse_[kKinds] = {};
};

// One unit of a ClusterLimits held for as long as the token lives.
class LimitToken {
 public:
  LimitToken() = default;
  LimitToken(std::shared_ptr<ClusterLimits> l, ClusterLimits::Kind k) : limits_(std::move(l)), kind_(k) {}
  LimitToken(LimitToken&& o) noexcept : limits_(std::move(o.limits_)), kind_(o.kind_) {}
  LimitToken& operator=(LimitToken&& o) noexcept {
    if (this != &o) {
      reset();
      limits_ = std::move(o.limits_);
      kind_ = o.kind_;
    }
    return *this;
  }
  LimitToken(const LimitToken&) = delete;
  LimitToken& operator=(const LimitToken&) = delete;
  ~LimitToken() { reset(); }
  void reset() {
    if (limits_) limits_->release(kind_);
    limits_.reset();
  }
  explicit operator bool() const { return limits_ != nullptr; }
  ClusterLimits* limits() const { return limits_.get(); }
  const std::shared_ptr<ClusterLimits>& shared() const { return limits_; }

 private:
  std::shared_ptr<ClusterLimits> limits_;
  ClusterLimits::Kind kind_ = ClusterLimits::kRequests;
};

// Acquires one unit of `k` from `l` (may be null: no limits, an empty token
// that still counts as success). nullopt: overflow.
inline std::optional<LimitToken> acquire(const std::shared_ptr<ClusterLimits>& l, ClusterLimits::Kind k) {
  if (!l) return LimitToken{};
  if (!l->tryAcquire(k)) return std::nullopt;
  return LimitToken{l, k};
}

class LimitsRegistry {
 public:
  // nullptr for clusters without connectionPool settings. A cluster whose
  // limits are unchanged keeps its counts across a reload (connections and
  // requests in flight still hold them).
  std::shared_ptr<const std::vector<std::shared_ptr<ClusterLimits>>> adopt(const route::Snapshot& snap);
  std::vector<std::shared_ptr<ClusterLimits>> live() const { return reg_.live(); }

 private:
  ClusterRegistry<ClusterLimits> reg_;
};

}  // namespace sluice::upstream
