// ClusterManager::pick: the rules it owns, on clusters compiled from YAML.
#include "upstream/cluster_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "config/loader.h"
#include "route/table.h"

namespace sluice::upstream {
namespace {

std::string yaml(int endpoints, std::string_view lb) {
  std::string eps;
  for (int i = 1; i <= endpoints; ++i) eps += "  - {address: 127.0.0." + std::to_string(i) + "}\n";
  return R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
)" + eps + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: default}
spec:
  host: shop.test
  trafficPolicy:
    loadBalancer: )" + std::string(lb) + "\n";
}

std::shared_ptr<const route::Snapshot> compileYaml(const std::string& text) {
  config::LoadReport report;
  for (const auto& e : config::loadYaml(text, "shop.yaml", report)) ADD_FAILURE() << e.str();
  auto compiled = route::compile(report.resources, 1);
  EXPECT_TRUE(compiled.has_value());
  return compiled ? *compiled : nullptr;
}

const route::Cluster& serviceCluster(const route::Snapshot& s) {
  const route::Cluster* c = s.findCluster("outbound|80||shop.test");
  EXPECT_NE(c, nullptr);
  return *c;
}

struct Fixture {
  core::FakeClock clock;
  core::Rng rng{42};
  ClusterManager clusters{clock, rng};
  std::map<int, int> counts;
};

TEST(ClusterManager, ARetryAvoidsEveryHostAlreadyTried) {
  Fixture f;
  auto snap = compileYaml(yaml(3, "{simple: RANDOM}"));
  f.clusters.adopt(*snap, nullptr, nullptr);
  const route::Cluster& c = serviceCluster(*snap);
  PickContext ctx;
  ctx.avoid = 1;
  ctx.tried = 0b011;  // endpoints 0 and 1
  for (int i = 0; i < 200; ++i) ++f.counts[f.clusters.pick(c, [](size_t) { return 0u; }, ctx)];
  // Five more draws after a tried host: 0 comes back with chance
  // (1/2)^6 per pick at most; 200 picks would see it about 3 times.
  EXPECT_GE(f.counts[2], 190) << f.counts[0] << " " << f.counts[1];
  EXPECT_EQ(f.counts[1], 0) << "the last host is excluded outright";
}

TEST(ClusterManager, AHashKeyAlwaysPicksTheSameHost) {
  Fixture f;
  auto snap = compileYaml(yaml(5, "{consistentHash: {httpHeaderName: x-user}}"));
  f.clusters.adopt(*snap, nullptr, nullptr);
  const route::Cluster& c = serviceCluster(*snap);
  for (uint64_t key : {1ull, 99ull, 123456789ull}) {
    PickContext ctx;
    ctx.hashKey = &key;
    int first = f.clusters.pick(c, [](size_t) { return 0u; }, ctx);
    ASSERT_GE(first, 0);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(f.clusters.pick(c, [](size_t) { return 0u; }, ctx), first);
    // A retry that must avoid it goes elsewhere.
    ctx.avoid = first;
    ctx.tried = uint64_t(1) << first;
    EXPECT_NE(f.clusters.pick(c, [](size_t) { return 0u; }, ctx), first);
  }
}

TEST(ClusterManager, AnEndpointAddedToAWarmingClusterRampsUp) {
  Fixture f;
  const std::string lb = "{simple: ROUND_ROBIN, warmupDurationSecs: 100s}";
  auto before = compileYaml(yaml(1, lb));
  f.clusters.adopt(*before, nullptr, nullptr);
  auto after = compileYaml(yaml(2, lb));
  f.clusters.adopt(*after, nullptr, nullptr);
  const route::Cluster& c = serviceCluster(*after);
  auto share = [&](int n) {
    int added = 0;
    for (int i = 0; i < n; ++i) added += c.endpoints[size_t(f.clusters.pick(c, [](size_t) { return 0u; }))].address == "127.0.0.2";
    return double(added) / n;
  };
  // Round robin offers it half the picks; at first it keeps 10% of those.
  EXPECT_LT(share(4000), 0.10);
  f.clock.advance(std::chrono::seconds(100));
  EXPECT_NEAR(share(4000), 0.5, 0.05) << "warm after warmupDurationSecs";
}

TEST(ClusterManager, ANewClusterStartsWarm) {
  Fixture f;
  auto snap = compileYaml(yaml(2, "{simple: ROUND_ROBIN, warmupDurationSecs: 100s}"));
  f.clusters.adopt(*snap, nullptr, nullptr);
  const route::Cluster& c = serviceCluster(*snap);
  int second = 0;
  for (int i = 0; i < 1000; ++i) second += f.clusters.pick(c, [](size_t) { return 0u; }) == 1;
  EXPECT_EQ(second, 500);
}

TEST(ClusterManager, NoTablesMeansNoLimitsAndNoHealth) {
  Fixture f;
  auto snap = compileYaml(yaml(1, "{simple: RANDOM}"));
  f.clusters.adopt(*snap, nullptr, nullptr);
  EXPECT_EQ(f.clusters.limitsFor(serviceCluster(*snap)), nullptr);
  EXPECT_EQ(f.clusters.healthFor(serviceCluster(*snap)), nullptr);
}

}  // namespace
}  // namespace sluice::upstream
