// The seed's fault-injection examples ("Delay Injection", "Abort
// Injection", "Combined Faults with Targeted Injection") on the ratings
// service, through a real sluiced. The seed delays (3 s, 5 s) are too slow
// to sample many times: each verbatim file gets a check a user could make by
// hand, and the percentages are measured on a copy of it whose only change
// is a 200 ms fixedDelay.
#include <gtest/gtest.h>

#include "mesh.h"

namespace sluice::itest {
namespace {

const std::string kRatings = "ratings:9080";

class SeedFault : public ::testing::Test {
 protected:
  // ratings-v1, its ServiceEntry/WorkloadEntry/DestinationRule, then `seed`
  // (with `replacements` applied when given), then sluiced.
  void start(const std::string& seed, const std::vector<std::pair<std::string, std::string>>& replacements = {}) {
    ASSERT_OK(mesh_.startUpstreams({"ratings-v1"}));
    ASSERT_OK(mesh_.addServiceTemplate("ratings.yaml"));
    if (replacements.empty()) {
      ASSERT_OK(mesh_.addSeed(seed));
    } else {
      ASSERT_OK(mesh_.addSeedVariant(seed, replacements));
    }
    ASSERT_OK(mesh_.startDaemon());
  }
  Request get(const std::string& target = "/ratings/0", std::vector<Header> extra = {}) {
    Request r{.method = "GET", .target = target, .headers = {{"Host", kRatings}}};
    r.headers.insert(r.headers.end(), extra.begin(), extra.end());
    return r;
  }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

int countIf(const std::vector<Mesh::Timed>& rs, auto pred) {
  int n = 0;
  for (const auto& r : rs) n += pred(r) ? 1 : 0;
  return n;
}

std::string firstError(const std::vector<Mesh::Timed>& rs) {
  for (const auto& r : rs) {
    if (!r.error.empty()) return r.error;
  }
  return "";
}

// The seed file as it is: 16 requests at once, each delayed 3 s with
// probability 1/2. All 16 undelayed has probability 2^-16.
TEST_F(SeedFault, DelayInjectionVerbatimDelaysSomeRequestsByThreeSeconds) {
  ASSERT_NO_FATAL_FAILURE(start("delay-injection.yaml"));
  auto rs = mesh_.sendMany(get(), 16, 16);
  ASSERT_EQ(rs.size(), 16u);
  int delayed = 0;
  for (const auto& r : rs) {
    ASSERT_EQ(r.status, 200) << r.error << " " << r.response.summary() << out();
    EXPECT_EQ(upstreamName(r.response), "ratings-v1");
    // Either not delayed, or delayed by 3 s (with scheduling slack).
    const bool slow = r.ms >= 2950;
    if (slow) {
      ++delayed;
      EXPECT_LT(r.ms, 4000) << "a 3 s delay took " << r.ms << " ms";
    } else {
      EXPECT_LT(r.ms, 1000) << "neither undelayed nor delayed 3 s: " << r.ms << " ms";
    }
  }
  EXPECT_GT(delayed, 0) << "no request delayed";
  EXPECT_LT(delayed, 16) << "every request delayed";
  EXPECT_EQ(mesh_.counter("ratings-v1"), 16) << "a delay must not drop the request";
  EXPECT_EQ(mesh_.stat("fault_delays_injected"), delayed);
}

// 400 requests, 16 at a time, fixedDelay 200 ms at 50 %: the delayed share's
// standard deviation is 2.5 pp, so ±10 pp is 4 sigma.
TEST_F(SeedFault, DelayInjectionHitsHalfTheRequests) {
  ASSERT_NO_FATAL_FAILURE(start("delay-injection.yaml", {{"fixedDelay: 3s", "fixedDelay: 200ms"}}));
  constexpr int kRequests = 400;
  auto rs = mesh_.sendMany(get(), kRequests, 16);
  ASSERT_EQ(rs.size(), size_t(kRequests));
  ASSERT_EQ(countIf(rs, [](const auto& r) { return r.status == 200; }), kRequests) << firstError(rs) << out();
  const int delayed = countIf(rs, [](const auto& r) { return r.ms >= 190; });
  EXPECT_NEAR(100.0 * delayed / kRequests, 50.0, 10.0) << delayed << " of " << kRequests << " took >= 190 ms";
  const int tooSlow = countIf(rs, [](const auto& r) { return r.ms >= 1000; });
  EXPECT_EQ(tooSlow, 0) << "a 200 ms delay took a second or more";
  EXPECT_EQ(mesh_.counter("ratings-v1"), kRequests);

  // The proxy counts every delay it injected (flag DI). A request can be slow
  // without a fault under load, never fast with one: the counter is at most
  // what the client saw, and close to it.
  const int64_t injected = mesh_.stat("fault_delays_injected");
  EXPECT_LE(injected, delayed);
  EXPECT_GE(injected, delayed - kRequests / 50) << "client saw " << delayed << " slow requests";
  const std::string prom = mesh_.prometheus();
  EXPECT_EQ(istioRequests(prom, {"response_flags=\"DI\""}), injected) << prom.substr(0, 2000);
}

// 2000 requests at 10 %: standard deviation 0.67 pp, so ±3 pp is 4.5 sigma.
TEST_F(SeedFault, AbortInjectionAnswers503ToTenPercent) {
  ASSERT_NO_FATAL_FAILURE(start("abort-injection.yaml"));
  constexpr int kRequests = 2000;
  auto rs = mesh_.sendMany(get(), kRequests, 4);
  ASSERT_EQ(rs.size(), size_t(kRequests));
  const int aborted = countIf(rs, [](const auto& r) { return r.status == 503; });
  const int ok = countIf(rs, [](const auto& r) { return r.status == 200; });
  ASSERT_EQ(aborted + ok, kRequests) << firstError(rs) << out();
  EXPECT_NEAR(100.0 * aborted / kRequests, 10.0, 3.0) << aborted << " of " << kRequests;
  for (const auto& r : rs) {
    if (r.status != 503) continue;
    // Answered by the proxy, as Envoy's fault filter does.
    EXPECT_EQ(r.response.body, "fault filter abort");
    EXPECT_EQ(upstreamName(r.response), "");
    break;
  }
  // An aborted request never reaches the upstream.
  EXPECT_EQ(mesh_.counter("ratings-v1"), ok);
  EXPECT_EQ(mesh_.stat("fault_aborts_injected"), aborted);
  const std::string prom = mesh_.prometheus();
  EXPECT_EQ(istioRequests(prom, {"response_code=\"503\"", "response_flags=\"FI\""}), aborted)
      << prom.substr(0, 2000);
  EXPECT_EQ(mesh_.stat("fault_delays_injected"), 0);
}

// The match confines the faults: traffic without x-chaos-test: true is never
// delayed (5 s in the seed) nor aborted.
TEST_F(SeedFault, CombinedFaultsSpareNormalTraffic) {
  ASSERT_NO_FATAL_FAILURE(start("combined-faults.yaml"));
  auto rs = mesh_.sendMany(get(), 300, 8);
  ASSERT_EQ(rs.size(), 300u);
  for (const auto& r : rs) {
    ASSERT_EQ(r.status, 200) << r.error << " " << r.response.summary() << out();
    EXPECT_LT(r.ms, 1000);
  }
  // Other values of the header are not "true" (exact is case-sensitive).
  for (std::string v : {"false", "TRUE", "true1"}) {
    auto r = mesh_.sendMany(get("/", {{"x-chaos-test", v}}), 20, 4);
    EXPECT_EQ(countIf(r, [](const auto& x) { return x.status == 200 && x.ms < 1000; }), 20) << "x-chaos-test: " << v;
  }
  EXPECT_EQ(mesh_.counter("ratings-v1"), 360);
  EXPECT_EQ(mesh_.stat("fault_delays_injected"), 0);
  EXPECT_EQ(mesh_.stat("fault_aborts_injected"), 0);
}

// Chaos traffic on a copy with fixedDelay 200 ms: ~10 % get 500, ~50 % are
// delayed, rolled independently. 600 requests: sigma 1.2 pp for the aborts
// (±5 pp = 4 sigma), 2 pp for the delays (±8 pp = 4 sigma).
TEST_F(SeedFault, CombinedFaultsHitChaosTraffic) {
  ASSERT_NO_FATAL_FAILURE(start("combined-faults.yaml", {{"fixedDelay: 5s", "fixedDelay: 200ms"}}));
  constexpr int kRequests = 600;
  auto rs = mesh_.sendMany(get("/ratings/1", {{"x-chaos-test", "true"}}), kRequests, 16);
  ASSERT_EQ(rs.size(), size_t(kRequests));
  const int aborted = countIf(rs, [](const auto& r) { return r.status == 500; });
  const int ok = countIf(rs, [](const auto& r) { return r.status == 200; });
  ASSERT_EQ(aborted + ok, kRequests) << firstError(rs) << out();
  const int delayed = countIf(rs, [](const auto& r) { return r.ms >= 190; });
  EXPECT_NEAR(100.0 * aborted / kRequests, 10.0, 5.0) << aborted << " of " << kRequests;
  EXPECT_NEAR(100.0 * delayed / kRequests, 50.0, 8.0) << delayed << " of " << kRequests;
  EXPECT_EQ(mesh_.counter("ratings-v1"), ok);
  EXPECT_EQ(mesh_.stat("fault_aborts_injected"), aborted);
  const int64_t injected = mesh_.stat("fault_delays_injected");
  EXPECT_LE(injected, delayed);
  EXPECT_GE(injected, delayed - kRequests / 50);

  // And still nothing for the unmarked traffic of the same daemon.
  mesh_.resetCounters();
  auto normal = mesh_.sendMany(get(), 100, 4);
  EXPECT_EQ(countIf(normal, [](const auto& r) { return r.status == 200 && r.ms < 190; }), 100);
  EXPECT_EQ(mesh_.counter("ratings-v1"), 100);
}

}  // namespace
}  // namespace sluice::itest
