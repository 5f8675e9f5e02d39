#include "upstream/cluster_manager.h"

#include <algorithm>

namespace sluice::upstream {

namespace {
// retryIgnorePreviousHosts: like Envoy's previous-hosts predicate, a pick
// that lands on a host this request already tried is made again, this many
// times at most.
constexpr int kHostSelectionRetries = 5;

bool triedBefore(uint64_t tried, int i) { return i >= 0 && i < 64 && (tried >> i) & 1; }
}  // namespace

ClusterManager::ClusterManager(const core::Clock& clock, core::Rng& rng)
    : clock_(clock), rng_(rng), lb_(rng.next()) {}

void ClusterManager::adopt(const route::Snapshot& snapshot, std::shared_ptr<const HealthTable> health,
                           std::shared_ptr<const LimitsTable> limits) {
  health_ = std::move(health);
  limits_ = std::move(limits);
  auto live = [&](const std::string& name) { return snapshot.findCluster(name) != nullptr; };
  lb_.retainClusters(live);
  std::erase_if(hashTables_, [&](const auto& kv) { return !live(kv.first); });
  // Endpoints of a cluster this worker already routed with, seen for the
  // first time now, start warming; a cluster new to this worker starts warm
  // (Envoy slows down added hosts, not a whole new cluster).
  std::unordered_map<std::string, std::unordered_map<std::string, uint64_t>> next;
  const uint64_t now = clock_.nowNs();
  for (const auto& c : snapshot.clusters) {
    if (!c->warmupNs) continue;
    auto old = firstSeen_.find(c->name);
    auto& seen = next[c->name];
    for (const auto& ep : c->endpoints) {
      uint64_t t = 0;
      if (old != firstSeen_.end()) {
        auto it = old->second.find(ep.key);
        t = it != old->second.end() ? it->second : now;
      }
      seen[ep.key] = t;
    }
  }
  firstSeen_ = std::move(next);
}

int ClusterManager::pick(const route::Cluster& cluster, ActiveFn active, const PickContext& ctx) {
  std::shared_ptr<ClusterHealth> h = healthFor(cluster);
  int idx = pickOnce(cluster, active, ctx, h.get());
  if (ctx.avoid >= 0) {
    for (int k = 0; k < kHostSelectionRetries && idx >= 0 && triedBefore(ctx.tried, idx); ++k)
      idx = pickOnce(cluster, active, ctx, h.get());
  }
  return idx;
}

int ClusterManager::pickOnce(const route::Cluster& cluster, ActiveFn active, const PickContext& ctx,
                             ClusterHealth* health) {
  const int avoid = ctx.avoid;
  if (ctx.hashKey && cluster.hash && !cluster.endpoints.empty()) {
    const HashTables& t = hashTables(cluster);
    auto excluded = [&](size_t i) {
      return (int(i) == avoid && cluster.endpoints.size() > 1) || (health && health->skip(i));
    };
    int idx = t.ring ? t.ring->pick(*ctx.hashKey, excluded) : t.maglev->pick(*ctx.hashKey, excluded);
    if (idx >= 0) return idx;
  }
  if (avoid >= 0 && cluster.endpoints.size() > 1) {
    // A retry prefers another host (Istio's retryIgnorePreviousHosts default).
    auto excluded = [&](size_t i) { return int(i) == avoid || (health && health->skip(i)); };
    int idx = lb_.pick(cluster, active, excluded);
    if (idx >= 0) return idx;
  }
  int idx;
  if (health) {
    auto ejected = [&](size_t i) { return health->skip(i); };
    idx = lb_.pick(cluster, active, ejected);
  } else {
    idx = lb_.pick(cluster, active);
  }
  // Warmup: a warming endpoint keeps its pick with probability = its share
  // now; otherwise the choice is made again without it (once).
  if (idx >= 0 && cluster.warmupNs) {
    double f = warmupFactor(cluster, size_t(idx));
    if (f < 1.0 && double(rng_.below(1'000'000)) >= f * 1'000'000) {
      auto notIt = [&](size_t i) { return int(i) == idx || (health && health->skip(i)); };
      int other = lb_.pick(cluster, active, notIt);
      if (other >= 0) idx = other;
    }
  }
  return idx;
}

const ClusterManager::HashTables& ClusterManager::hashTables(const route::Cluster& cluster) {
  HashTables& t = hashTables_[cluster.name];
  bool same = t.keys.size() == cluster.endpoints.size();
  for (size_t i = 0; same && i < t.keys.size(); ++i) same = t.keys[i] == cluster.endpoints[i].key;
  if (same && (t.ring || t.maglev)) return t;
  t.keys.clear();
  for (const auto& ep : cluster.endpoints) t.keys.push_back(ep.key);
  t.ring.reset();
  t.maglev.reset();
  if (cluster.lb == route::LbPolicy::Maglev) {
    t.maglev = std::make_unique<MaglevTable>(MaglevTable::build(cluster.endpoints, cluster.hash->maglevSize));
  } else {
    t.ring = std::make_unique<HashRing>(HashRing::build(cluster.endpoints, cluster.hash->ringSize));
  }
  return t;
}

double ClusterManager::warmupFactor(const route::Cluster& cluster, size_t i) const {
  if (!cluster.warmupNs) return 1.0;
  auto c = firstSeen_.find(cluster.name);
  if (c == firstSeen_.end()) return 1.0;
  auto e = c->second.find(cluster.endpoints[i].key);
  if (e == c->second.end() || e->second == 0) return 1.0;
  uint64_t age = clock_.nowNs() - e->second;
  if (age >= cluster.warmupNs) return 1.0;
  return std::max(0.1, double(age) / double(cluster.warmupNs));
}

std::shared_ptr<ClusterLimits> ClusterManager::limitsFor(const route::Cluster& cluster) const {
  if (!limits_ || cluster.index >= limits_->size()) return nullptr;
  const auto& l = (*limits_)[cluster.index];
  if (!l || l->name() != cluster.name) return nullptr;
  return l;
}

std::shared_ptr<ClusterHealth> ClusterManager::healthFor(const route::Cluster& cluster) const {
  if (!health_ || cluster.index >= health_->size()) return nullptr;
  const auto& h = (*health_)[cluster.index];
  // Index i of an older snapshot may be another cluster in this table.
  if (!h || h->name() != cluster.name || h->endpoints().size() != cluster.endpoints.size()) return nullptr;
  return h;
}

}  // namespace sluice::upstream
