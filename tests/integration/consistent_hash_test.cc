// DestinationRule consistentHash through sluiced: the same key always
// reaches the same upstream, different keys spread, and a missing hash
// cookie is generated and handed out so the client sticks from then on.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "mesh.h"

namespace sluice::itest {
namespace {

constexpr const char* kHost = "pool:8080";

std::string config(const std::string& lb) {
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
    loadBalancer: )" +
         lb + "\n";
}

class ConsistentHashing : public ::testing::Test {
 protected:
  void start(const std::string& lb) {
    ASSERT_OK(mesh_.startUpstreams({"a", "b", "c"}));
    auto text = renderTemplate(config(lb), mesh_.vars());
    ASSERT_TRUE(text) << text.error();
    ASSERT_OK(mesh_.writeConfig("pool.yaml", *text));
    ASSERT_OK(mesh_.startDaemon(2));
  }
  // Upstream names per key over `rounds` requests each.
  std::map<std::string, std::set<std::string>> spread(int keys, int rounds,
                                                      const std::function<std::vector<Header>(int)>& headers,
                                                      const std::function<std::string(int)>& target) {
    std::map<std::string, std::set<std::string>> seen;
    for (int r = 0; r < rounds; ++r)
      for (int k = 0; k < keys; ++k) seen[std::to_string(k)].insert(mesh_.servedBy(kHost, target(k), headers(k)));
    return seen;
  }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

void expectStickyAndSpread(const std::map<std::string, std::set<std::string>>& seen) {
  std::set<std::string> used;
  for (const auto& [key, hosts] : seen) {
    EXPECT_EQ(hosts.size(), 1u) << "key " << key << " reached " << ::testing::PrintToString(hosts);
    used.insert(*hosts.begin());
  }
  EXPECT_GE(used.size(), 2u) << "30 keys all on one host";
  for (const auto& h : used) EXPECT_TRUE(h == "a" || h == "b" || h == "c") << h;
}

TEST_F(ConsistentHashing, HeaderKeyStaysOnItsHost) {
  ASSERT_NO_FATAL_FAILURE(start("{consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}"));
  expectStickyAndSpread(spread(
      30, 3, [](int k) { return std::vector<Header>{{"x-user", "user-" + std::to_string(k)}}; },
      [](int) { return std::string("/"); }));
}

TEST_F(ConsistentHashing, QueryParameterKeyWithMaglevStaysOnItsHost) {
  ASSERT_NO_FATAL_FAILURE(start("{consistentHash: {httpQueryParameterName: id, maglev: {tableSize: 65537}}}"));
  expectStickyAndSpread(spread(
      30, 3, [](int) { return std::vector<Header>{}; }, [](int k) { return "/q?id=" + std::to_string(k); }));
}

TEST_F(ConsistentHashing, SourceIpSendsOneClientToOneHost) {
  ASSERT_NO_FATAL_FAILURE(start("{consistentHash: {useSourceIp: true}}"));
  std::set<std::string> hosts;
  for (int i = 0; i < 20; ++i) hosts.insert(mesh_.servedBy(kHost, "/"));
  EXPECT_EQ(hosts.size(), 1u) << ::testing::PrintToString(hosts);
}

TEST_F(ConsistentHashing, MissingCookieIsGeneratedAndThenSticks) {
  ASSERT_NO_FATAL_FAILURE(
      start("{consistentHash: {httpCookie: {name: sid, path: /, ttl: 60s}}}"));
  for (int client = 0; client < 6; ++client) {
    auto first = mesh_.get(kHost, "/");
    ASSERT_OK(first);
    ASSERT_EQ(first->status, 200);
    auto setCookie = first->header("set-cookie");
    ASSERT_TRUE(setCookie) << first->summary();
    EXPECT_NE(setCookie->find("; Path=/; Max-Age=60; HttpOnly"), std::string::npos) << *setCookie;
    std::string cookie = setCookie->substr(0, setCookie->find(';'));
    ASSERT_EQ(cookie.rfind("sid=", 0), 0u) << cookie;
    std::string host = upstreamName(*first);
    for (int i = 0; i < 5; ++i) {
      auto r = mesh_.get(kHost, "/", {{"Cookie", "other=1; " + cookie}});
      ASSERT_OK(r);
      EXPECT_EQ(upstreamName(*r), host) << "cookie " << cookie;
      EXPECT_FALSE(r->header("set-cookie")) << "a client with the cookie gets no new one";
    }
  }
}

}  // namespace
}  // namespace sluice::itest
