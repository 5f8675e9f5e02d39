// One worker's view of the clusters of the snapshot it routes with: every
// rule that turns "this request goes to cluster C" into one endpoint of C –
// the cluster's policy (upstream/load_balancer.h), consistent hashing (ring
// or Maglev, built on first use and kept while the endpoint set stays),
// retryIgnorePreviousHosts, outlier ejection and panic, and warmup of
// endpoints added to a running cluster – plus the cluster's shared outlier
// state and circuit breakers. Worker thread only; no locks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "upstream/consistent_hash.h"
#include "upstream/load_balancer.h"
#include "upstream/outlier.h"

namespace sluice::upstream {

using HealthTable = std::vector<std::shared_ptr<ClusterHealth>>;
using LimitsTable = std::vector<std::shared_ptr<ClusterLimits>>;

// What one pick knows about the request it is for.
struct PickContext {
  // The consistent-hash key, when the request has one (null: chance).
  const uint64_t* hashKey = nullptr;
  // A retry that avoids hosts already tried: the last one (-1: none) and
  // all of them (endpoints 0..63, one bit each).
  int avoid = -1;
  uint64_t tried = 0;
};

class ClusterManager {
 public:
  ClusterManager(const core::Clock& clock, core::Rng& rng);

  // The snapshot a worker now routes with, with the outlier and
  // circuit-breaker tables published beside it: state of clusters that are
  // gone is dropped, endpoints new to a known warming cluster start warming.
  void adopt(const route::Snapshot& snapshot, std::shared_ptr<const HealthTable> health,
             std::shared_ptr<const LimitsTable> limits);

  // An endpoint of `cluster` (an index into its endpoints), or -1 when
  // every one is ejected and the cluster is not in panic. `active(i)`:
  // requests (or connections) in flight to endpoint i.
  int pick(const route::Cluster& cluster, ActiveFn active, const PickContext& ctx = {});

  // The outlier state of `cluster`, or null (none configured, or the
  // cluster belongs to a snapshot this worker no longer routes with).
  std::shared_ptr<ClusterHealth> healthFor(const route::Cluster& cluster) const;
  // The connection-pool limits of `cluster`, or null (same rules).
  std::shared_ptr<ClusterLimits> limitsFor(const route::Cluster& cluster) const;

 private:
  // The ring or Maglev table of a hashing cluster.
  struct HashTables {
    std::vector<std::string> keys;  // the endpoint set it was built for
    std::unique_ptr<HashRing> ring;
    std::unique_ptr<MaglevTable> maglev;
  };
  const HashTables& hashTables(const route::Cluster& cluster);
  int pickOnce(const route::Cluster& cluster, ActiveFn active, const PickContext& ctx, ClusterHealth* health);
  // Share (0..1] of its normal traffic endpoint i of `cluster` may take now.
  double warmupFactor(const route::Cluster& cluster, size_t i) const;

  const core::Clock& clock_;
  core::Rng& rng_;
  LoadBalancer lb_;
  std::shared_ptr<const HealthTable> health_;
  std::shared_ptr<const LimitsTable> limits_;
  std::unordered_map<std::string, HashTables> hashTables_;  // by cluster name
  // Warmup: when this worker first saw each endpoint of each warming
  // cluster (0: there from the cluster's start, already warm).
  std::unordered_map<std::string, std::unordered_map<std::string, uint64_t>> firstSeen_;
};

}  // namespace sluice::upstream
