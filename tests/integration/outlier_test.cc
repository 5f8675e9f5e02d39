// DestinationRule outlierDetection with real processes: three endpoints of
// one service, some of them sick (sluice-upstream --status 500), requests one
// at a time through sluiced with ROUND_ROBIN so each host's share is known,
// and each upstream's own request counter as the ground truth of who got
// traffic. Ejection, return after baseEjectionTime x ejections,
// maxEjectionPercent and minHealthPercent.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "mesh.h"

namespace sluice::itest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kHost = "pool:8080";

std::string config(const std::string& outlier) {
  return R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pool}
spec:
  hosts: [pool.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${A_PORT}}}
  - {address: 127.0.0.1, ports: {http: ${B_PORT}}}
  - {address: 127.0.0.1, ports: {http: ${C_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool}
spec:
  host: pool
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: )" +
         outlier + "\n";
}

class Outlier : public ::testing::Test {
 protected:
  // a: healthy; b, c: healthy unless listed in `sick`.
  void start(const std::string& outlier, const std::vector<std::string>& sick) {
    for (const char* name : {"a", "b", "c"}) {
      bool ill = std::find(sick.begin(), sick.end(), name) != sick.end();
      std::vector<std::string> extra;
      if (ill) extra = {"--status", "500"};
      ASSERT_OK(mesh_.startUpstreams({name}, extra));
    }
    auto text = renderTemplate(config(outlier), mesh_.vars());
    ASSERT_TRUE(text) << text.error();
    ASSERT_OK(mesh_.writeConfig("pool.yaml", *text));
    ASSERT_OK(mesh_.startDaemon(1));
  }
  int status() {
    auto r = mesh_.get(kHost, "/");
    return r ? r->status : -1;
  }
  // Sends requests until `name` has served `n` in all, at most `limit`.
  bool driveUntil(const std::string& name, int64_t n, int limit, Clock::duration pause = 0ms) {
    for (int i = 0; i < limit; ++i) {
      if (mesh_.counter(name) >= n) return true;
      status();
      if (pause.count()) std::this_thread::sleep_for(pause);
    }
    return mesh_.counter(name) >= n;
  }
  nlohmann::json cluster() { return mesh_.cluster("outbound|8080||pool.default.svc.cluster.local"); }
  int ejectedNow() {
    auto c = cluster();
    return c.contains("outlier_detection") ? c["outlier_detection"]["ejected_now"].get<int>() : -1;
  }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(Outlier, SickHostIsEjectedThenReturnsAndIsEjectedTwiceAsLongNextTime) {
  ASSERT_NO_FATAL_FAILURE(start(
      "{consecutive5xxErrors: 3, interval: 50ms, baseEjectionTime: 1s, maxEjectionPercent: 100}", {"c"}));
  // Every third request reaches c; the third 500 in a row ejects it at once.
  ASSERT_TRUE(driveUntil("c", 3, 30)) << mesh_.logs();
  auto t0 = Clock::now();
  EXPECT_EQ(ejectedNow(), 1) << cluster().dump();
  // Ejected: everything goes to a and b, and succeeds.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(status(), 200);
  EXPECT_EQ(mesh_.counter("c"), 3);

  // Back after baseEjectionTime (plus at most one interval).
  ASSERT_TRUE(driveUntil("c", 4, 400, 10ms));
  double firstMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_GE(firstMs, 950);
  EXPECT_LE(firstMs, 1700);
  // Still sick: three more 500s eject it again, now for 2 x baseEjectionTime.
  ASSERT_TRUE(driveUntil("c", 6, 30));
  auto t1 = Clock::now();
  EXPECT_EQ(ejectedNow(), 1);
  ASSERT_TRUE(driveUntil("c", 7, 600, 10ms));
  double secondMs = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  EXPECT_GE(secondMs, 1950);
  EXPECT_LE(secondMs, 2800);
  auto c = cluster();
  EXPECT_EQ(c["outlier_detection"]["ejections_total"], 2) << c.dump();
  auto metrics = httpRequest(mesh_.adminPort(), {.method = "GET", .target = "/stats/prometheus"});
  ASSERT_OK(metrics);
  EXPECT_NE(metrics->body.find("envoy_cluster_outlier_detection_ejections_enforced_total{cluster_name="
                               "\"outbound|8080||pool.default.svc.cluster.local\"} 2"),
            std::string::npos);
}

TEST_F(Outlier, MaxEjectionPercentKeepsTheSecondSickHostInThePool) {
  // 40% of 3 hosts: one may go (one always may), a second would be 67%.
  ASSERT_NO_FATAL_FAILURE(start(
      "{consecutive5xxErrors: 2, interval: 50ms, baseEjectionTime: 60s, maxEjectionPercent: 40}",
      {"b", "c"}));
  for (int i = 0; i < 30; ++i) status();
  EXPECT_EQ(ejectedNow(), 1) << cluster().dump();
  int64_t b = mesh_.counter("b"), c = mesh_.counter("c");
  for (int i = 0; i < 20; ++i) status();
  int64_t moved = (mesh_.counter("b") - b) + (mesh_.counter("c") - c);
  EXPECT_GE(moved, 8) << "the sick host that was not ejected keeps half the traffic";
  EXPECT_TRUE(mesh_.counter("b") == b || mesh_.counter("c") == c) << "the ejected one gets none";
}

TEST_F(Outlier, AllowedEjectionsTakeEveryHostButTheHealthyOne) {
  ASSERT_NO_FATAL_FAILURE(start(
      "{consecutive5xxErrors: 2, interval: 50ms, baseEjectionTime: 60s, maxEjectionPercent: 100}",
      {"b", "c"}));
  for (int i = 0; i < 30; ++i) status();
  EXPECT_EQ(ejectedNow(), 2) << cluster().dump();
  int64_t b = mesh_.counter("b"), c = mesh_.counter("c");
  for (int i = 0; i < 20; ++i) EXPECT_EQ(status(), 200);
  EXPECT_EQ(mesh_.counter("b"), b);
  EXPECT_EQ(mesh_.counter("c"), c);
}

TEST_F(Outlier, BelowMinHealthPercentEjectionsAreIgnored) {
  // Both sick hosts ejected leaves 1 of 3 healthy (33% < 50%): panic, so
  // the balancer uses every host again.
  ASSERT_NO_FATAL_FAILURE(start(
      "{consecutive5xxErrors: 2, interval: 50ms, baseEjectionTime: 60s, maxEjectionPercent: 100, "
      "minHealthPercent: 50}",
      {"b", "c"}));
  for (int i = 0; i < 30; ++i) status();
  auto cl = cluster();
  EXPECT_EQ(ejectedNow(), 2) << cl.dump();
  EXPECT_EQ(cl["outlier_detection"]["panic"], true) << cl.dump();
  int64_t b = mesh_.counter("b"), c = mesh_.counter("c");
  for (int i = 0; i < 30; ++i) status();
  EXPECT_GE(mesh_.counter("b") - b, 5);
  EXPECT_GE(mesh_.counter("c") - c, 5);
}

}  // namespace
}  // namespace sluice::itest
