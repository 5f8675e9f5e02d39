// Per-worker endpoint selection for one compiled cluster.
//
// Each worker owns one LoadBalancer (no locks, no sharing); it keeps a
// round-robin cursor per cluster, keyed by the cluster's name so it survives
// a configuration swap. The caller supplies what the balancer must know about
// endpoints it does not own: active requests on this worker (least request)
// and exclusion (outlier-ejected hosts, the previous attempt's host).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "route/table.h"

namespace sluice::upstream {

// Non-owning reference to a callable: the cost of one indirect call, no
// allocation (std::function may allocate and is heavier on every request).
// The referenced callable must outlive the call it is passed to.
template <class Sig>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  FunctionRef() = default;
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): lambdas convert implicitly
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(a...); }) {}
  R operator()(Args... a) const { return call_(obj_, a...); }
  explicit operator bool() const { return call_ != nullptr; }

 private:
  void* obj_ = nullptr;
  R (*call_)(void*, Args...) = nullptr;
};

using ActiveFn = FunctionRef<uint32_t(size_t)>;
using ExcludedFn = FunctionRef<bool(size_t)>;

class LoadBalancer {
 public:
  explicit LoadBalancer(uint64_t seed);

  // Index into cluster.endpoints, or -1 when the cluster has no endpoint that
  // is not excluded. `active(i)`: requests in flight to endpoint i on this
  // worker. `excluded(i)`: endpoint i must not be chosen (an empty ref
  // excludes nothing). Choosing anyway when all are excluded (Envoy's panic
  // mode) is the caller's decision.
  int pick(const route::Cluster& cluster, ActiveFn active, ExcludedFn excluded = {});

  // Uniform 64-bit value from this worker's generator (splitmix64), for
  // Route::pick and anything else on the worker that needs chance.
  uint64_t next();
  // Uniform in [0, n); n > 0.
  uint64_t below(uint64_t n);

  // Drops the round-robin state of clusters that are no longer configured.
  template <class IsLive>
  void retainClusters(IsLive&& isLive) {
    std::erase_if(rr_, [&](const auto& kv) { return !isLive(kv.first); });
  }

 private:
  struct RoundRobinState {
    uint64_t cursor = 0;
    std::vector<int64_t> current;  // smooth weighted round robin, per endpoint
  };

  int pickRoundRobin(const route::Cluster& c, ExcludedFn excluded);
  int pickRandom(const route::Cluster& c, ExcludedFn excluded);
  int pickLeastRequest(const route::Cluster& c, ActiveFn active, ExcludedFn excluded);
  int randomIndex(const route::Cluster& c, ExcludedFn excluded, int skip);
  int weightedRandomIndex(const route::Cluster& c, ExcludedFn excluded, int skip);

  uint64_t state_;
  std::unordered_map<std::string, RoundRobinState> rr_;
};

}  // namespace sluice::upstream
