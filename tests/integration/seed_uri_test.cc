// The seed "URI Matching" VirtualService (api.example.com, gateways removed so
// it applies to mesh traffic) against five real upstreams.
#include <gtest/gtest.h>

#include "mesh.h"

namespace sluice::itest {
namespace {

class SeedUri : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(mesh_.startUpstreams(
        {"users-service-v2", "legacy-api", "health-checker", "cdn-service", "frontend-service"}));
    ASSERT_OK(mesh_.addServiceTemplate("api.yaml"));
    ASSERT_OK(mesh_.addSeed("uri-matching.yaml"));
    ASSERT_OK(mesh_.startDaemon());
  }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(SeedUri, EachPathReachesItsService) {
  struct Case {
    std::string target;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"/api/v2/users", "users-service-v2"},
      {"/api/v2/users/42", "users-service-v2"},
      {"/api/v2/users/42?expand=true", "users-service-v2"},
      {"/api/v2/usersettings", "users-service-v2"},  // prefix is a raw string prefix
      {"/api/v2/orders", "frontend-service"},
      {"/api/v1", "legacy-api"},
      {"/api/v1/books", "legacy-api"},
      {"/api/v10", "legacy-api"},
      {"/api", "frontend-service"},
      {"/API/v1/books", "frontend-service"},  // matching is case-sensitive
      {"/health", "health-checker"},
      {"/healthz", "health-checker"},
      {"/health?probe=1", "health-checker"},  // regex sees the path without the query
      {"/healthy", "frontend-service"},        // regex matches the full path
      {"/healthzz", "frontend-service"},
      {"/health/", "frontend-service"},
      {"/static", "cdn-service"},
      {"/static/js/app.js", "cdn-service"},
      {"/", "frontend-service"},
      {"/index.html", "frontend-service"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(mesh_.servedBy("api.example.com", c.target), c.want) << "GET " << c.target;
  }
  // The same with the service port spelled out.
  EXPECT_EQ(mesh_.servedBy("api.example.com:80", "/api/v1/books"), "legacy-api");
  EXPECT_EQ(mesh_.servedBy("api.example.com:80", "/healthz"), "health-checker");
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(SeedUri, UpstreamSeesTheOriginalRequest) {
  auto r = mesh_.get("api.example.com", "/api/v2/users/42?expand=true", {{"x-trace", "t1"}});
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary();
  auto j = r->json();
  EXPECT_EQ(j["name"], "users-service-v2");
  EXPECT_EQ(j["path"], "/api/v2/users/42");  // no rewrite configured
  EXPECT_NE(j["query"].dump().find("expand"), std::string::npos) << r->body;
  EXPECT_EQ(j["headers"]["x-trace"], "t1");

  // A request body goes through untouched.
  auto post = httpRequest(mesh_.outboundPort(), {.method = "POST",
                                                 .target = "/api/v1/books",
                                                 .headers = {{"Host", "api.example.com"}},
                                                 .body = std::string(70000, 'b')});
  ASSERT_OK(post);
  ASSERT_EQ(post->status, 200) << post->summary();
  EXPECT_EQ(post->json()["name"], "legacy-api");
  EXPECT_EQ(post->json()["method"], "POST");
  EXPECT_EQ(post->json()["body_bytes"], 70000);
}

TEST_F(SeedUri, CurlSeesTheRoutes) {
  const std::string proxy = "http://127.0.0.1:" + std::to_string(mesh_.outboundPort());
  auto health = curl({"-x", proxy, "http://api.example.com/healthz"});
  ASSERT_EQ(health.exitCode, 0) << health.stderrText;
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.header("x-upstream-name"), "health-checker");
  auto staticAsset = curl({"-H", "Host: api.example.com",
                           "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/static/logo.png"});
  ASSERT_EQ(staticAsset.exitCode, 0) << staticAsset.stderrText;
  EXPECT_EQ(staticAsset.status, 200);
  EXPECT_EQ(staticAsset.json()["name"], "cdn-service") << staticAsset.body;
}

// The services behind the VirtualService are reachable by their own names
// too (mesh traffic to a service without a VirtualService of its own).
TEST_F(SeedUri, BackendServicesAnswerDirectly) {
  EXPECT_EQ(mesh_.servedBy("legacy-api:8080", "/x"), "legacy-api");
  EXPECT_EQ(mesh_.servedBy("frontend-service.default.svc.cluster.local:3000", "/"), "frontend-service");
  EXPECT_EQ(mesh_.servedBy("127.10.0.6:80", "/"), "cdn-service");
  // A host without a route on this port is not served.
  EXPECT_EQ(mesh_.servedBy("api.example.org", "/"), "status 404");
}

}  // namespace
}  // namespace sluice::itest
