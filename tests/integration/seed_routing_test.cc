// The seed article's `reviews` examples (basic, header-based, subsets,
// weighted) enforced by a real sluiced in front of real sluice-upstreams, as a
// user would observe them with an HTTP client or curl.
#include <gtest/gtest.h>

#include "mesh.h"

namespace sluice::itest {
namespace {

const std::string kReviews = "reviews:9080";

class SeedReviews : public ::testing::Test {
 protected:
  // Starts reviews-v1/v2/v3 (+ `extra` upstreams), writes the seed
  // DestinationRule, the reviews ServiceEntry/WorkloadEntries and `vsSeed`
  // (a seed VirtualService; empty for none), then sluiced.
  void start(const std::string& vsSeed, const std::vector<std::string>& extra = {},
             const std::string& extraConfig = {}) {
    std::vector<std::string> names = {"reviews-v1", "reviews-v2", "reviews-v3"};
    names.insert(names.end(), extra.begin(), extra.end());
    ASSERT_OK(mesh_.startUpstreams(names));
    ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
    ASSERT_OK(mesh_.addSeed("defining-subsets.yaml"));
    if (!vsSeed.empty()) ASSERT_OK(mesh_.addSeed(vsSeed));
    if (!extraConfig.empty()) {
      auto rendered = renderTemplate(extraConfig, mesh_.vars());
      ASSERT_OK(rendered);
      ASSERT_OK(mesh_.writeConfig("test-extra.yaml", *rendered));
    }
    ASSERT_OK(mesh_.startDaemon());
  }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(SeedReviews, BasicRoutingSendsEverythingToV2) {
  ASSERT_NO_FATAL_FAILURE(start("basic-http-routing.yaml"));
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  for (int i = 0; i < 50; ++i) {
    auto r = conn->send({.target = "/reviews/" + std::to_string(i), .headers = {{"Host", kReviews}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    EXPECT_EQ(upstreamName(*r), "reviews-v2");
    EXPECT_EQ(r->json()["path"], "/reviews/" + std::to_string(i));
    if (i == 0) {
      EXPECT_TRUE(r->header("x-envoy-upstream-service-time")) << "no x-envoy-upstream-service-time";
      // As under Envoy, the proxy generates x-request-id for the upstream
      // request; it does not add it to the response.
      EXPECT_TRUE(r->json()["headers"].contains("x-request-id")) << r->body;
    }
  }
  auto c = mesh_.counters();
  EXPECT_EQ(c["reviews-v1"], 0);
  EXPECT_EQ(c["reviews-v2"], 50);
  EXPECT_EQ(c["reviews-v3"], 0);

  // What `curl -H 'Host: reviews:9080' http://127.0.0.1:15001/` shows a user.
  auto cr = curl({"-H", "Host: " + kReviews, "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/"});
  ASSERT_EQ(cr.exitCode, 0) << cr.stderrText;
  EXPECT_EQ(cr.status, 200);
  EXPECT_EQ(cr.json()["name"], "reviews-v2") << cr.body;
}

TEST_F(SeedReviews, HeaderBasedRouting) {
  ASSERT_NO_FATAL_FAILURE(start("header-based-routing.yaml"));
  struct Case {
    std::vector<Header> headers;
    std::string want;
  };
  const std::vector<Case> cases = {
      {{{"x-user-group", "internal-testers"}}, "reviews-v3"},
      {{{"x-user-group", "beta"}}, "reviews-v2"},
      {{{"cookie", "session=abc; beta=true; theme=dark"}}, "reviews-v2"},
      {{{"cookie", "beta=true"}}, "reviews-v2"},
      {{}, "reviews-v1"},
      // exact means exact: no case folding of the value, no prefix.
      {{{"x-user-group", "Internal-Testers"}}, "reviews-v1"},
      {{{"x-user-group", "internal-testers-2"}}, "reviews-v1"},
      {{{"cookie", "beta=false"}}, "reviews-v1"},
      // Header names match case-insensitively.
      {{{"X-User-Group", "internal-testers"}}, "reviews-v3"},
      // First matching rule wins: both rules match, v3's comes first.
      {{{"x-user-group", "internal-testers"}, {"cookie", "beta=true"}}, "reviews-v3"},
  };
  for (const auto& c : cases) {
    std::string desc;
    for (const auto& h : c.headers) desc += h.name + ": " + h.value + "; ";
    EXPECT_EQ(mesh_.servedBy(kReviews, "/", c.headers), c.want) << "headers: " << desc << out();
  }
  // The article's own check: curl -s -H "x-user-group: internal-testers" http://reviews...
  auto cr = curl({"-x", "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()), "-H",
                  "x-user-group: internal-testers", "http://reviews:9080/api/reviews"});
  ASSERT_EQ(cr.exitCode, 0) << cr.stderrText;
  EXPECT_EQ(cr.status, 200);
  EXPECT_EQ(cr.json()["name"], "reviews-v3") << cr.body;
  EXPECT_EQ(cr.json()["path"], "/api/reviews") << cr.body;
}

// A subset reaches every endpoint carrying its labels and nothing else:
// reviews-v1b is a second WorkloadEntry labelled version: v1.
TEST_F(SeedReviews, SubsetsSelectEndpointsByLabel) {
  const std::string v1b = R"(apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1b
  namespace: default
spec:
  address: 127.0.0.1
  labels:
    app: reviews
    version: v1
  ports:
    http: ${REVIEWS_V1B_PORT}
)";
  ASSERT_NO_FATAL_FAILURE(start("header-based-routing.yaml", {"reviews-v1b"}, v1b));
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  std::map<std::string, int> seen;
  for (int i = 0; i < 200; ++i) {
    auto r = conn->send({.target = "/", .headers = {{"Host", kReviews}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    seen[upstreamName(*r)]++;
  }
  EXPECT_EQ(seen.size(), 2u) << "v1 traffic reached: " << ::testing::PrintToString(seen);
  EXPECT_GT(seen["reviews-v1"], 0);
  EXPECT_GT(seen["reviews-v1b"], 0);
  EXPECT_EQ(seen["reviews-v1"] + seen["reviews-v1b"], 200);

  mesh_.resetCounters();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(mesh_.servedBy(kReviews, "/", {{"x-user-group", "internal-testers"}}), "reviews-v3");
  }
  auto c = mesh_.counters();
  EXPECT_EQ(c["reviews-v3"], 20);
  EXPECT_EQ(c["reviews-v1"] + c["reviews-v1b"] + c["reviews-v2"], 0);
}

// With no VirtualService the service's default route spans every endpoint of
// the service, whatever its subset labels (Kubernetes Service semantics).
TEST_F(SeedReviews, WithoutVirtualServiceAllVersionsServe) {
  ASSERT_NO_FATAL_FAILURE(start(""));
  std::map<std::string, int> seen;
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  for (int i = 0; i < 150; ++i) {
    auto r = conn->send({.target = "/", .headers = {{"Host", kReviews}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    seen[upstreamName(*r)]++;
  }
  EXPECT_GT(seen["reviews-v1"], 0) << ::testing::PrintToString(seen);
  EXPECT_GT(seen["reviews-v2"], 0) << ::testing::PrintToString(seen);
  EXPECT_GT(seen["reviews-v3"], 0) << ::testing::PrintToString(seen);
}

// 90/10 over 2000 requests. Tolerance ±3 percentage points: the standard
// deviation of the v2 share is sqrt(0.9*0.1/2000) = 0.67 pp, so a correct
// splitter falls outside with probability ~1e-5.
TEST_F(SeedReviews, WeightedRoutingSplits90To10) {
  ASSERT_NO_FATAL_FAILURE(start("weighted-routing.yaml"));
  constexpr int kRequests = 2000;
  std::vector<HttpConnection> conns;
  for (int i = 0; i < 4; ++i) {
    auto c = HttpConnection::connect(mesh_.outboundPort());
    ASSERT_OK(c);
    conns.push_back(std::move(*c));
  }
  std::map<std::string, int> seen;
  for (int i = 0; i < kRequests; ++i) {
    auto& conn = conns[i % conns.size()];
    auto r = conn.send({.target = "/", .headers = {{"Host", kReviews}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    seen[upstreamName(*r)]++;
  }
  const double v1 = 100.0 * seen["reviews-v1"] / kRequests;
  const double v2 = 100.0 * seen["reviews-v2"] / kRequests;
  EXPECT_NEAR(v1, 90.0, 3.0) << ::testing::PrintToString(seen);
  EXPECT_NEAR(v2, 10.0, 3.0) << ::testing::PrintToString(seen);
  EXPECT_EQ(seen["reviews-v1"] + seen["reviews-v2"], kRequests) << ::testing::PrintToString(seen);
  // The upstreams' own counters agree with what the client saw.
  auto c = mesh_.counters();
  EXPECT_EQ(c["reviews-v1"], seen["reviews-v1"]);
  EXPECT_EQ(c["reviews-v2"], seen["reviews-v2"]);
  EXPECT_EQ(c["reviews-v3"], 0);
}

// A service answers to every name a sidecar's virtual host lists for it.
TEST_F(SeedReviews, EveryHostFormReachesTheService) {
  ASSERT_NO_FATAL_FAILURE(start("basic-http-routing.yaml"));
  for (std::string host : {"reviews", "reviews.default", "reviews.default.svc",
                           "reviews.default.svc.cluster.local", "127.10.0.1"}) {
    EXPECT_EQ(mesh_.servedBy(host, "/"), "reviews-v2") << "Host: " << host << out();
    EXPECT_EQ(mesh_.servedBy(host + ":9080", "/"), "reviews-v2") << "Host: " << host << ":9080";
  }
  // Host names are case-insensitive.
  EXPECT_EQ(mesh_.servedBy("Reviews.Default:9080", "/"), "reviews-v2");
}

TEST_F(SeedReviews, UnknownHostIs404) {
  ASSERT_NO_FATAL_FAILURE(start("basic-http-routing.yaml"));
  for (std::string host : {"ratings:9080", "nope.example.org", "reviews.other-namespace:9080"}) {
    auto r = mesh_.get(host, "/");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 404) << "Host: " << host << " -> " << r->summary();
  }
  auto c = mesh_.counters();
  EXPECT_EQ(c["reviews-v1"] + c["reviews-v2"] + c["reviews-v3"], 0);
  auto cr = curl({"-H", "Host: nope.example.org", "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/"});
  EXPECT_EQ(cr.exitCode, 0) << cr.stderrText;
  EXPECT_EQ(cr.status, 404);
}

// Proxy-style requests: `curl -x http://127.0.0.1:PORT http://reviews:9080/...`.
TEST_F(SeedReviews, AbsoluteFormThroughCurlProxy) {
  ASSERT_NO_FATAL_FAILURE(start("basic-http-routing.yaml"));
  const std::string proxy = "http://127.0.0.1:" + std::to_string(mesh_.outboundPort());
  for (std::string url : {"http://reviews:9080/productpage?u=1", "http://reviews.default.svc.cluster.local:9080/productpage?u=1",
                          "http://127.10.0.1:9080/productpage?u=1"}) {
    auto cr = curl({"-x", proxy, url});
    ASSERT_EQ(cr.exitCode, 0) << url << ": " << cr.stderrText;
    EXPECT_EQ(cr.status, 200) << url << ": " << cr.body;
    EXPECT_EQ(cr.header("x-upstream-name"), "reviews-v2") << url;
    auto j = cr.json();
    // The upstream gets origin-form: the path, not the absolute URI.
    EXPECT_EQ(j["path"], "/productpage") << url << ": " << cr.body;
    EXPECT_NE(j["query"].dump().find("u"), std::string::npos) << url << ": " << cr.body;
    EXPECT_TRUE(j["headers"].contains("x-request-id")) << url << ": " << cr.body;
  }
  auto unknown = curl({"-x", proxy, "http://unknown-service:9080/"});
  EXPECT_EQ(unknown.exitCode, 0) << unknown.stderrText;
  EXPECT_EQ(unknown.status, 404);
}

}  // namespace
}  // namespace sluice::itest
