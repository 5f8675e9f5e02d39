// The seed's DestinationRule examples (configs/seed/, loaded unchanged) with
// real sluice-upstreams behind the services they assume: load-balancing
// policy inheritance, consistent hashing on x-user-id, the connection-pool
// settings, and the circuit-breaking rule's outlier detection.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>

#include "mesh.h"

namespace sluice::itest {
namespace {

class SeedDestinationRule : public ::testing::Test {
 protected:
  nlohmann::json cluster(const std::string& name) { return mesh_.cluster(name); }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(SeedDestinationRule, LoadBalancingPoliciesInheritAndOverride) {
  ASSERT_OK(mesh_.startUpstreams({"reviews-v1", "reviews-v2", "reviews-v3"}));
  ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
  ASSERT_OK(mesh_.addSeed("load-balancing-policies.yaml"));
  ASSERT_OK(mesh_.addSeed("weighted-routing.yaml"));  // routes to v1 and v2
  ASSERT_OK(mesh_.startDaemon(1));
  EXPECT_EQ(cluster("outbound|9080|v1|reviews.default.svc.cluster.local")["lb_policy"], "LEAST_REQUEST");
  EXPECT_EQ(cluster("outbound|9080|v2|reviews.default.svc.cluster.local")["lb_policy"], "ROUND_ROBIN");
  EXPECT_EQ(cluster("outbound|9080||reviews.default.svc.cluster.local")["lb_policy"], "LEAST_REQUEST");
  std::set<std::string> served;
  for (int i = 0; i < 60; ++i) served.insert(mesh_.servedBy("reviews:9080"));
  EXPECT_TRUE(served.count("reviews-v1") && served.count("reviews-v2")) << ::testing::PrintToString(served);
  EXPECT_FALSE(served.count("reviews-v3"));
}

TEST_F(SeedDestinationRule, ConsistentHashKeepsAUserOnOneReplica) {
  ASSERT_OK(mesh_.startUpstreams({"user-service-1", "user-service-2", "user-service-3"}));
  ASSERT_OK(mesh_.addServiceTemplate("user-service.yaml"));
  ASSERT_OK(mesh_.addSeed("consistent-hashing.yaml"));
  ASSERT_OK(mesh_.startDaemon(2));
  std::set<std::string> replicas;
  for (int u = 0; u < 20; ++u) {
    std::set<std::string> seen;
    for (int i = 0; i < 4; ++i)
      seen.insert(mesh_.servedBy("user-service:8080", "/", {{"x-user-id", "user-" + std::to_string(u)}}));
    EXPECT_EQ(seen.size(), 1u) << "user " << u << ": " << ::testing::PrintToString(seen);
    replicas.insert(*seen.begin());
  }
  EXPECT_GE(replicas.size(), 2u);
}

TEST_F(SeedDestinationRule, ConnectionPoolSettingsApplyToUpstreamConnections) {
  ASSERT_OK(mesh_.startUpstreams({"reviews-v1", "reviews-v2", "reviews-v3"}));
  ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
  ASSERT_OK(mesh_.addSeed("connection-pool-settings.yaml"));
  ASSERT_OK(mesh_.startDaemon(1));
  auto r = mesh_.get("reviews:9080");
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200);
  std::string served = upstreamName(*r);
  // tcpKeepalive time 7200s on the pooled upstream connection.
  std::string cmd = "ss -tnoH state established '( dport = :" +
                    std::to_string(mesh_.upstreamPort(served)) + " )' 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof(buf), p)) out += buf;
    ::pclose(p);
  }
  EXPECT_NE(out.find("timer:(keepalive,119min"), std::string::npos) << out;
  // maxRequestsPerConnection: 10: the 11th request on one connection is not
  // sent on the same upstream connection.
  int maxSeen = 0;
  for (int i = 0; i < 30; ++i) {
    auto x = mesh_.get("reviews:9080");
    ASSERT_OK(x);
    maxSeen = std::max(maxSeen, x->json()["connection_request"].get<int>());
  }
  EXPECT_LE(maxSeen, 10);
  EXPECT_GE(maxSeen, 2) << "connections are still reused";
}

TEST_F(SeedDestinationRule, CircuitBreakingRuleEjectsTheFailingReplica) {
  ASSERT_OK(mesh_.startUpstreams({"reviews-v1", "reviews-v2"}));
  ASSERT_OK(mesh_.startUpstreams({"reviews-v3"}, {"--status", "500"}));
  ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
  ASSERT_OK(mesh_.addSeed("circuit-breaking.yaml"));
  ASSERT_OK(mesh_.startDaemon(1));
  // consecutive5xxErrors: 5 (split: local failures counted apart).
  for (int i = 0; i < 200 && mesh_.counter("reviews-v3") < 5; ++i) (void)mesh_.get("reviews:9080");
  ASSERT_EQ(mesh_.counter("reviews-v3"), 5);
  auto c = cluster("outbound|9080||reviews.default.svc.cluster.local");
  EXPECT_EQ(c["outlier_detection"]["ejected_now"], 1) << c.dump();
  for (int i = 0; i < 30; ++i) EXPECT_EQ(mesh_.get("reviews:9080")->status, 200);
  EXPECT_EQ(mesh_.counter("reviews-v3"), 5) << "ejected for baseEjectionTime (30 s)";
}

}  // namespace
}  // namespace sluice::itest
