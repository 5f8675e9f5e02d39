// The seed's local rate limit (configs/seed/local-rate-limit.yaml, an
// EnvoyFilter inserting envoy.filters.http.local_ratelimit on GATEWAY
// listeners) served by sluiced: exact admission with one worker and with
// two (the bucket is the node's, not one per worker), the answer's status
// and headers, shadow mode (filter_enforced 0), refills over time, a
// SIDECAR_OUTBOUND limit on one port only, and buckets kept across a reload.
// Gateway listeners bind 127.0.0.1.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "mesh.h"
#include "proxy_fixture.h"

namespace sluice::itest {
namespace {

using proxy::eventually;

std::string gateway(uint16_t port) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: Gateway\n"
         "metadata: {name: edge, namespace: istio-system}\n"
         "spec:\n"
         "  selector: {istio: ingress}\n"
         "  servers:\n"
         "  - port: {number: " + std::to_string(port) + ", name: http, protocol: HTTP}\n"
         "    hosts: [\"*\"]\n"
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: ServiceEntry\n"
         "metadata: {name: frontend}\n"
         "spec:\n"
         "  hosts: [frontend.test]\n"
         "  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]\n"
         "  resolution: STATIC\n"
         "  endpoints: [{address: 127.0.0.1, ports: {http: ${FRONTEND_SERVICE_PORT}, http-alt: "
         "${FRONTEND_SERVICE_PORT}}}]\n"
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata: {name: edge, namespace: istio-system}\n"
         "spec:\n"
         "  hosts: [\"*\"]\n"
         "  gateways: [edge]\n"
         "  http: [{route: [{destination: {host: frontend.test, port: {number: 80}}}]}]\n";
}

class LocalRateLimitTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(mesh_.startUpstreams({"frontend-service"})); }

  // The seed's EnvoyFilter with its bucket (and enforcement) replaced, a
  // Gateway on a free port, then the daemon.
  void start(int workers, const std::string& maxTokens, const std::string& perFill, const std::string& interval,
             const std::string& enforced = "100") {
    port_ = freePort();
    auto text = gateway(port_);
    mesh_.setVar("FRONTEND_SERVICE_PORT", std::to_string(mesh_.upstreamPort("frontend-service")));
    auto rendered = renderTemplate(text, mesh_.vars());
    ASSERT_OK(rendered);
    ASSERT_OK(mesh_.writeConfig("edge.yaml", *rendered));
    ASSERT_OK(mesh_.addSeedVariant("local-rate-limit.yaml", seedReplacements(maxTokens, perFill, interval, enforced)));
    ASSERT_OK(mesh_.startDaemon(workers, 10000ms, {"--gateway-bind", "127.0.0.1"}));
  }
  static std::vector<std::pair<std::string, std::string>> seedReplacements(const std::string& maxTokens,
                                                                          const std::string& perFill,
                                                                          const std::string& interval,
                                                                          const std::string& enforced) {
    return {{"max_tokens: 1000", "max_tokens: " + maxTokens},
            {"tokens_per_fill: 1000", "tokens_per_fill: " + perFill},
            {"fill_interval: 60s", "fill_interval: " + interval},
            {"runtime_key: local_rate_limit_enforced\n            default_value:\n              numerator: 100",
             "runtime_key: local_rate_limit_enforced\n            default_value:\n              numerator: " + enforced}};
  }
  // One request on a new connection (so with two workers they spread).
  int status(const std::string& target = "/") {
    auto r = httpRequest(port_, {.method = "GET", .target = target, .headers = {{"Host", "edge.test"}}}, 3000ms);
    return r ? r->status : -1;
  }
  int64_t counter(const std::string& name) { return mesh_.stat("http_local_rate_limiter.http_local_rate_limit." + name); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
  uint16_t port_ = 0;
};

TEST_F(LocalRateLimitTest, TheSeedsBucketAdmitsExactlyMaxTokensAndAnswers429WithItsHeaders) {
  ASSERT_NO_FATAL_FAILURE(start(1, "10", "10", "60s"));
  int ok = 0, limited = 0;
  for (int i = 0; i < 15; ++i) {
    auto r = httpRequest(port_, {.method = "GET", .target = "/", .headers = {{"Host", "edge.test"}}}, 3000ms);
    ASSERT_OK(r);
    if (r->status == 200) {
      ++ok;
      EXPECT_FALSE(r->header("x-envoy-ratelimited"));
    } else {
      ++limited;
      EXPECT_EQ(r->status, 429);
      EXPECT_EQ(r->header("x-envoy-ratelimited").value_or(""), "true");
      EXPECT_EQ(r->header("x-rate-limited").value_or(""), "true");
      EXPECT_EQ(r->body, "local_rate_limited");
    }
  }
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(limited, 5);
  EXPECT_EQ(counter("enabled"), 15);
  EXPECT_EQ(counter("ok"), 10);
  EXPECT_EQ(counter("rate_limited"), 5);
  EXPECT_EQ(counter("enforced"), 5);
  EXPECT_NE(mesh_.prometheus().find(
                "envoy_http_local_rate_limit_enforced{envoy_local_http_ratelimit_prefix=\"http_local_rate_limiter\"} 5"),
            std::string::npos);
  // Mesh traffic is not a Gateway's: the GATEWAY patch leaves it alone.
  EXPECT_EQ(mesh_.servedBy("frontend.test:80"), "frontend-service");
  // Istio's metrics carry the code and Envoy's flag.
  const std::string prom = mesh_.prometheus();
  EXPECT_NE(prom.find("response_flags=\"RL\""), std::string::npos) << prom;
}

TEST_F(LocalRateLimitTest, TwoWorkersShareOneBucketAndRefillsAddExactlyTokensPerFill) {
  ASSERT_NO_FATAL_FAILURE(start(2, "20", "10", "500ms"));
  // Four clients as fast as they go for ~1.6 s: whatever the worker each
  // connection lands on, the node admits 20 + fills x 10.
  std::atomic<int> ok{0}, other{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      while (std::chrono::steady_clock::now() - t0 < 1600ms) {
        const int s = status();
        if (s == 200) ++ok;
        else if (s != 429) ++other;
      }
    });
  }
  for (auto& t : clients) t.join();
  const int64_t elapsedMs = proxy::msSince(t0);
  EXPECT_EQ(other.load(), 0);
  // The bucket started at the daemon's start, a little before t0: allow
  // one fill either way.
  const int fills = int(elapsedMs / 500);
  EXPECT_GE(ok.load(), 20 + (fills - 1) * 10) << elapsedMs << " ms";
  EXPECT_LE(ok.load(), 20 + (fills + 1) * 10) << elapsedMs << " ms";
  EXPECT_EQ(counter("ok"), ok.load());
  EXPECT_GT(counter("rate_limited"), 0);
}

TEST_F(LocalRateLimitTest, ShadowModeCountsButNeverRefuses) {
  ASSERT_NO_FATAL_FAILURE(start(1, "3", "3", "60s", /*enforced=*/"0"));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(status(), 200);
  EXPECT_EQ(counter("ok"), 3);
  EXPECT_EQ(counter("rate_limited"), 5);
  EXPECT_EQ(counter("enforced"), 0);
}

TEST_F(LocalRateLimitTest, AReloadKeepsTheBucketAndOtherPatchesAreReportedAndIgnored) {
  ASSERT_NO_FATAL_FAILURE(start(1, "4", "4", "60s"));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(status(), 200);
  EXPECT_EQ(status(), 429);
  // An EnvoyFilter Sluice cannot apply (a Lua filter) loads beside it: the
  // config serves, the patch is reported, the bucket stays empty.
  ASSERT_OK(mesh_.applyConfig("lua.yaml",
                              "apiVersion: networking.istio.io/v1alpha3\n"
                              "kind: EnvoyFilter\n"
                              "metadata: {name: lua, namespace: istio-system}\n"
                              "spec:\n"
                              "  configPatches:\n"
                              "  - applyTo: HTTP_FILTER\n"
                              "    match: {context: SIDECAR_OUTBOUND}\n"
                              "    patch:\n"
                              "      operation: INSERT_BEFORE\n"
                              "      value: {name: envoy.filters.http.lua, typed_config: {\"@type\": "
                              "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}}\n"));
  EXPECT_EQ(status(), 429) << "a reload refilled the bucket";
  EXPECT_TRUE(eventually([&] {
    return mesh_.logs().find("HTTP_FILTER INSERT_BEFORE envoy.filters.http.lua is not supported") != std::string::npos;
  }, 2000ms)) << mesh_.logs();
  EXPECT_EQ(counter("enforced"), 2);
}

TEST_F(LocalRateLimitTest, AnOutboundLimitAppliesToItsPortOnly) {
  ASSERT_NO_FATAL_FAILURE(start(1, "1000", "1000", "60s"));
  ASSERT_OK(mesh_.applyConfig("outbound.yaml",
                              "apiVersion: networking.istio.io/v1alpha3\n"
                              "kind: EnvoyFilter\n"
                              "metadata: {name: outbound-limit, namespace: istio-system}\n"
                              "spec:\n"
                              "  configPatches:\n"
                              "  - applyTo: HTTP_FILTER\n"
                              "    match: {context: SIDECAR_OUTBOUND, listener: {portNumber: 8080}}\n"
                              "    patch:\n"
                              "      operation: INSERT_BEFORE\n"
                              "      value:\n"
                              "        name: envoy.filters.http.local_ratelimit\n"
                              "        typed_config:\n"
                              "          \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n"
                              "          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
                              "          value:\n"
                              "            statPrefix: outbound_8080\n"
                              "            tokenBucket: {maxTokens: 2, tokensPerFill: 1, fillInterval: 60s}\n"
                              "            filterEnabled: {defaultValue: {numerator: 100}}\n"
                              "            filterEnforced: {defaultValue: {numerator: 10000, denominator: TEN_THOUSAND}}\n"
                              "            status: {code: 503}\n"));
  auto get = [&](const std::string& host) {
    auto r = mesh_.get(host, "/");
    return r ? r->status : -1;
  };
  EXPECT_EQ(get("frontend.test:8080"), 200);
  EXPECT_EQ(get("frontend.test:8080"), 200);
  EXPECT_EQ(get("frontend.test:8080"), 503);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(get("frontend.test:80"), 200) << "port 80 has no limit";
  EXPECT_EQ(mesh_.stat("outbound_8080.http_local_rate_limit.enforced"), 1);
  EXPECT_EQ(status(), 200) << "the Gateway's own bucket is untouched";
}

// Istio's per-route form: the filter in the chain without a bucket, and an
// HTTP_ROUTE patch giving one route its own settings
// (typed_per_filter_config), with a descriptor bucket for requests its
// rate_limits actions tag. Other routes stay unlimited.
TEST_F(LocalRateLimitTest, APerRouteLimitWithADescriptorBucket) {
  ASSERT_NO_FATAL_FAILURE(start(1, "1000", "1000", "60s"));
  ASSERT_OK(mesh_.applyConfig("per-route.yaml",
                              "apiVersion: networking.istio.io/v1\n"
                              "kind: VirtualService\n"
                              "metadata: {name: frontend}\n"
                              "spec:\n"
                              "  hosts: [frontend.test]\n"
                              "  http:\n"
                              "  - name: api\n"
                              "    match: [{uri: {prefix: /api/}}]\n"
                              "    route: [{destination: {host: frontend.test, port: {number: 80}}}]\n"
                              "  - name: rest\n"
                              "    route: [{destination: {host: frontend.test, port: {number: 80}}}]\n"
                              "---\n"
                              "apiVersion: networking.istio.io/v1alpha3\n"
                              "kind: EnvoyFilter\n"
                              "metadata: {name: per-route, namespace: istio-system}\n"
                              "spec:\n"
                              "  configPatches:\n"
                              "  - applyTo: HTTP_FILTER\n"
                              "    match: {context: SIDECAR_OUTBOUND}\n"
                              "    patch:\n"
                              "      operation: INSERT_BEFORE\n"
                              "      value:\n"
                              "        name: envoy.filters.http.local_ratelimit\n"
                              "        typed_config:\n"
                              "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
                              "          stat_prefix: http_local_rate_limiter\n"
                              "  - applyTo: HTTP_ROUTE\n"
                              "    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {route: {name: api}}}}\n"
                              "    patch:\n"
                              "      operation: MERGE\n"
                              "      value:\n"
                              "        route:\n"
                              "          rate_limits:\n"
                              "          - actions: [{header_value_match: {descriptor_value: beta, headers: [{name: x-beta, present_match: true}]}}]\n"
                              "        typed_per_filter_config:\n"
                              "          envoy.filters.http.local_ratelimit:\n"
                              "            \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n"
                              "            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
                              "            value:\n"
                              "              stat_prefix: api_limit\n"
                              "              token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}\n"
                              "              descriptors:\n"
                              "              - entries: [{key: header_match, value: beta}]\n"
                              "                token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}\n"
                              "              filter_enabled: {default_value: {numerator: 100}}\n"
                              "              filter_enforced: {default_value: {numerator: 100}}\n"));
  auto get = [&](const std::string& path, std::vector<Header> headers = {}) {
    auto r = mesh_.get("frontend.test", path, std::move(headers));
    return r ? r->status : -1;
  };
  // A beta request takes its descriptor's token and the route's default one
  // (always_consume_default_token_bucket); the next beta one finds its
  // descriptor bucket empty.
  EXPECT_EQ(get("/api/a", {{"x-beta", "1"}}), 200);
  EXPECT_EQ(get("/api/a", {{"x-beta", "1"}}), 429);
  // The route's own bucket had 4, one taken: three more, then none.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(get("/api/b"), 200) << i;
  EXPECT_EQ(get("/api/b"), 429);
  // The other route has no settings of its own, and the filter no bucket.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(get("/home"), 200) << i;
  EXPECT_EQ(mesh_.stat("api_limit.http_local_rate_limit.ok"), 4);
  EXPECT_EQ(mesh_.stat("api_limit.http_local_rate_limit.rate_limited"), 2);
}

}  // namespace
}  // namespace sluice::itest
