// Outlier detection (DestinationRule trafficPolicy.outlierDetection), as
// Envoy enforces it under Istio: consecutive 5xx / gateway / local-origin
// failures eject a host at once; every `interval` hosts whose ejection
// (baseEjectionTime x times ejected, capped at 300 s) has run out return.
// maxEjectionPercent caps how many are out (one may always go), and below
// minHealthPercent healthy hosts the balancer ignores ejections (panic).
//
// One ClusterHealth per cluster, shared by every worker: request outcomes
// are relaxed atomic updates; only an ejection takes a (per-cluster) lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/model.h"
#include "upstream/cluster_registry.h"
#include "route/table.h"

namespace sluice::upstream {

struct OutlierConfig {
  uint32_t consecutive5xx = 5;          // 0: off
  uint32_t consecutiveGateway = 0;      // 0: off
  uint32_t consecutiveLocalOrigin = 5;  // only with splitLocalOrigin
  bool splitLocalOrigin = false;
  uint64_t intervalNs = 10'000'000'000ull;
  uint64_t baseEjectionNs = 30'000'000'000ull;
  uint32_t maxEjectionPercent = 10;
  uint32_t minHealthPercent = 0;

  // Istio's defaults for the fields the spec leaves out.
  static OutlierConfig from(const config::OutlierDetection& od);
  bool operator==(const OutlierConfig&) const = default;
};

enum class Outcome {
  Success,
  Error5xx,            // a 5xx that is not a gateway error
  GatewayError,        // 502, 503, 504 from the upstream
  LocalOriginFailure,  // connect failure or timeout, reset before a response
};
// What an upstream's response status counts as.
Outcome outcomeOf(int status);

class ClusterHealth {
 public:
  // Called on every ejection (true) and return (false), from the thread that
  // decided it: a worker for ejections, the sweeper for returns.
  using Hook = std::function<void(const route::Endpoint&, bool ejected)>;

  ClusterHealth(std::string name, OutlierConfig cfg, std::vector<route::Endpoint> endpoints);
  ClusterHealth(const ClusterHealth&) = delete;
  ClusterHealth& operator=(const ClusterHealth&) = delete;

  void setHook(Hook h) { hook_ = std::move(h); }  // before sharing

  // Any thread: the outcome of one request (or connection) to endpoint `ep`.
  void report(size_t ep, Outcome o, uint64_t nowNs);
  // Whether the balancer must pass `ep` over now (never in panic).
  bool skip(size_t ep) const;
  // The sweeper, often: hosts whose ejection ran out return, at most once
  // per interval.
  void sweep(uint64_t nowNs);

  struct EndpointView {
    bool ejected = false;
    uint32_t ejections = 0;
    uint64_t ejectedUntilNs = 0;
  };
  EndpointView view(size_t ep) const;
  uint32_t ejectedNow() const { return ejected_.load(std::memory_order_relaxed); }
  uint64_t ejectionsTotal() const { return ejectionsTotal_.load(std::memory_order_relaxed); }
  bool panic() const;
  const std::string& name() const { return name_; }
  const OutlierConfig& config() const { return cfg_; }
  const std::vector<route::Endpoint>& endpoints() const { return endpoints_; }

 private:
  struct Ep {
    std::atomic<uint32_t> consecutive5xx{0};
    std::atomic<uint32_t> consecutiveGateway{0};
    std::atomic<uint32_t> consecutiveLocal{0};
    std::atomic<bool> ejected{false};
    std::atomic<uint32_t> ejections{0};
    std::atomic<uint64_t> until{0};
  };
  void eject(size_t ep, uint64_t nowNs);

  std::string name_;
  OutlierConfig cfg_;
  std::vector<route::Endpoint> endpoints_;
  std::unique_ptr<Ep[]> eps_;
  std::atomic<uint32_t> ejected_{0};
  std::atomic<uint64_t> ejectionsTotal_{0};
  uint64_t nextSweepNs_ = 0;  // sweeper thread only
  std::mutex ejectMu_;
  Hook hook_;
};

// The ClusterHealth of every cluster that has outlier detection, across
// configuration versions.
class HealthRegistry {
 public:
  // Indexed by Cluster::index; nullptr where the cluster has none. A cluster
  // whose name, endpoints and settings are unchanged keeps its state (and
  // its ejections) across a reload.
  std::shared_ptr<const std::vector<std::shared_ptr<ClusterHealth>>> adopt(
      const route::Snapshot& snap, const ClusterHealth::Hook& hook);
  void sweep(uint64_t nowNs);
  std::vector<std::shared_ptr<ClusterHealth>> live() const { return reg_.live(); }

 private:
  ClusterRegistry<ClusterHealth> reg_;
};

}  // namespace sluice::upstream
