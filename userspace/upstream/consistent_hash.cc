#include "upstream/consistent_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <string>

namespace sluice::upstream {

uint64_t hashKey(std::string_view key) { return XXH64(key.data(), key.size(), 0); }

HashRing HashRing::build(const std::vector<route::Endpoint>& endpoints, uint64_t minSize) {
  HashRing r;
  r.endpoints_ = endpoints.size();
  if (endpoints.empty()) return r;
  uint64_t totalWeight = 0;
  for (const auto& e : endpoints) totalWeight += std::max<uint32_t>(1, e.weight);
  // Points per unit of weight: enough for minSize in all, rounded up to a
  // power of two so that it rarely changes when one endpoint comes or goes;
  // then the endpoints that stay keep exactly their points, and only the
  // keys of the one that changed move.
  uint64_t perWeight = 1;
  while (perWeight * totalWeight < minSize) perWeight <<= 1;
  r.ring_.reserve(perWeight * totalWeight);
  std::string label;
  for (uint32_t i = 0; i < endpoints.size(); ++i) {
    uint64_t n = perWeight * std::max<uint32_t>(1, endpoints[i].weight);
    for (uint64_t k = 0; k < n; ++k) {
      label.assign(endpoints[i].key).append("_").append(std::to_string(k));
      r.ring_.emplace_back(hashKey(label), i);
    }
  }
  std::sort(r.ring_.begin(), r.ring_.end());
  return r;
}

int HashRing::pick(uint64_t hash, ExcludedFn excluded) const {
  if (ring_.empty()) return -1;
  auto it = std::lower_bound(ring_.begin(), ring_.end(), std::pair<uint64_t, uint32_t>{hash, 0});
  size_t at = it == ring_.end() ? 0 : size_t(it - ring_.begin());
  // Past an excluded endpoint to the next point that is not (Envoy walks on
  // the same way); bounded by the ring.
  for (size_t step = 0; step < ring_.size(); ++step) {
    uint32_t ep = ring_[(at + step) % ring_.size()].second;
    if (!excluded || !excluded(ep)) return int(ep);
  }
  return -1;
}

MaglevTable MaglevTable::build(const std::vector<route::Endpoint>& endpoints, uint64_t size) {
  MaglevTable t;
  t.endpoints_ = endpoints.size();
  if (endpoints.empty() || size == 0) return t;
  const uint64_t m = size;
  std::vector<uint64_t> offset(endpoints.size()), skip(endpoints.size()), next(endpoints.size(), 0);
  for (size_t i = 0; i < endpoints.size(); ++i) {
    uint64_t h = hashKey(endpoints[i].key);
    offset[i] = h % m;
    skip[i] = (XXH64(endpoints[i].key.data(), endpoints[i].key.size(), 1) % (m - 1)) + 1;
  }
  constexpr uint32_t kEmpty = ~0u;
  t.table_.assign(m, kEmpty);
  uint64_t filled = 0;
  // Endpoints take turns claiming their next preferred free slot; each turn
  // bounded by m tries, the whole fill by m slots.
  while (filled < m) {
    for (size_t i = 0; i < endpoints.size() && filled < m; ++i) {
      for (uint64_t tries = 0; tries < m; ++tries) {
        uint64_t slot = (offset[i] + next[i] * skip[i]) % m;
        ++next[i];
        if (t.table_[slot] == kEmpty) {
          t.table_[slot] = uint32_t(i);
          ++filled;
          break;
        }
      }
    }
  }
  return t;
}

int MaglevTable::pick(uint64_t hash, ExcludedFn excluded) const {
  if (table_.empty()) return -1;
  // An excluded endpoint: rehash, as Envoy does, a bounded number of times.
  uint64_t h = hash;
  for (int attempt = 0; attempt < 32; ++attempt) {
    uint32_t ep = table_[h % table_.size()];
    if (!excluded || !excluded(ep)) return int(ep);
    h = XXH64(&h, sizeof(h), uint64_t(attempt) + 1);
  }
  for (uint32_t i = 0; i < endpoints_; ++i)
    if (!excluded(i)) return int(i);
  return -1;
}

}  // namespace sluice::upstream
