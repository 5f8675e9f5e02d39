// The request filters, each run against a real compiled route and a fake
// session: what they answer, what they pause for, what they hand on.
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
  explicit FakeSession(std::string_view rawHead) {
    config::LoadReport report;
    for (const auto& e : config::loadYaml(kYaml, "shop.yaml", report)) ADD_FAILURE() << e.str();
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
  void forwardUpstream() override { ++forwarded; }

  int replies = 0, replyStatus = 0, forwarded = 0;
  std::string replyBody, replyFlags, replyHeaders;
  uint64_t pausedNs = 0;
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
  ASSERT_EQ(chain.size(), 5u);
  EXPECT_EQ(chain.front()->name(), "direct_response");
  // An EnvoyFilter's INSERT_BEFORE router: the rate limit runs last before it.
  EXPECT_EQ(chain[3]->name(), "local_ratelimit");
  EXPECT_EQ(chain.back()->name(), "router");
}

}  // namespace
}  // namespace sluice::proxy
