#include "upstream/load_balancer.h"

namespace sluice::upstream {

namespace {

// A few random draws before falling back to a scan: keeps the choice uniform
// when a handful of hosts are excluded, and bounded when most are.
constexpr int kRandomTries = 3;

}  // namespace

LoadBalancer::LoadBalancer(uint64_t seed) : state_(seed) {}

uint64_t LoadBalancer::next() {
  // splitmix64: full period, passes BigCrush, one add and three multiplies.
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t LoadBalancer::below(uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

int LoadBalancer::pick(const route::Cluster& cluster, ActiveFn active, ExcludedFn excluded) {
  if (cluster.endpoints.empty()) return -1;
  switch (cluster.lb) {
    case route::LbPolicy::RoundRobin: return pickRoundRobin(cluster, excluded);
    case route::LbPolicy::Random: return pickRandom(cluster, excluded);
    case route::LbPolicy::LeastRequest:
    case route::LbPolicy::Passthrough:  // only reached without an original destination
      return pickLeastRequest(cluster, active, excluded);
    // Consistent hashing without a key (no such header, say): any host, as
    // Envoy picks one at random then.
    case route::LbPolicy::RingHash:
    case route::LbPolicy::Maglev: return pickRandom(cluster, excluded);
  }
  return -1;
}

int LoadBalancer::randomIndex(const route::Cluster& c, ExcludedFn excluded, int skip) {
  const size_t n = c.endpoints.size();
  const size_t pool = skip >= 0 ? n - 1 : n;
  if (pool == 0) return -1;
  auto ok = [&](size_t i) { return static_cast<int>(i) != skip && !(excluded && excluded(i)); };
  for (int t = 0; t < kRandomTries; ++t) {
    size_t i = below(pool);
    if (skip >= 0 && i >= static_cast<size_t>(skip)) ++i;  // uniform over the others
    if (ok(i)) return static_cast<int>(i);
  }
  size_t start = below(n);
  for (size_t k = 0; k < n; ++k) {
    size_t i = (start + k) % n;
    if (ok(i)) return static_cast<int>(i);
  }
  return -1;
}

int LoadBalancer::weightedRandomIndex(const route::Cluster& c, ExcludedFn excluded, int skip) {
  uint64_t total = 0;
  const size_t n = c.endpoints.size();
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int>(i) != skip && !(excluded && excluded(i))) total += c.endpoints[i].weight;
  }
  if (total == 0) return -1;
  uint64_t r = below(total);
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int>(i) == skip || (excluded && excluded(i))) continue;
    if (r < c.endpoints[i].weight) return static_cast<int>(i);
    r -= c.endpoints[i].weight;
  }
  return -1;
}

int LoadBalancer::pickRandom(const route::Cluster& c, ExcludedFn excluded) {
  return c.unequalWeights ? weightedRandomIndex(c, excluded, -1) : randomIndex(c, excluded, -1);
}

int LoadBalancer::pickRoundRobin(const route::Cluster& c, ExcludedFn excluded) {
  RoundRobinState& st = rr_[c.name];
  const size_t n = c.endpoints.size();
  if (!c.unequalWeights) {
    for (size_t k = 0; k < n; ++k) {
      size_t i = st.cursor++ % n;
      if (!(excluded && excluded(i))) return static_cast<int>(i);
    }
    return -1;
  }
  // Smooth weighted round robin: every pick raises each candidate by its
  // weight and lowers the winner by the total, which spreads a 5:1:1 cluster
  // as a a b a c a a rather than a a a a a b c.
  if (st.current.size() != n) st.current.assign(n, 0);
  int64_t total = 0;
  int best = -1;
  for (size_t i = 0; i < n; ++i) {
    if (excluded && excluded(i)) continue;
    st.current[i] += c.endpoints[i].weight;
    total += c.endpoints[i].weight;
    if (best < 0 || st.current[i] > st.current[best]) best = static_cast<int>(i);
  }
  if (best >= 0) st.current[best] -= total;
  return best;
}

// Power of two choices (Envoy's default choice_count of 2): two distinct
// random endpoints, the one with fewer active requests wins, ties go to the
// first draw. With unequal weights the draws are weight-proportional and the
// winner is the one with fewer active requests per unit of weight. That is a
// sampled stand-in for Envoy's weighted least request (an EDF scheduler over
// weight / (active + 1)): idle endpoints tie, so traffic follows the weights,
// and under load the active counts are pushed towards the weight ratio.
int LoadBalancer::pickLeastRequest(const route::Cluster& c, ActiveFn active, ExcludedFn excluded) {
  if (!c.unequalWeights) {
    int a = randomIndex(c, excluded, -1);
    if (a < 0) return -1;
    int b = randomIndex(c, excluded, a);
    if (b < 0 || !active) return a;
    return active(static_cast<size_t>(b)) < active(static_cast<size_t>(a)) ? b : a;
  }
  int a = weightedRandomIndex(c, excluded, -1);
  if (a < 0) return -1;
  int b = weightedRandomIndex(c, excluded, a);
  if (b < 0 || !active) return a;
  // active_b / weight_b < active_a / weight_a, without division.
  uint64_t lhs = uint64_t{active(static_cast<size_t>(b))} * c.endpoints[a].weight;
  uint64_t rhs = uint64_t{active(static_cast<size_t>(a))} * c.endpoints[b].weight;
  return lhs < rhs ? b : a;
}

}  // namespace sluice::upstream
