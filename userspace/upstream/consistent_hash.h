// Consistent hashing for DestinationRule consistentHash: a ring (ringHash,
// Envoy's ring_hash: each endpoint owns points in proportion to its weight,
// a key goes to the first point at or after its hash) and a Maglev table
// (a fixed-size lookup table filled from per-endpoint permutations). Adding
// or removing one of N endpoints moves about 1/N of the keys with either.
// Built once per cluster and endpoint set, read-only afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "route/table.h"
#include "upstream/load_balancer.h"

namespace sluice::upstream {

uint64_t hashKey(std::string_view key);

class HashRing {
 public:
  // At least `minSize` points, a power of two per unit of weight (so the set
  // of points of an endpoint rarely depends on the others).
  static HashRing build(const std::vector<route::Endpoint>& endpoints, uint64_t minSize);
  // The endpoint for `hash`, walking on past excluded ones; -1 if all are.
  int pick(uint64_t hash, ExcludedFn excluded = {}) const;
  size_t size() const { return ring_.size(); }

 private:
  std::vector<std::pair<uint64_t, uint32_t>> ring_;  // (point, endpoint), sorted
  size_t endpoints_ = 0;
};

class MaglevTable {
 public:
  // `size` should be prime (65537, Istio's default).
  static MaglevTable build(const std::vector<route::Endpoint>& endpoints, uint64_t size);
  int pick(uint64_t hash, ExcludedFn excluded = {}) const;
  size_t size() const { return table_.size(); }

 private:
  std::vector<uint32_t> table_;
  size_t endpoints_ = 0;
};

}  // namespace sluice::upstream
