#include "upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace sluice::upstream {
namespace {

route::Cluster makeCluster(std::string name, route::LbPolicy policy, std::vector<uint32_t> weights) {
  route::Cluster c;
  c.name = std::move(name);
  c.lb = policy;
  for (size_t i = 0; i < weights.size(); ++i) {
    route::Endpoint ep;
    ep.address = "10.0.0." + std::to_string(i + 1);
    ep.port = 80;
    ep.weight = weights[i];
    ep.key = ep.address + ":80";
    c.endpoints.push_back(ep);
    if (weights[i] != weights[0]) c.unequalWeights = true;
  }
  return c;
}

auto idle = [](size_t) -> uint32_t { return 0; };

TEST(LoadBalancerPick, EmptyClusterPicksNothing) {
  LoadBalancer lb(1);
  for (auto p : {route::LbPolicy::RoundRobin, route::LbPolicy::Random, route::LbPolicy::LeastRequest}) {
    route::Cluster c = makeCluster("empty", p, {});
    EXPECT_EQ(lb.pick(c, idle), -1);
  }
}

TEST(LoadBalancerPick, RoundRobinIsEvenAndInOrder) {
  LoadBalancer lb(1);
  route::Cluster c = makeCluster("rr", route::LbPolicy::RoundRobin, {1, 1, 1, 1});
  std::vector<int> counts(4);
  int prev = -1;
  for (int i = 0; i < 4000; ++i) {
    int p = lb.pick(c, idle);
    ASSERT_GE(p, 0);
    if (prev >= 0) {
      EXPECT_EQ(p, (prev + 1) % 4);
    }
    prev = p;
    counts[size_t(p)]++;
  }
  for (int n : counts) EXPECT_EQ(n, 1000);
}

TEST(LoadBalancerPick, RoundRobinCursorIsPerCluster) {
  LoadBalancer lb(1);
  route::Cluster a = makeCluster("a", route::LbPolicy::RoundRobin, {1, 1, 1});
  route::Cluster b = makeCluster("b", route::LbPolicy::RoundRobin, {1, 1, 1});
  EXPECT_EQ(lb.pick(a, idle), 0);
  EXPECT_EQ(lb.pick(a, idle), 1);
  EXPECT_EQ(lb.pick(b, idle), 0);  // b's cursor did not move with a's
  EXPECT_EQ(lb.pick(a, idle), 2);
  lb.retainClusters([](const std::string& name) { return name == "b"; });
  EXPECT_EQ(lb.pick(a, idle), 0);  // a's state was dropped
  EXPECT_EQ(lb.pick(b, idle), 1);
}

TEST(LoadBalancerPick, RoundRobinSkipsExcluded) {
  LoadBalancer lb(1);
  route::Cluster c = makeCluster("rr", route::LbPolicy::RoundRobin, {1, 1, 1});
  auto no1 = [](size_t i) { return i == 1; };
  std::vector<int> counts(3);
  for (int i = 0; i < 300; ++i) counts[size_t(lb.pick(c, idle, no1))]++;
  EXPECT_EQ(counts[1], 0);
  EXPECT_NEAR(counts[0], 150, 1);
  EXPECT_NEAR(counts[2], 150, 1);
  EXPECT_EQ(lb.pick(c, idle, [](size_t) { return true; }), -1);
}

TEST(LoadBalancerPick, WeightedRoundRobinIsSmoothAndProportional) {
  LoadBalancer lb(1);
  route::Cluster c = makeCluster("wrr", route::LbPolicy::RoundRobin, {5, 1, 1});
  std::vector<int> seq;
  for (int i = 0; i < 7; ++i) seq.push_back(lb.pick(c, idle));
  // Exactly 5:1:1 per cycle of 7, and the heavy host never runs 5 in a row.
  EXPECT_EQ(std::count(seq.begin(), seq.end(), 0), 5);
  EXPECT_EQ(std::count(seq.begin(), seq.end(), 1), 1);
  EXPECT_EQ(std::count(seq.begin(), seq.end(), 2), 1);
  int run = 0, longest = 0;
  for (int p : seq) {
    run = p == 0 ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  EXPECT_LT(longest, 5);
}

TEST(LoadBalancerPick, RandomIsUniform) {
  LoadBalancer lb(42);
  route::Cluster c = makeCluster("rnd", route::LbPolicy::Random, {1, 1, 1, 1, 1});
  constexpr int kPicks = 100000;
  std::vector<int> counts(5);
  for (int i = 0; i < kPicks; ++i) counts[size_t(lb.pick(c, idle))]++;
  // Each share 20% +- 1 point (standard deviation ~0.13 point).
  for (int n : counts) EXPECT_NEAR(100.0 * n / kPicks, 20.0, 1.0);
}

TEST(LoadBalancerPick, RandomFollowsWeightsAndSkipsExcluded) {
  LoadBalancer lb(7);
  route::Cluster c = makeCluster("wrnd", route::LbPolicy::Random, {3, 1, 6});
  constexpr int kPicks = 100000;
  std::vector<int> counts(3);
  for (int i = 0; i < kPicks; ++i) counts[size_t(lb.pick(c, idle))]++;
  EXPECT_NEAR(100.0 * counts[0] / kPicks, 30.0, 1.0);
  EXPECT_NEAR(100.0 * counts[1] / kPicks, 10.0, 1.0);
  EXPECT_NEAR(100.0 * counts[2] / kPicks, 60.0, 1.0);

  route::Cluster u = makeCluster("urnd", route::LbPolicy::Random, {1, 1, 1, 1});
  auto onlyLast = [](size_t i) { return i != 3; };
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lb.pick(u, idle, onlyLast), 3);
}

TEST(LoadBalancerPick, SameSeedSameChoices) {
  route::Cluster c = makeCluster("rnd", route::LbPolicy::Random, {1, 1, 1, 1, 1, 1, 1, 1});
  LoadBalancer a(99), b(99), other(100);
  int differs = 0;
  for (int i = 0; i < 64; ++i) {
    int pa = a.pick(c, idle);
    EXPECT_EQ(pa, b.pick(c, idle));
    differs += pa != other.pick(c, idle);
  }
  EXPECT_GT(differs, 0);
}

TEST(LoadBalancerPick, LeastRequestPrefersTheLessLoadedEndpoint) {
  LoadBalancer lb(3);
  // Two endpoints: both are always drawn, so the idle one always wins.
  route::Cluster two = makeCluster("lr2", route::LbPolicy::LeastRequest, {1, 1});
  std::vector<uint32_t> active{5, 0};
  auto act = [&](size_t i) { return active[i]; };
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lb.pick(two, act), 1);
  active = {0, 5};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lb.pick(two, act), 0);

  // Ten endpoints, one busy: the two draws are distinct, so the busy one is
  // always compared with a less loaded one and never chosen.
  route::Cluster ten = makeCluster("lr10", route::LbPolicy::LeastRequest, std::vector<uint32_t>(10, 1));
  std::vector<uint32_t> load(10, 1);
  load[4] = 50;
  auto act10 = [&](size_t i) { return load[i]; };
  std::vector<int> counts(10);
  constexpr int kPicks = 20000;
  for (int i = 0; i < kPicks; ++i) counts[size_t(lb.pick(ten, act10))]++;
  EXPECT_EQ(counts[4], 0);
  // The others share evenly: 1/9 each, +- 1 point.
  for (size_t i = 0; i < 10; ++i) {
    if (i != 4) {
      EXPECT_NEAR(100.0 * counts[i] / kPicks, 100.0 / 9, 1.0) << i;
    }
  }
}

TEST(LoadBalancerPick, LeastRequestWhenIdleIsUniformAndHonoursExclusion) {
  LoadBalancer lb(11);
  route::Cluster c = makeCluster("lr", route::LbPolicy::LeastRequest, {1, 1, 1, 1});
  constexpr int kPicks = 40000;
  std::vector<int> counts(4);
  auto not2 = [](size_t i) { return i == 2; };
  for (int i = 0; i < kPicks; ++i) counts[size_t(lb.pick(c, idle, not2))]++;
  EXPECT_EQ(counts[2], 0);
  for (size_t i : {0u, 1u, 3u}) EXPECT_NEAR(100.0 * counts[i] / kPicks, 100.0 / 3, 1.0) << i;
  // One candidate left: it is chosen; none left: -1.
  EXPECT_EQ(lb.pick(c, idle, [](size_t i) { return i != 1; }), 1);
  EXPECT_EQ(lb.pick(c, idle, [](size_t) { return true; }), -1);
}

TEST(LoadBalancerPick, WeightedLeastRequestFollowsWeightsWhenIdleAndLoadPerWeightUnderLoad) {
  LoadBalancer lb(5);
  route::Cluster c = makeCluster("wlr", route::LbPolicy::LeastRequest, {3, 1});
  constexpr int kPicks = 100000;
  int heavy = 0;
  for (int i = 0; i < kPicks; ++i) heavy += lb.pick(c, idle) == 0;
  EXPECT_NEAR(100.0 * heavy / kPicks, 75.0, 1.0);
  // 4 active on weight 3 (1.33 per unit) vs 1 active on weight 1 (1.0):
  // the light endpoint carries less per unit of weight and wins.
  std::vector<uint32_t> active{4, 1};
  auto act = [&](size_t i) { return active[i]; };
  for (int i = 0; i < 50; ++i) EXPECT_EQ(lb.pick(c, act), 1);
  active = {2, 1};  // 0.67 vs 1.0: the heavy one wins
  for (int i = 0; i < 50; ++i) EXPECT_EQ(lb.pick(c, act), 0);
}

TEST(LoadBalancerPick, NextAndBelowStayInRange) {
  LoadBalancer lb(0);
  uint64_t orAll = 0;
  for (int i = 0; i < 1000; ++i) {
    orAll |= lb.next();
    EXPECT_LT(lb.below(7), 7u);
  }
  EXPECT_EQ(orAll, ~uint64_t{0});  // every bit gets set at some point
}

}  // namespace
}  // namespace sluice::upstream
