// The seed's VirtualService route actions that change the request or the
// response on its way ("URL Rewriting", "Request Header Manipulation"), plus
// the actions that answer without an upstream (redirect, directResponse),
// through a real sluiced, as a client and the upstream observe them.
// Faults: seed_fault_test.cc; retries and timeouts: seed_retry_test.cc;
// mirroring: seed_mirror_test.cc.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <strings.h>

#include <chrono>
#include <regex>

#include "mesh.h"

namespace sluice::itest {
namespace {

// ---------------------------------------------------------------- seed files

// The seed files of this issue are YAML the daemon can read, and their
// service templates name only loopback addresses and ports the tests fill.
TEST(SeedFilesIssue3, ParseAsIstioResources) {
  for (const char* file : {"url-rewriting.yaml", "request-header-manipulation.yaml", "traffic-mirroring.yaml",
                           "delay-injection.yaml", "abort-injection.yaml", "combined-faults.yaml",
                           "retries-and-timeouts.yaml", "per-route-timeout-strategy.yaml"}) {
    auto text = seedFile(file);
    ASSERT_OK(text);
    auto docs = YAML::LoadAll(*text);
    ASSERT_EQ(docs.size(), 1u) << file;
    EXPECT_EQ(docs[0]["kind"].as<std::string>(), "VirtualService") << file;
    EXPECT_EQ(docs[0]["apiVersion"].as<std::string>(), "networking.istio.io/v1") << file;
    EXPECT_TRUE(docs[0]["spec"]["http"].IsSequence()) << file;
    EXPECT_FALSE(docs[0]["spec"]["gateways"]) << file << " must apply to mesh traffic";
  }
  std::map<std::string, std::string> vars;
  for (const char* n : {"catalog-service", "external-service", "backend-service", "ratings-v1", "api-service"}) {
    vars[portVar(n)] = "4242";
  }
  for (const char* file : {"services/catalog.yaml", "services/backend-service.yaml", "services/ratings.yaml",
                           "services/api-service.yaml"}) {
    auto text = seedFile(file);
    ASSERT_OK(text);
    auto rendered = renderTemplate(*text, vars);
    ASSERT_OK(rendered);
    for (const auto& doc : YAML::LoadAll(*rendered)) {
      const std::string kind = doc["kind"].as<std::string>();
      EXPECT_TRUE(kind == "ServiceEntry" || kind == "WorkloadEntry" || kind == "DestinationRule")
          << file << ": " << kind;
      for (const auto& a : doc["spec"]["addresses"]) {
        EXPECT_EQ(a.as<std::string>().rfind("127.", 0), 0u) << "non-loopback address in " << file;
      }
    }
  }
}

// ---------------------------------------------------------------- URL rewriting

// One seed example: its upstreams, its service template, the seed file, then
// sluiced.
class SeedExample : public ::testing::Test {
 protected:
  void startExample(const std::vector<std::string>& upstreams, const std::string& serviceTemplate,
                    const std::string& seed) {
    ASSERT_OK(mesh_.startUpstreams(upstreams));
    ASSERT_OK(mesh_.addServiceTemplate(serviceTemplate));
    ASSERT_OK(mesh_.addSeed(seed));
    ASSERT_OK(mesh_.startDaemon());
  }
  std::string out() { return "\n" + mesh_.logs(); }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

class SeedRewrite : public SeedExample {
 protected:
  void SetUp() override {
    startExample({"catalog-service", "external-service"}, "catalog.yaml", "url-rewriting.yaml");
  }
};

TEST_F(SeedRewrite, PrefixIsReplacedAndTheOriginalPathKept) {
  auto r = mesh_.get("edge.example.com", "/api/v2/catalog/items");
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary() << out();
  auto j = r->json();
  EXPECT_EQ(j["name"], "catalog-service");
  EXPECT_EQ(j["path"], "/catalog/items");
  EXPECT_EQ(j["headers"]["x-envoy-original-path"], "/api/v2/catalog/items") << r->body;
  // No authority rewrite on this rule: the upstream sees the client's Host.
  EXPECT_EQ(j["headers"]["host"], "edge.example.com") << r->body;

  struct Case {
    std::string target, path, query;
  };
  const std::vector<Case> cases = {
      {"/api/v2/catalog", "/catalog", ""},
      {"/api/v2/catalog/", "/catalog/", ""},
      {"/api/v2/catalog/items/42?page=2&sort=asc", "/catalog/items/42", "page=2&sort=asc"},
      // prefix is a raw string prefix, and so is what the rewrite replaces.
      {"/api/v2/catalogue", "/catalogue", ""},
  };
  for (const auto& c : cases) {
    auto rc = mesh_.get("edge.example.com", c.target);
    ASSERT_OK(rc);
    ASSERT_EQ(rc->status, 200) << c.target << ": " << rc->summary();
    auto jc = rc->json();
    EXPECT_EQ(jc["name"], "catalog-service") << c.target;
    EXPECT_EQ(jc["path"], c.path) << c.target;
    EXPECT_EQ(jc["query"], c.query) << c.target;
  }
  EXPECT_EQ(mesh_.counter("catalog-service"), 1 + int64_t(cases.size()));
  EXPECT_EQ(mesh_.counter("external-service"), 0);
}

TEST_F(SeedRewrite, AuthorityRewriteForTheExternalService) {
  auto r = mesh_.get("edge.example.com", "/external-api/x", {{"x-trace", "t1"}});
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary() << out();
  auto j = r->json();
  EXPECT_EQ(j["name"], "external-service");
  EXPECT_EQ(j["path"], "/api/x");
  EXPECT_EQ(j["headers"]["host"], "external-service.partner.com") << r->body;
  EXPECT_EQ(j["headers"]["x-envoy-original-path"], "/external-api/x") << r->body;
  EXPECT_EQ(j["headers"]["x-trace"], "t1");

  // The same through curl as a forward proxy (absolute-form request).
  auto cr = curl({"-x", "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()),
                  "http://edge.example.com/external-api/v1/orders?id=7"});
  ASSERT_EQ(cr.exitCode, 0) << cr.stderrText;
  EXPECT_EQ(cr.status, 200);
  EXPECT_EQ(cr.json()["path"], "/api/v1/orders") << cr.body;
  EXPECT_EQ(cr.json()["query"], "id=7") << cr.body;
  EXPECT_EQ(cr.json()["headers"]["host"], "external-service.partner.com") << cr.body;
}

TEST_F(SeedRewrite, PathsOutsideBothRulesAreNotRouted) {
  // The VirtualService has no catch-all: anything else gets 404 (NR).
  EXPECT_EQ(mesh_.servedBy("edge.example.com", "/catalog/items"), "status 404");
  EXPECT_EQ(mesh_.servedBy("edge.example.com", "/api/v1/catalog"), "status 404");
  EXPECT_EQ(mesh_.counter("catalog-service"), 0);
  EXPECT_EQ(mesh_.counter("external-service"), 0);
}

// Not a seed example: the other rewrite forms. An exact match is replaced
// whole; uriRegexRewrite substitutes RE2 groups into the path (the query
// stays), as in istio/api's own example.
constexpr std::string_view kRewriteForms = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: media
  namespace: default
spec:
  hosts:
  - media.default.svc.cluster.local
  addresses:
  - 127.10.0.16
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${MEDIA_PORT}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: media
  namespace: default
spec:
  hosts:
  - media
  http:
  - match:
    - uri:
        exact: /old
    rewrite:
      uri: /new
    route:
    - destination:
        host: media
  - match:
    - uri:
        prefix: /service/
    rewrite:
      uriRegexRewrite:
        match: ^/service/([^/]+)(/.*)$
        rewrite: \2/instance/\1
    route:
    - destination:
        host: media
  - route:
    - destination:
        host: media
)";

TEST(RewriteForms, ExactAndRegexRewrites) {
  TempDir tmp;
  Mesh mesh{tmp};
  ASSERT_OK(mesh.startUpstreams({"media"}));
  auto cfg = renderTemplate(kRewriteForms, mesh.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh.writeConfig("media.yaml", *cfg));
  ASSERT_OK(mesh.startDaemon());
  struct Case {
    std::string target, path, query, original;
  };
  const std::vector<Case> cases = {
      {"/old", "/new", "", "/old"},
      {"/old?x=1", "/new", "x=1", "/old?x=1"},
      {"/service/foo/bar", "/bar/instance/foo", "", "/service/foo/bar"},
      {"/service/foo/bar/baz?q=2", "/bar/baz/instance/foo", "q=2", "/service/foo/bar/baz?q=2"},
      // No rewrite: no x-envoy-original-path either.
      {"/oldies", "/oldies", "", ""},
  };
  for (const auto& c : cases) {
    auto r = mesh.get("media:8080", c.target);
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << c.target << ": " << r->summary();
    auto j = r->json();
    EXPECT_EQ(j["path"], c.path) << c.target;
    EXPECT_EQ(j["query"], c.query) << c.target;
    if (c.original.empty()) {
      EXPECT_FALSE(j["headers"].contains("x-envoy-original-path")) << c.target << ": " << r->body;
    } else {
      EXPECT_EQ(j["headers"]["x-envoy-original-path"], c.original) << c.target;
    }
  }
}

// ---------------------------------------------------------------- headers

class SeedHeaders : public SeedExample {
 protected:
  void SetUp() override { startExample({"backend-service"}, "backend-service.yaml", "request-header-manipulation.yaml"); }
};

TEST_F(SeedHeaders, UpstreamSeesTheRequestHeaderOperations) {
  const double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto r = mesh_.get("backend-service:8080", "/orders",
                     {{"x-internal-debug", "verbose"}, {"x-keep", "me"}});
  const double after = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary() << out();
  auto h = r->json()["headers"];
  ASSERT_TRUE(h.is_object()) << r->body;
  EXPECT_EQ(h["x-custom-trace"], "mesh-routed") << r->body;
  EXPECT_FALSE(h.contains("x-internal-debug")) << "remove did not apply: " << r->body;
  EXPECT_EQ(h["x-keep"], "me");
  // %DOWNSTREAM_PEER_CERT_V_START% is empty on a plaintext connection, and
  // a header whose value renders empty is not set.
  EXPECT_FALSE(h.contains("x-forwarded-client-cert")) << r->body;

  // %START_TIME(%s.%3f)%: seconds since the epoch with milliseconds.
  ASSERT_TRUE(h.contains("x-request-start") && h["x-request-start"].is_string()) << r->body;
  const std::string start = h["x-request-start"];
  EXPECT_TRUE(std::regex_match(start, std::regex(R"(^\d+\.\d{3}$)"))) << start;
  const double t = std::strtod(start.c_str(), nullptr);
  EXPECT_GE(t, before - 1.0) << start;  // %s.%3f truncates; allow clock granularity
  EXPECT_LE(t, after + 1.0) << start;

  // add appends to what the client sent; it does not replace it.
  auto r2 = mesh_.get("backend-service", "/", {{"x-custom-trace", "client"}});
  ASSERT_OK(r2);
  ASSERT_EQ(r2->status, 200) << r2->summary();
  const std::string trace = r2->json()["headers"].value("x-custom-trace", "");
  EXPECT_NE(trace.find("client"), std::string::npos) << r2->body;
  EXPECT_NE(trace.find("mesh-routed"), std::string::npos) << r2->body;
}

TEST_F(SeedHeaders, ClientSeesTheResponseHeaderOperations) {
  // sluice-upstream adds each x-upstream-response-header to its answer.
  auto r = mesh_.get("backend-service", "/page",
                     {{"x-upstream-response-header", "server: upstream-httpd/2.4"},
                      {"x-upstream-response-header", "x-powered-by: PHP/8.1"},
                      {"x-upstream-response-header", "x-kept: yes"}});
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary() << out();
  EXPECT_EQ(r->header("x-kept"), "yes") << "the upstream's headers did not come through at all";
  EXPECT_EQ(r->header("server"), std::nullopt);
  EXPECT_EQ(r->header("x-powered-by"), std::nullopt);
  EXPECT_EQ(r->header("strict-transport-security"), "max-age=31536000; includeSubDomains");
  EXPECT_EQ(r->header("x-content-type-options"), "nosniff");

  // set overwrites a value the upstream chose itself.
  auto r2 = mesh_.get("backend-service", "/", {{"x-upstream-response-header", "x-content-type-options: off"}});
  ASSERT_OK(r2);
  ASSERT_EQ(r2->status, 200) << r2->summary();
  std::vector<std::string> values;
  for (const auto& hd : r2->headers) {
    if (hd.name.size() == 22 && strcasecmp(hd.name.c_str(), "x-content-type-options") == 0) values.push_back(hd.value);
  }
  EXPECT_EQ(values, std::vector<std::string>{"nosniff"});

  // Error answers of the upstream get the same treatment.
  auto r3 = mesh_.get("backend-service", "/?status=404", {{"x-upstream-response-header", "server: x"}});
  ASSERT_OK(r3);
  EXPECT_EQ(r3->status, 404) << r3->summary();
  EXPECT_EQ(r3->header("server"), std::nullopt);
  EXPECT_EQ(r3->header("x-content-type-options"), "nosniff");
}

// ---------------------------------------------------------------- redirect, directResponse

// Not a seed example: the two actions that answer in the proxy itself.
constexpr std::string_view kLocalReplies = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shop
  namespace: default
spec:
  hosts:
  - shop.default.svc.cluster.local
  addresses:
  - 127.10.0.15
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${SHOP_PORT}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  namespace: default
spec:
  hosts:
  - shop
  http:
  - match:
    - uri:
        prefix: /old-catalog
    redirect:
      uri: /catalog
      authority: shop.example.com
      redirectCode: 308
  - match:
    - uri:
        exact: /maintenance
    directResponse:
      status: 503
      body:
        string: "down for maintenance"
  - route:
    - destination:
        host: shop
)";

TEST(LocalReplies, RedirectAndDirectResponse) {
  TempDir tmp;
  Mesh mesh{tmp};
  ASSERT_OK(mesh.startUpstreams({"shop"}));
  auto cfg = renderTemplate(kLocalReplies, mesh.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh.writeConfig("shop.yaml", *cfg));
  ASSERT_OK(mesh.startDaemon());

  auto r = mesh.get("shop:8080", "/old-catalog/items?page=2");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 308) << r->summary();
  // `uri` replaces the whole path; the query stays.
  EXPECT_EQ(r->header("location"), "http://shop.example.com/catalog?page=2");

  auto d = mesh.get("shop:8080", "/maintenance");
  ASSERT_OK(d);
  EXPECT_EQ(d->status, 503) << d->summary();
  EXPECT_EQ(d->body, "down for maintenance");
  EXPECT_EQ(upstreamName(*d), "");

  EXPECT_EQ(mesh.counter("shop"), 0) << "a local reply reached the upstream";
  EXPECT_EQ(mesh.servedBy("shop:8080", "/maintenance/x"), "shop");
  EXPECT_EQ(mesh.counter("shop"), 1);
}

}  // namespace
}  // namespace sluice::itest
