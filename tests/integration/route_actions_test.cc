// HTTPRoute actions the seed document has no example of: corsPolicy,
// delegate VirtualServices, the sluice.io/idempotent-retries-only
// annotation, request bodies replayed on retry (and the replay limit),
// mirrored bodies, and many injected delays at once. Real sluiced,
// sluice-upstream and RecordingUpstream processes on loopback.
#include <gtest/gtest.h>

#include <thread>

#include "mesh.h"
#include "proxy_fixture.h"
#include "recording_upstream.h"

namespace sluice::itest {
namespace {

// A STATIC ServiceEntry `name` on `vip`:8080 with `endpoints` (YAML flow
// maps, one per line).
std::string serviceEntry(const std::string& name, const std::string& vip,
                         const std::vector<std::string>& endpoints) {
  std::string out = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: " + name +
                    "\nspec:\n  hosts: [" + name + ".default.svc.cluster.local]\n  addresses: [" + vip +
                    "]\n  ports:\n  - {number: 8080, name: http, protocol: HTTP}\n"
                    "  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n";
  for (const std::string& e : endpoints) out += "  - " + e + "\n";
  return out;
}

// One service, `shop`, with endpoints shop-a and shop-b (sluice-upstreams).
const std::string kServices =
    serviceEntry("shop", "127.10.0.40",
                 {"{address: 127.0.0.1, ports: {http: ${SHOP_A_PORT}}, labels: {version: a}}",
                  "{address: 127.0.0.1, ports: {http: ${SHOP_B_PORT}}, labels: {version: b}}"}) +
    R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
spec:
  host: shop
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
)";

// For the mirror tests: `audit`, a RecordingUpstream on ${AUDIT_PORT}.
const std::string kAudit = serviceEntry("audit", "127.10.0.41", {"{address: 127.0.0.1, ports: {http: ${AUDIT_PORT}}}"});

const std::string kShop = "shop:8080";

class RouteActions : public ::testing::Test {
 protected:
  void start(std::string_view virtualServices, bool withAudit = false) {
    ASSERT_OK(mesh_.startUpstreams({"shop-a", "shop-b"}));
    std::string config(kServices);
    if (withAudit) config += "---\n" + kAudit;
    auto rendered = renderTemplate(config, mesh_.vars());
    ASSERT_OK(rendered);
    ASSERT_OK(mesh_.writeConfig("services.yaml", *rendered));
    ASSERT_OK(mesh_.writeConfig("routes.yaml", virtualServices));
    ASSERT_OK(mesh_.startDaemon());
  }
  std::expected<Response, std::string> send(const std::string& method, const std::string& target,
                                            std::vector<Header> headers = {}, std::string body = {}) {
    headers.push_back({"Host", kShop});
    return httpRequest(mesh_.outboundPort(),
                       {.method = method, .target = target, .headers = headers, .body = std::move(body)}, 10000ms);
  }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

constexpr std::string_view kCors = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - match:
    - uri: {prefix: /ignore}
    corsPolicy:
      allowOrigins: [{exact: https://app.example.com}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route:
    - destination: {host: shop, subset: a}
  - corsPolicy:
      allowOrigins:
      - exact: https://app.example.com
      - regex: "https://.*\\.partner\\.org"
      allowMethods: [GET, POST, PUT]
      allowHeaders: [x-api-key, content-type]
      exposeHeaders: [x-trace]
      maxAge: 24h
      allowCredentials: true
    route:
    - destination: {host: shop, subset: a}
)";

// An allowed preflight is answered by the proxy with the policy; the
// upstream never sees it.
TEST_F(RouteActions, CorsPreflightIsAnsweredForAnAllowedOrigin) {
  ASSERT_NO_FATAL_FAILURE(start(kCors));
  auto r = send("OPTIONS", "/items",
                {{"Origin", "https://shop.partner.org"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->summary();
  EXPECT_EQ(r->header("access-control-allow-origin"), "https://shop.partner.org");
  EXPECT_EQ(r->header("access-control-allow-methods"), "GET,POST,PUT");
  EXPECT_EQ(r->header("access-control-allow-headers"), "x-api-key,content-type");
  EXPECT_EQ(r->header("access-control-max-age"), "86400");
  EXPECT_EQ(r->header("access-control-allow-credentials"), "true");
  EXPECT_EQ(mesh_.counter("shop-a"), 0) << "a preflight the policy answers does not reach the upstream";
  EXPECT_EQ(mesh_.stat("cors_origin_valid"), 1);
}

// unmatchedPreflights: FORWARD (the default) lets an unknown origin's
// preflight through, without CORS headers; IGNORE answers it bare.
TEST_F(RouteActions, CorsUnmatchedPreflightIsForwardedOrIgnored) {
  ASSERT_NO_FATAL_FAILURE(start(kCors));
  std::vector<Header> preflight = {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "GET"}};
  auto fwd = send("OPTIONS", "/items", preflight);
  ASSERT_OK(fwd);
  EXPECT_EQ(upstreamName(*fwd), "shop-a") << fwd->summary();
  EXPECT_FALSE(fwd->header("access-control-allow-origin").has_value());
  auto ign = send("OPTIONS", "/ignore/x", preflight);
  ASSERT_OK(ign);
  EXPECT_EQ(ign->status, 200);
  EXPECT_EQ(upstreamName(*ign), "") << "answered by the proxy";
  EXPECT_FALSE(ign->header("access-control-allow-origin").has_value());
  EXPECT_EQ(mesh_.counter("shop-a"), 1);
  EXPECT_EQ(mesh_.stat("cors_origin_invalid"), 2);
}

// An actual request from an allowed origin goes upstream and comes back
// with the origin echoed and the exposed headers; another origin gets none.
TEST_F(RouteActions, CorsActualRequestGetsTheAllowOriginHeaders) {
  ASSERT_NO_FATAL_FAILURE(start(kCors));
  auto ok = send("GET", "/items", {{"Origin", "https://app.example.com"}});
  ASSERT_OK(ok);
  EXPECT_EQ(upstreamName(*ok), "shop-a");
  EXPECT_EQ(ok->header("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(ok->header("access-control-expose-headers"), "x-trace");
  EXPECT_EQ(ok->header("access-control-allow-credentials"), "true");
  auto other = send("GET", "/items", {{"Origin", "https://app.example.com.evil"}});
  ASSERT_OK(other);
  EXPECT_EQ(upstreamName(*other), "shop-a");
  EXPECT_FALSE(other->header("access-control-allow-origin").has_value());
  auto plain = send("GET", "/items");
  ASSERT_OK(plain);
  EXPECT_FALSE(plain->header("access-control-allow-origin").has_value());
}

// Response header values may read the request (%REQ(x)%) although its head
// is long gone when the response arrives.
TEST_F(RouteActions, ResponseHeadersReadTheRequest) {
  ASSERT_NO_FATAL_FAILURE(start(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - route:
    - destination: {host: shop, subset: a}
      headers:
        response:
          set:
            x-served-for: "%REQ(x-user)% via %REQ(x-missing?host)%"
            x-trace: "%REQ(x-request-id)%"
)"));
  // A body after the head: its bytes take the head's place in the input
  // buffer before the response comes back.
  auto r = send("POST", "/orders", {{"x-user", "alice"}, {"x-request-id", "rid-42"}}, std::string(5000, 'p'));
  ASSERT_OK(r);
  EXPECT_EQ(upstreamName(*r), "shop-a") << r->summary();
  EXPECT_EQ(r->header("x-served-for"), "alice via shop:8080");
  EXPECT_EQ(r->header("x-trace"), "rid-42");
}

// A root VirtualService hands /api to a delegate (no hosts) that splits it
// by path; the root's timeout and headers apply where the delegate sets
// none.
TEST_F(RouteActions, DelegateRoutesAreMergedIntoTheRoot) {
  ASSERT_NO_FATAL_FAILURE(start(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - match:
    - uri: {prefix: /api}
    delegate: {name: shop-api}
    headers:
      request:
        set: {x-from-root: "yes"}
  - route:
    - destination: {host: shop, subset: b}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop-api
spec:
  http:
  - match:
    - uri: {prefix: /api/orders}
    route:
    - destination: {host: shop, subset: a}
  - match:
    - uri: {prefix: /elsewhere}
    route:
    - destination: {host: shop, subset: a}
  - route:
    - destination: {host: shop, subset: b}
    headers:
      request:
        set: {x-from-delegate: "yes"}
)"));
  auto orders = send("GET", "/api/orders/7");
  ASSERT_OK(orders);
  EXPECT_EQ(upstreamName(*orders), "shop-a") << orders->summary() << out();
  auto j = orders->json();
  EXPECT_EQ(j["headers"].value("x-from-root", ""), "yes") << orders->body;
  auto rest = send("GET", "/api/other");
  ASSERT_OK(rest);
  EXPECT_EQ(upstreamName(*rest), "shop-b");
  EXPECT_EQ(rest->json()["headers"].value("x-from-delegate", ""), "yes") << rest->body;
  // The delegate's /elsewhere rule lies outside the root's /api: dropped,
  // so /elsewhere falls through to the root's catch-all (shop-b), without
  // the root's /api headers.
  auto elsewhere = send("GET", "/elsewhere");
  ASSERT_OK(elsewhere);
  EXPECT_EQ(upstreamName(*elsewhere), "shop-b");
  EXPECT_EQ(elsewhere->json()["headers"].value("x-from-root", ""), "");
}

// The annotated route, to `destination` (YAML flow map).
std::string idempotentRoute(std::string_view destination) {
  return std::string(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  annotations:
    sluice.io/idempotent-retries-only: "true"
spec:
  hosts: [shop]
  http:
  - retries:
      attempts: 2
      retryOn: 5xx,connect-failure
    route:
    - destination: )") + std::string(destination) + "\n";
}

// Under the annotation a POST that reached the upstream is not retried on
// its 503; a GET still is.
TEST_F(RouteActions, IdempotentRetriesOnlyKeepsPostsFromRunningTwice) {
  ASSERT_NO_FATAL_FAILURE(start(idempotentRoute("{host: shop, subset: a}")));
  auto post = send("POST", "/orders?fail_first=1", {}, "{\"qty\":1}");
  ASSERT_OK(post);
  EXPECT_EQ(post->status, 503) << post->summary();
  EXPECT_EQ(mesh_.counter("shop-a"), 1) << "the POST ran once";
  mesh_.resetCounters();
  auto get = send("GET", "/orders?fail_first=1");
  ASSERT_OK(get);
  EXPECT_EQ(get->status, 200) << get->summary();
  EXPECT_EQ(mesh_.counter("shop-a"), 2);
}

// /config_dump shows each route's effective retry policy: the route's own,
// and Istio's default (2 retries, 503 retriable) where a route has none.
TEST_F(RouteActions, ConfigDumpShowsTheEffectiveRetryPolicy) {
  mesh_.setVar("AUDIT_PORT", std::to_string(freePort()));  // audit: a service without a VirtualService
  ASSERT_NO_FATAL_FAILURE(start(idempotentRoute("{host: shop, subset: a}"), /*withAudit=*/true));
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  std::map<std::string, nlohmann::json> policies;  // virtual host -> first route's policy
  for (const auto& rc : (*dump)["routes"])
    for (const auto& vh : rc["virtual_hosts"]) policies[vh["name"]] = vh["routes"][0]["retry_policy"];
  ASSERT_TRUE(policies.contains("shop.default.svc.cluster.local:8080")) << dump->dump();
  const auto& own = policies["shop.default.svc.cluster.local:8080"];
  EXPECT_EQ(own["num_retries"], 2);
  EXPECT_EQ(own["idempotent_only"], true);
  EXPECT_TRUE(own["retriable_status_codes"].empty()) << "retryOn 5xx,connect-failure names no codes";
  ASSERT_TRUE(policies.contains("audit.default.svc.cluster.local:8080")) << dump->dump();
  const auto& dflt = policies["audit.default.svc.cluster.local:8080"];
  EXPECT_EQ(dflt["num_retries"], 2);
  EXPECT_EQ(dflt["retriable_status_codes"], nlohmann::json::array({503}));
  EXPECT_FALSE(dflt.contains("idempotent_only"));
}

// `sluicectl routes` prints what each route does, Istio's default retry
// policy included.
TEST_F(RouteActions, SluicectlRoutesListsTheActions) {
  mesh_.setVar("SHOP_A_PORT", "18081");
  mesh_.setVar("SHOP_B_PORT", "18082");
  mesh_.setVar("AUDIT_PORT", "18083");
  auto services = renderTemplate(kServices + "---\n" + kAudit, mesh_.vars());
  ASSERT_OK(services);
  ASSERT_OK(mesh_.writeConfig("services.yaml", *services));
  ASSERT_OK(mesh_.writeConfig("routes.yaml", R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  annotations: {sluice.io/idempotent-retries-only: "true"}
spec:
  hosts: [shop]
  http:
  - timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms}
    fault:
      abort: {httpStatus: 503, percentage: {value: 1}}
    mirrors:
    - destination: {host: audit}
      percentage: {value: 12.5}
    route:
    - destination: {host: shop}
)"));
  auto p = Process::start({binaryPath("sluicectl").string(), "routes", mesh_.configDir().string()},
                          tmp_.path() / "sluicectl.log");
  ASSERT_OK(p);
  auto st = p->wait(10000ms);
  ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << p->logText();
  std::string text = p->logText();
  EXPECT_NE(text.find("actions: retries 3 (per try 500ms) idempotent-only, timeout 2000ms, fault abort, "
                      "mirror outbound|8080||audit.default.svc.cluster.local 12.5%"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("actions: retries 2\n"), std::string::npos) << "audit's default route\n" << text;
}

// ... but a POST whose attempt never reached an upstream (connection
// refused) is retried, to the other endpoint.
TEST_F(RouteActions, IdempotentRetriesOnlyStillRetriesConnectFailures) {
  ASSERT_OK(mesh_.startUpstreams({"shop-b"}));
  // Endpoint a is a port nobody listens on; b is alive.
  mesh_.setVar("SHOP_A_PORT", std::to_string(freePort()));
  std::string services(kServices);
  auto rendered = renderTemplate(services, mesh_.vars());
  ASSERT_OK(rendered);
  ASSERT_OK(mesh_.writeConfig("services.yaml", *rendered));
  ASSERT_OK(mesh_.writeConfig("routes.yaml", idempotentRoute("{host: shop}")));
  ASSERT_OK(mesh_.startDaemon());
  // Round robin: whichever worker takes a request, it tries the dead
  // endpoint first for every other one of its requests.
  for (int i = 0; i < 10; ++i) {
    auto post = send("POST", "/orders", {}, "{\"qty\":1}");
    ASSERT_OK(post);
    EXPECT_EQ(post->status, 200) << post->summary() << out();
  }
  EXPECT_EQ(mesh_.counter("shop-b"), 10);
  EXPECT_GE(mesh_.stat("upstream_rq_retry"), 1);
}

// retryIgnorePreviousHosts (default true) steers a retry away from every
// host the request already tried, not just the last one: with two of three
// endpoints dead and two retries, the third try lands on the live one.
// Avoiding only the last host fails one request in six (about 10 of 60);
// avoiding all of them (up to 5 re-picks, as Envoy) about 0.5% (P(> 3 of 60)
// < 0.1%).
TEST_F(RouteActions, RetriesAvoidEveryHostAlreadyTried) {
  ASSERT_OK(mesh_.startUpstreams({"live"}));
  mesh_.setVar("DEAD1_PORT", std::to_string(freePort()));
  mesh_.setVar("DEAD2_PORT", std::to_string(freePort()));
  auto cfg = renderTemplate(serviceEntry("trio", "127.10.0.42",
                                         {"{address: 127.0.0.1, ports: {http: ${DEAD1_PORT}}}",
                                          "{address: 127.0.0.1, ports: {http: ${DEAD2_PORT}}}",
                                          "{address: 127.0.0.1, ports: {http: ${LIVE_PORT}}}"}) +
                                R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: trio
spec:
  host: trio
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: trio
spec:
  hosts: [trio]
  http:
  - retries: {attempts: 2, retryOn: connect-failure}
    route:
    - destination: {host: trio}
)",
                            mesh_.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh_.writeConfig("trio.yaml", *cfg));
  ASSERT_OK(mesh_.startDaemon());
  int failed = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = mesh_.get("trio:8080", "/");
    ASSERT_OK(r);
    failed += r->status != 200;
  }
  EXPECT_LE(failed, 3) << "of 60" << out();
  EXPECT_EQ(mesh_.counter("live"), 60 - failed);
}

constexpr std::string_view kRetry503 = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - retries:
      attempts: 2
      retryOn: 503
    route:
    - destination: {host: shop, subset: a}
)";

// A retried POST carries its whole body again: the echo of the successful
// attempt reports every byte.
TEST_F(RouteActions, RetriedRequestsReplayTheirBody) {
  ASSERT_NO_FATAL_FAILURE(start(kRetry503));
  std::string body(100 * 1024, 'x');
  auto r = send("POST", "/upload?fail_first=1", {{"Content-Type", "application/octet-stream"}}, body);
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->summary() << out();
  EXPECT_EQ(mesh_.counter("shop-a"), 2);
  auto j = r->json();
  EXPECT_EQ(j.value("body_bytes", -1), int64_t(body.size())) << r->body.substr(0, 300);
  EXPECT_EQ(j["headers"].value("x-envoy-attempt-count", ""), "2");
}

// A body past the replay buffer (256 KiB) cannot be sent again: the 503
// stands, and retry_or_shadow_abandoned says why.
TEST_F(RouteActions, BodiesPastTheReplayLimitAreNotRetried) {
  ASSERT_NO_FATAL_FAILURE(start(kRetry503));
  std::string body(600 * 1024, 'y');
  auto r = send("POST", "/upload?fail_first=1", {}, body);
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 503) << r->summary();
  EXPECT_EQ(mesh_.counter("shop-a"), 1);
  EXPECT_GE(mesh_.stat("retry_or_shadow_abandoned"), 1);
}

// A mirrored POST carries the body to the mirror, with the -shadow Host,
// while the client gets the primary's answer.
TEST_F(RouteActions, MirrorsReceiveTheRequestBody) {
  auto audit = RecordingUpstream::start("audit");
  ASSERT_OK(audit);
  mesh_.setVar("AUDIT_PORT", std::to_string((*audit)->port()));
  ASSERT_NO_FATAL_FAILURE(start(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - route:
    - destination: {host: shop, subset: a}
    mirrors:
    - destination: {host: audit}
)", /*withAudit=*/true));
  std::string body(300 * 1024, 'z');
  for (int i = 0; i < 3; ++i) {
    auto r = send("POST", "/orders", {}, body);
    ASSERT_OK(r);
    EXPECT_EQ(upstreamName(*r), "shop-a") << r->summary();
  }
  ASSERT_TRUE((*audit)->waitForCount(3, 5000ms)) << out();
  for (const RecordedRequest& rec : (*audit)->requests()) {
    EXPECT_EQ(rec.method, "POST");
    EXPECT_EQ(rec.bodyBytes, body.size());
    EXPECT_EQ(rec.header("host"), "shop-shadow:8080");
  }
}

// Injected delays wait on the timer wheel: 400 requests delayed 1 s at once
// on 2 workers all finish in about a second, not 400 / 2 seconds.
TEST_F(RouteActions, ManyDelayedRequestsWaitTogether) {
  ASSERT_NO_FATAL_FAILURE(start(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - fault:
      delay: {fixedDelay: 1s, percentage: {value: 100}}
    route:
    - destination: {host: shop, subset: a}
)"));
  auto began = std::chrono::steady_clock::now();
  auto results = mesh_.sendMany({.target = "/", .headers = {{"Host", kShop}}}, 400, 400, 15000ms);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
  int ok = 0;
  for (const auto& t : results) ok += t.status == 200 && t.ms >= 950;
  EXPECT_EQ(ok, 400) << out();
  EXPECT_LT(took.count(), 5000) << "delays must not hold a worker";
  EXPECT_EQ(mesh_.stat("fault_delays_injected"), 400);
}

// Retries to a dead endpoint, mirrors abandoned mid-body, clients that
// leave during an injected delay: once the upstreams are gone (so no pooled
// connection stays open), the daemon holds exactly the descriptors it held
// before the traffic.
TEST_F(RouteActions, FailuresRetriesAndMirrorsLeaveNoDescriptorsBehind) {
  auto audit = RecordingUpstream::start("audit", 300ms);
  ASSERT_OK(audit);
  mesh_.setVar("AUDIT_PORT", std::to_string((*audit)->port()));
  ASSERT_OK(mesh_.startUpstreams({"shop-b"}));
  mesh_.setVar("SHOP_A_PORT", std::to_string(freePort()));  // dead
  auto services = renderTemplate(kServices + "---\n" + kAudit, mesh_.vars());
  ASSERT_OK(services);
  ASSERT_OK(mesh_.writeConfig("services.yaml", *services));
  ASSERT_OK(mesh_.writeConfig("routes.yaml", R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop]
  http:
  - match:
    - uri: {prefix: /slow}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 100}}
    route:
    - destination: {host: shop}
  - retries:
      attempts: 3
      retryOn: 5xx,connect-failure
    mirror: {host: audit}
    route:
    - destination: {host: shop}
)"));
  ASSERT_OK(mesh_.startDaemon());
  const pid_t pid = mesh_.daemon().pid();
  using proxy::fdCount;
  using proxy::RawConn;
  const int baseline = fdCount(pid);
  ASSERT_GT(baseline, 0);

  auto results = mesh_.sendMany({.target = "/orders?fail_first=5", .headers = {{"Host", kShop}}}, 40, 4);
  int answered = 0;
  for (const auto& t : results) answered += t.status == 200 || t.status == 503;
  EXPECT_EQ(answered, 40) << out();
  for (int i = 0; i < 5; ++i) {  // a body cut short: its mirror is abandoned
    auto c = RawConn::connect(mesh_.outboundPort());
    ASSERT_OK(c);
    ASSERT_OK(c->send("POST /orders HTTP/1.1\r\nHost: shop:8080\r\nContent-Length: 100000\r\n\r\n" +
                      std::string(20000, 'b')));
  }
  for (int i = 0; i < 5; ++i) {  // gone during the injected delay
    auto c = RawConn::connect(mesh_.outboundPort());
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /slow HTTP/1.1\r\nHost: shop:8080\r\n\r\n"));
  }
  std::this_thread::sleep_for(200ms);
  mesh_.upstream("shop-b")->stop();
  audit->reset();
  EXPECT_TRUE(proxy::eventually([&] { return fdCount(pid) <= baseline; }, 8000ms))
      << "fds " << fdCount(pid) << " vs baseline " << baseline << out();
  EXPECT_TRUE(mesh_.daemon().running()) << out();
  EXPECT_GE(mesh_.stat("shadow_rq_total"), 40);
}

}  // namespace
}  // namespace sluice::itest
