// ClusterHealth with explicit time: thresholds, the gateway/5xx/local-origin
// counting rules, ejection length, maxEjectionPercent, panic and returns.
#include <gtest/gtest.h>

#include "upstream/outlier.h"

namespace sluice::upstream {
namespace {

constexpr uint64_t kMs = 1'000'000;

std::vector<route::Endpoint> endpoints(size_t n) {
  std::vector<route::Endpoint> out(n);
  for (size_t i = 0; i < n; ++i) out[i].key = "127.0.0.1:" + std::to_string(9000 + i);
  return out;
}

OutlierConfig cfg(uint32_t c5xx, uint32_t maxPct = 100, uint32_t minHealth = 0) {
  OutlierConfig c;
  c.consecutive5xx = c5xx;
  c.intervalNs = 10 * kMs;
  c.baseEjectionNs = 100 * kMs;
  c.maxEjectionPercent = maxPct;
  c.minHealthPercent = minHealth;
  return c;
}

TEST(Outlier, IstioDefaultsFillWhatTheSpecLeavesOut) {
  OutlierConfig c = OutlierConfig::from(config::OutlierDetection{});
  EXPECT_EQ(c.consecutive5xx, 5u);
  EXPECT_EQ(c.consecutiveGateway, 0u);
  EXPECT_EQ(c.intervalNs, 10'000 * kMs);
  EXPECT_EQ(c.baseEjectionNs, 30'000 * kMs);
  EXPECT_EQ(c.maxEjectionPercent, 10u);
  EXPECT_EQ(c.minHealthPercent, 0u);
}

TEST(Outlier, StatusesMapToOutcomes) {
  EXPECT_EQ(outcomeOf(200), Outcome::Success);
  EXPECT_EQ(outcomeOf(404), Outcome::Success);
  EXPECT_EQ(outcomeOf(500), Outcome::Error5xx);
  EXPECT_EQ(outcomeOf(502), Outcome::GatewayError);
  EXPECT_EQ(outcomeOf(503), Outcome::GatewayError);
  EXPECT_EQ(outcomeOf(504), Outcome::GatewayError);
}

TEST(Outlier, ConsecutiveMeansConsecutive) {
  ClusterHealth h("c", cfg(3), endpoints(3));
  h.report(0, Outcome::Error5xx, 0);
  h.report(0, Outcome::Error5xx, 0);
  h.report(0, Outcome::Success, 0);  // resets the run
  h.report(0, Outcome::Error5xx, 0);
  h.report(0, Outcome::Error5xx, 0);
  EXPECT_FALSE(h.skip(0));
  h.report(0, Outcome::Error5xx, 0);
  EXPECT_TRUE(h.skip(0));
  EXPECT_FALSE(h.skip(1));
  EXPECT_EQ(h.ejectedNow(), 1u);
}

TEST(Outlier, GatewayErrorsCountAsBothKindsAndLocalFailuresAsGatewayErrors) {
  OutlierConfig c = cfg(0);
  c.consecutiveGateway = 2;
  ClusterHealth h("c", c, endpoints(3));
  h.report(0, Outcome::Error5xx, 0);  // a 500 is no gateway error
  h.report(0, Outcome::Error5xx, 0);
  EXPECT_FALSE(h.skip(0));
  h.report(1, Outcome::GatewayError, 0);
  h.report(1, Outcome::LocalOriginFailure, 0);  // connect failure: a 503 to Envoy
  EXPECT_TRUE(h.skip(1));

  // With the split, local failures have their own counter.
  OutlierConfig split = cfg(2);
  split.splitLocalOrigin = true;
  split.consecutiveLocalOrigin = 3;
  ClusterHealth s("s", split, endpoints(3));
  s.report(0, Outcome::LocalOriginFailure, 0);
  s.report(0, Outcome::LocalOriginFailure, 0);
  EXPECT_FALSE(s.skip(0));
  s.report(0, Outcome::LocalOriginFailure, 0);
  EXPECT_TRUE(s.skip(0));
}

TEST(Outlier, EjectionLastsBaseTimesCountAndReturnsOnTheNextInterval) {
  ClusterHealth h("c", cfg(1), endpoints(3));
  std::vector<std::pair<size_t, bool>> events;
  h.setHook([&](const route::Endpoint& ep, bool ejected) {
    events.emplace_back(size_t(ep.key.back() - '0'), ejected);
  });
  h.report(2, Outcome::Error5xx, 0);
  EXPECT_TRUE(h.skip(2));
  h.sweep(50 * kMs);
  EXPECT_TRUE(h.skip(2)) << "not before 100 ms";
  h.sweep(101 * kMs);
  EXPECT_FALSE(h.skip(2));
  h.report(2, Outcome::Error5xx, 200 * kMs);  // second ejection: 200 ms
  EXPECT_EQ(h.view(2).ejectedUntilNs, 400 * kMs);
  h.sweep(390 * kMs);
  EXPECT_TRUE(h.skip(2));
  h.sweep(401 * kMs);
  EXPECT_FALSE(h.skip(2));
  EXPECT_EQ(h.ejectionsTotal(), 2u);
  EXPECT_EQ(events, (std::vector<std::pair<size_t, bool>>{{2, true}, {2, false}, {2, true}, {2, false}}));
}

TEST(Outlier, EjectionTimeIsCappedAtFiveMinutes) {
  OutlierConfig c = cfg(1);
  c.baseEjectionNs = 200'000 * kMs;  // 200 s
  ClusterHealth h("c", c, endpoints(1));
  uint64_t now = 0;
  for (int i = 0; i < 3; ++i) {
    h.report(0, Outcome::Error5xx, now);
    now = h.view(0).ejectedUntilNs;
    h.sweep(now);
  }
  h.report(0, Outcome::Error5xx, now);
  EXPECT_EQ(h.view(0).ejectedUntilNs - now, 300'000 * kMs);
}

TEST(Outlier, MaxEjectionPercentAlwaysAllowsOne) {
  ClusterHealth h("c", cfg(1, 10), endpoints(4));  // 10% of 4 rounds to none
  h.report(0, Outcome::Error5xx, 0);
  h.report(1, Outcome::Error5xx, 0);
  EXPECT_TRUE(h.skip(0));
  EXPECT_FALSE(h.skip(1));
  EXPECT_EQ(h.ejectedNow(), 1u);

  ClusterHealth half("h", cfg(1, 50), endpoints(4));
  for (size_t i = 0; i < 4; ++i) half.report(i, Outcome::Error5xx, 0);
  EXPECT_EQ(half.ejectedNow(), 2u);
}

TEST(Outlier, BelowMinHealthPercentNothingIsSkipped) {
  ClusterHealth h("c", cfg(1, 100, 50), endpoints(4));
  h.report(0, Outcome::Error5xx, 0);
  h.report(1, Outcome::Error5xx, 0);
  EXPECT_FALSE(h.panic()) << "2 of 4 healthy is 50%";
  EXPECT_TRUE(h.skip(0));
  h.report(2, Outcome::Error5xx, 0);
  EXPECT_TRUE(h.panic());
  EXPECT_FALSE(h.skip(0));
  EXPECT_FALSE(h.skip(2));
}

}  // namespace
}  // namespace sluice::upstream
