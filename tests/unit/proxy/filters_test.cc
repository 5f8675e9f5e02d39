// The request filters, each run against a real compiled route and a fake
// session: what they answer, what they pause for, what they hand on.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "config/loader.h"
#include "core/clock.h"
#include "proxy/filters/filters.h"
#include "proxy/stream.h"
#include "route/table.h"

namespace sluice::proxy {
namespace {

constexpr const char* kYaml = R"yaml(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.test]
  http:
  - match: [{uri: {prefix: /direct}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
    headers: {response: {set: {x-teapot: "yes"}}}
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /elsewhere, redirectCode: 308}
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.test"}]
      allowMethods: [GET, POST]
      exposeHeaders: [x-trace]
    route: [{destination: {host: shop.test}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: shop.test}}]
  - match: [{uri: {prefix: /grpc-abort}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: shop.test}}]
  - match: [{uri: {prefix: /slow}}]
    fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}, abort: {httpStatus: 429, percentage: {value: 100}}}
    route: [{destination: {host: shop.test}}]
  - match: [{uri: {regex: "/v1/(.*)"}}]
    rewrite: {uriRegexRewrite: {match: "/v1/(.*)", rewrite: "/v2/\\1"}, authority: backend.test}
    mirror: {host: shop.test}
    route:
    - destination: {host: shop.test}
      headers: {request: {set: {x-env: canary}, remove: [x-secret]}}
  - route: [{destination: {host: shop.test}}]
)yaml";

// A session that records what the filters ask of it.
class FakeSession final : public FilterCallbacks {
 public:
  explicit FakeSession(std::string_view rawHead, std::string_view yaml = kYaml) {
    config::LoadReport report;
    for (const auto& e : config::loadYaml(yaml, "shop.yaml", report)) ADD_FAILURE() << e.str();
    auto compiled = route::compile(report.resources, 1);
    EXPECT_TRUE(compiled.has_value());
    if (compiled) snapshot_ = *compiled;
    http::RequestHead parsed;
    http::ParseError err;
    EXPECT_EQ(http::parseRequestHead(rawHead.data(), rawHead.size(), {}, parsed, err), http::ParseStatus::Complete);
    stream_->adoptHead(parsed, rawHead.data());
    stream_->reqDone = true;
    EXPECT_TRUE(splitTarget(stream_->head.target, stream_->head.host, stream_->target));
    stream_->requestId = "rid-1";
    stream_->snapshot = snapshot_;
    const route::VirtualHost* vh = snapshot_->findVirtualHost(80, "shop.test", &stream_->port);
    EXPECT_NE(vh, nullptr);
    route::RequestView view;
    view.method = stream_->head.method;
    view.path = stream_->target.path;
    view.authority = stream_->target.authority;
    view.port = stream_->port;
    view.headers = &stream_->headers;
    stream_->vhost = vh;
    stream_->route = vh ? vh->match(view, &stream_->matched) : nullptr;
    EXPECT_NE(stream_->route, nullptr);
    if (stream_->route && !stream_->route->clusters.empty()) {
      stream_->wc = stream_->route->pick(0);
      stream_->cluster = stream_->wc->cluster;
    }
  }

  Stream& stream() override { return *stream_; }
  core::Rng& rng() override { return rng_; }
  const core::Clock& clock() const override { return clock_; }
  stats::StatsShard& stats() override { return stats_; }
  const sockaddr_in& downstreamRemote() const override { return peer_; }
  istio::HeaderContext headerContext() override {
    istio::HeaderContext ctx;
    ctx.requestId = stream_->requestId;
    ctx.requestHeaders = &stream_->headers;
    return ctx;
  }
  void sendLocalReply(int status, std::string_view body, std::string_view flags,
                      const http::HeaderMap* extraHeaders) override {
    ++replies;
    replyStatus = status;
    replyBody = body;
    replyFlags = flags;
    replyHeaders.clear();
    if (extraHeaders) extraHeaders->appendHttp1(replyHeaders);
  }
  void pauseFor(uint64_t ns) override { pausedNs = ns; }
  bool countInRedis(std::vector<RedisClient::Increment> keys, uint64_t timeoutNs) override {
    redisKeys.clear();
    for (const auto& k : keys) redisKeys.push_back(k.key + "/" + std::to_string(k.ttlSeconds));
    pausedNs = timeoutNs;
    return redisUp;
  }
  uint64_t unixSeconds() const override { return 1'700'000'042; }
  bool hasRedis() const override { return true; }
  bool callRateLimitService(const route::Cluster&, std::string_view, const std::vector<route::Descriptor>&,
                            uint64_t) override {
    return false;
  }
  void forwardUpstream() override { ++forwarded; }
  // The Redis call's answer, as the session would deliver it.
  FilterStatus answer(const RequestFilter& f, std::vector<int64_t> counts) {
    stream_->rateLimit.state = Stream::RateLimitCall::State::Counted;
    stream_->rateLimit.counts = std::move(counts);
    return f.onResume(*this);
  }
  sockaddr_in& peer() { return peer_; }

  int replies = 0, replyStatus = 0, forwarded = 0;
  std::string replyBody, replyFlags, replyHeaders;
  uint64_t pausedNs = 0;
  bool redisUp = true;
  std::vector<std::string> redisKeys;
  stats::StatsShard stats_;

 private:
  std::shared_ptr<const route::Snapshot> snapshot_;
  std::unique_ptr<Stream> stream_ = std::make_unique<Stream>(nullptr);
  core::Rng rng_{7};
  core::FakeClock clock_;
  sockaddr_in peer_{};
};

// The CORS fields the filter left for the response, as HTTP/1.1 lines.
std::string corsLines(const Stream& s) {
  std::string out;
  s.responseExtra.appendHttp1(out);
  return out;
}

std::string get(std::string_view path, std::string_view extra = "") {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: shop.test\r\n" + std::string(extra) + "\r\n";
}

TEST(DirectResponseFilter, AnswersWithTheRoutesBodyAndResponseHeaders) {
  std::string raw = get("/direct");
  FakeSession cb(raw);
  EXPECT_EQ(directResponseFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 418);
  EXPECT_EQ(cb.replyBody, "short and stout");
  EXPECT_EQ(cb.replyHeaders, "x-teapot: yes\r\n");
  EXPECT_EQ(cb.forwarded, 0);
}

TEST(DirectResponseFilter, RedirectsKeepTheRequestsAuthority) {
  std::string raw = get("/moved?q=1");
  FakeSession cb(raw);
  EXPECT_EQ(directResponseFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 308);
  EXPECT_EQ(cb.replyHeaders, "location: http://shop.test/elsewhere?q=1\r\n");
}

TEST(DirectResponseFilter, OtherRoutesGoOn) {
  std::string raw = get("/anything");
  FakeSession cb(raw);
  EXPECT_EQ(directResponseFilter().onRequestHead(cb), FilterStatus::Continue);
  EXPECT_EQ(cb.replies, 0);
}

TEST(CorsFilter, APreflightIsAnsweredHere) {
  std::string raw = "OPTIONS /cors HTTP/1.1\r\nHost: shop.test\r\nOrigin: https://app.test\r\n"
                    "Access-Control-Request-Method: POST\r\n\r\n";
  FakeSession cb(raw);
  EXPECT_EQ(corsFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 200);
  EXPECT_NE(cb.replyHeaders.find("access-control-allow-origin: https://app.test\r\n"), std::string::npos)
      << cb.replyHeaders;
  EXPECT_EQ(cb.stats_.get(stats::Counter::CorsOriginValid), 1u);
}

TEST(CorsFilter, ASimpleRequestGoesOnWithItsResponseHeaders) {
  std::string raw = get("/cors", "Origin: https://app.test\r\n");
  FakeSession cb(raw);
  EXPECT_EQ(corsFilter().onRequestHead(cb), FilterStatus::Continue);
  EXPECT_EQ(cb.replies, 0);
  EXPECT_NE(corsLines(cb.stream()).find("access-control-expose-headers: x-trace\r\n"), std::string::npos)
      << corsLines(cb.stream());
}

TEST(CorsFilter, AnOriginNotAllowedIsCountedAndGetsNoCorsHeaders) {
  std::string raw = get("/cors", "Origin: https://evil.test\r\n");
  FakeSession cb(raw);
  EXPECT_EQ(corsFilter().onRequestHead(cb), FilterStatus::Continue);
  EXPECT_EQ(corsLines(cb.stream()), "");
  EXPECT_EQ(cb.stats_.get(stats::Counter::CorsOriginInvalid), 1u);
}

TEST(FaultFilter, AbortAnswersInTheUpstreamsPlace) {
  std::string raw = get("/abort");
  FakeSession cb(raw);
  EXPECT_EQ(faultFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 503);
  EXPECT_EQ(cb.replyFlags, "FI");
  EXPECT_EQ(cb.stats_.get(stats::Counter::FaultAbortsInjected), 1u);
}

TEST(FaultFilter, AGrpcAbortCarriesItsStatusInHeaders) {
  std::string raw = get("/grpc-abort");
  FakeSession cb(raw);
  EXPECT_EQ(faultFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 200);
  EXPECT_EQ(cb.replyBody, "");
  EXPECT_NE(cb.replyHeaders.find("grpc-status: 14\r\n"), std::string::npos) << cb.replyHeaders;
}

TEST(FaultFilter, ADelayPausesTheChainThenTheAbortFollows) {
  std::string raw = get("/slow");
  FakeSession cb(raw);
  EXPECT_EQ(faultFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.pausedNs, 2'000'000'000u);
  EXPECT_EQ(cb.replies, 0);
  EXPECT_TRUE(cb.stream().faultDelayed);
  EXPECT_EQ(faultFilter().onResume(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.replyStatus, 429);
}

TEST(FaultFilter, ARouteWithoutFaultGoesOn) {
  std::string raw = get("/plain");
  FakeSession cb(raw);
  EXPECT_EQ(faultFilter().onRequestHead(cb), FilterStatus::Continue);
  EXPECT_EQ(cb.pausedNs, 0u);
}

TEST(RouterFilter, BuildsTheRewrittenHeadAndTheMirrorsThenForwards) {
  std::string raw = get("/v1/items?id=3", "X-Secret: s3\r\nUser-Agent: t\r\n");
  FakeSession cb(raw);
  EXPECT_EQ(routerFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.forwarded, 1);
  const Stream& s = cb.stream();
  const std::string& head = s.upstreamHead;
  EXPECT_EQ(head.rfind("GET /v2/items?id=3 HTTP/1.1\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("host: backend.test\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("x-envoy-original-path: /v1/items?id=3\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("x-env: canary\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("s3"), std::string::npos) << head;
  EXPECT_NE(head.find("x-request-id: rid-1\r\n"), std::string::npos) << head;
  // The attempt count and the blank line are each attempt's to add.
  EXPECT_NE(head.substr(head.size() - 2), "\r\n\r\n");
  ASSERT_EQ(s.pendingShadows.size(), 1u);
  EXPECT_NE(s.pendingShadows[0].head.find("host: backend.test-shadow\r\n"), std::string::npos)
      << s.pendingShadows[0].head;
  ASSERT_TRUE(s.retry.has_value());
  EXPECT_EQ(s.retry->attempt(), 1u);
}

TEST(RouterFilter, AWebSocketRequestIsNotMirrored) {
  std::string raw = get("/v1/chat", "Connection: upgrade\r\nUpgrade: websocket\r\n");
  FakeSession cb(raw);
  cb.stream().websocket = wantsWebSocket(cb.stream().head, cb.stream().headers);
  ASSERT_TRUE(cb.stream().websocket);
  EXPECT_EQ(routerFilter().onRequestHead(cb), FilterStatus::Stop);
  EXPECT_EQ(cb.forwarded, 1);
  EXPECT_TRUE(cb.stream().pendingShadows.empty());
}

TEST(FilterChain, RunsTheRoutesOwnAnswersFirstAndTheRouterLast) {
  auto chain = requestFilters();
  ASSERT_EQ(chain.size(), 6u);
  EXPECT_EQ(chain.front()->name(), "direct_response");
  // EnvoyFilters' INSERT_BEFORE router: the rate limits run last before it.
  EXPECT_EQ(chain[3]->name(), "local_ratelimit");
  EXPECT_EQ(chain[4]->name(), "ratelimit");
  EXPECT_EQ(chain.back()->name(), "router");
}

// The shop, with the global rate limit filter on the outbound listener, a
// user's header and the client address as descriptors, and the ratelimit
// service's configuration for the domain.
constexpr std::string_view kGlobalYaml = R"yaml(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: shop
          failure_mode_deny: {DENY}
          timeout: 25ms
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]
        - actions: [{remote_address: {}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ratelimit-config}
data:
  config.yaml: |
    domain: shop
    descriptors:
    - key: user
      value: vip
      rate_limit: {unit: second, requests_per_unit: 100}
    - key: user
      rate_limit: {unit: minute, requests_per_unit: 2}
    - key: remote_address
      shadow_mode: true
      rate_limit: {unit: hour, requests_per_unit: 1}
)yaml";

std::string globalYaml(bool deny) {
  std::string y(kGlobalYaml);
  y.replace(y.find("{DENY}"), 6, deny ? "true" : "false");
  return y;
}

struct GlobalFixture {
  explicit GlobalFixture(std::string_view extra = "", bool deny = false)
      : raw(get("/items", extra)), yaml(globalYaml(deny)), cb(raw, yaml) {
    inet_pton(AF_INET, "127.0.0.9", &cb.peer().sin_addr);
  }
  std::string raw, yaml;
  FakeSession cb;
};

TEST(GlobalRateLimitFilter, CountsEachLimitedDescriptorUnderTheServicesKeys) {
  GlobalFixture f("x-user: ann\r\n");
  EXPECT_EQ(globalRateLimitFilter().onRequestHead(f.cb), FilterStatus::Stop);
  // domain_key_value_windowStart, per descriptor the config limits; the
  // TTL is the window.
  EXPECT_EQ(f.cb.redisKeys, (std::vector<std::string>{"shop_user_ann_1700000040/60",
                                                      "shop_remote_address_127.0.0.9_1699999200/3600"}));
  EXPECT_EQ(f.cb.pausedNs, 25'000'000u);
  // Under the limit (the remote address over its own, but in shadow mode).
  EXPECT_EQ(f.cb.answer(globalRateLimitFilter(), {2, 7}), FilterStatus::Continue);
  EXPECT_EQ(f.cb.replies, 0);
  EXPECT_EQ(f.cb.stats_.get(stats::Counter::RateLimitOk), 1u);
}

TEST(GlobalRateLimitFilter, AValueOfItsOwnTakesItsOwnLimit) {
  GlobalFixture f("x-user: vip\r\n");
  EXPECT_EQ(globalRateLimitFilter().onRequestHead(f.cb), FilterStatus::Stop);
  EXPECT_EQ(f.cb.redisKeys.front(), "shop_user_vip_1700000042/1");
  EXPECT_EQ(f.cb.answer(globalRateLimitFilter(), {100, 1}), FilterStatus::Continue);
}

TEST(GlobalRateLimitFilter, OverTheLimitIsAnswered429WithTheHeader) {
  GlobalFixture f("x-user: ann\r\n");
  ASSERT_EQ(globalRateLimitFilter().onRequestHead(f.cb), FilterStatus::Stop);
  EXPECT_EQ(f.cb.answer(globalRateLimitFilter(), {3, 1}), FilterStatus::Stop);
  EXPECT_EQ(f.cb.replyStatus, 429);
  EXPECT_EQ(f.cb.replyFlags, "RL");
  EXPECT_NE(f.cb.replyHeaders.find("x-envoy-ratelimited: true"), std::string::npos);
  EXPECT_EQ(f.cb.stats_.get(stats::Counter::RateLimitOverLimit), 1u);
}

TEST(GlobalRateLimitFilter, WithoutTheHeaderItsEntryMakesNoDescriptor) {
  GlobalFixture f;
  ASSERT_EQ(globalRateLimitFilter().onRequestHead(f.cb), FilterStatus::Stop);
  EXPECT_EQ(f.cb.redisKeys, (std::vector<std::string>{"shop_remote_address_127.0.0.9_1699999200/3600"}));
}

TEST(GlobalRateLimitFilter, RedisDownFailsOpenOrAnswersWithFailureModeDeny) {
  GlobalFixture open("x-user: ann\r\n");
  open.cb.redisUp = false;
  EXPECT_EQ(globalRateLimitFilter().onRequestHead(open.cb), FilterStatus::Continue);
  EXPECT_EQ(open.cb.stats_.get(stats::Counter::RateLimitError), 1u);
  EXPECT_EQ(open.cb.stats_.get(stats::Counter::RateLimitFailureModeAllowed), 1u);

  GlobalFixture deny("x-user: ann\r\n", true);
  deny.cb.redisUp = false;
  EXPECT_EQ(globalRateLimitFilter().onRequestHead(deny.cb), FilterStatus::Stop);
  EXPECT_EQ(deny.cb.replyStatus, 500);
  EXPECT_EQ(deny.cb.replyFlags, "RLSE");
}

TEST(GlobalRateLimitFilter, ATimeoutIsAFailure) {
  GlobalFixture f("x-user: ann\r\n", true);
  ASSERT_EQ(globalRateLimitFilter().onRequestHead(f.cb), FilterStatus::Stop);
  // The pause ended with the call still pending: the timer fired.
  EXPECT_EQ(globalRateLimitFilter().onResume(f.cb), FilterStatus::Stop);
  EXPECT_EQ(f.cb.replyStatus, 500);
  EXPECT_EQ(f.cb.stats_.get(stats::Counter::RateLimitError), 1u);
}

}  // namespace
}  // namespace sluice::proxy
