#include "proxy/request_util.h"
#include "http/status.h"

#include <gtest/gtest.h>
#include <re2/re2.h>

#include <set>
#include <string>

namespace sluice::proxy {
namespace {

// A parsed request head together with the bytes its views point into.
struct ParsedRequest {
  std::string raw;
  http::RequestHead head;
};

std::unique_ptr<ParsedRequest> parseRequest(std::string raw) {
  auto p = std::make_unique<ParsedRequest>();
  p->raw = std::move(raw);
  http::ParseError err;
  auto st = http::parseRequestHead(p->raw.data(), p->raw.size(), http::Limits{}, p->head, err);
  EXPECT_EQ(st, http::ParseStatus::Complete) << err.reason << "\n" << p->raw;
  return p;
}

struct ParsedResponse {
  std::string raw;
  http::ResponseHead head;
};

std::unique_ptr<ParsedResponse> parseResponse(std::string raw) {
  auto p = std::make_unique<ParsedResponse>();
  p->raw = std::move(raw);
  http::ParseError err;
  auto st = http::parseResponseHead(p->raw.data(), p->raw.size(), http::Limits{}, false, p->head, err);
  EXPECT_EQ(st, http::ParseStatus::Complete) << err.reason << "\n" << p->raw;
  return p;
}

// Header lines of a serialised head, lower-cased names, in order.
// A parsed head's fields as the session holds them.
http::HeaderMap mapOf(const std::vector<http::Header>& headers) {
  return http::HeaderMap(std::vector<http::Header>(headers));
}

// "name: value\r\n" lines as fields (views into `lines`).
http::HeaderMap fieldsOf(std::string_view lines) {
  http::HeaderMap out;
  while (!lines.empty()) {
    size_t eol = lines.find("\r\n");
    std::string_view line = lines.substr(0, eol);
    size_t colon = line.find(':');
    out.add(line.substr(0, colon), line.substr(colon + 2));
    lines.remove_prefix(eol + 2);
  }
  return out;
}

// The builders as the session calls them.
std::string upstreamHead(const http::RequestHead& head, const TargetParts& t, std::string_view rid,
                         const HeadMutation& m = {}) {
  return buildUpstreamHead(head, mapOf(head.headers), t, rid, m);
}
std::string downstreamHead(const http::ResponseHead& r, uint64_t serviceMs, bool close, bool http10, bool dechunk,
                           std::string_view extraLines = {}, const route::HeaderMutation::Rendered* ops = nullptr) {
  http::HeaderMap extra = fieldsOf(extraLines);
  return buildDownstreamHead(r, mapOf(r.headers), std::to_string(serviceMs), close, http10, dechunk,
                             extra.empty() ? nullptr : &extra, ops);
}
bool wantsWebSocket(const http::RequestHead& head) { return proxy::wantsWebSocket(head, mapOf(head.headers)); }
std::string localReply(int status, std::string_view body, bool close, bool isHead, std::string_view extraLines) {
  http::HeaderMap extra = fieldsOf(extraLines);
  return buildLocalReply(status, body, close, isHead, &extra);
}

std::vector<std::string> headerLines(const std::string& head) {
  std::vector<std::string> out;
  size_t pos = head.find("\r\n") + 2;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string::npos || eol == pos) break;
    std::string line = head.substr(pos, eol - pos);
    size_t colon = line.find(':');
    for (size_t i = 0; i < colon && i < line.size(); ++i) line[i] = char(std::tolower(line[i]));
    out.push_back(line);
    pos = eol + 2;
  }
  return out;
}

size_t countPrefix(const std::vector<std::string>& lines, const std::string& prefix) {
  size_t n = 0;
  for (const auto& l : lines) n += l.rfind(prefix, 0) == 0;
  return n;
}

bool hasLine(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// ------------------------------------------------------------ splitTarget

TEST(SplitTarget, OriginFormTakesAuthorityFromHost) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("/api/v1?x=1", "reviews:9080", t));
  EXPECT_EQ(t.authority, "reviews:9080");
  EXPECT_EQ(t.host, "reviews");
  EXPECT_EQ(t.port, 9080u);
  EXPECT_EQ(t.path, "/api/v1?x=1");
  EXPECT_FALSE(t.absolute);

  ASSERT_TRUE(splitTarget("/", "reviews", t));
  EXPECT_EQ(t.host, "reviews");
  EXPECT_EQ(t.port, 0u);

  ASSERT_TRUE(splitTarget("/", "", t)) << "HTTP/1.0 without Host";
  EXPECT_EQ(t.host, "");
  EXPECT_EQ(t.authority, "");
}

TEST(SplitTarget, AnAuthorityThatIsNotOneIsRefused) {
  TargetParts t;
  for (std::string_view host : {"a#b", "a/b", "u@a", "a, b", "a b", "a?x"}) {
    EXPECT_FALSE(splitTarget("/", host, t)) << host;
  }
  EXPECT_FALSE(splitTarget("http://a#b/x", "", t));
  EXPECT_TRUE(splitTarget("/", "reviews.default:9080", t));
  EXPECT_TRUE(splitTarget("/", "[::1]:80", t));
  EXPECT_TRUE(splitTarget("/", "", t)) << "HTTP/1.0 without Host";
}

TEST(AppendChunks, OneChunkPerViewAndTheLastChunk) {
  std::string out;
  appendChunks({"hello", "", std::string_view("0123456789abcdefg")}, false, out);
  EXPECT_EQ(out, "5\r\nhello\r\n11\r\n0123456789abcdefg\r\n");
  out.clear();
  appendChunks({}, true, out);
  EXPECT_EQ(out, "0\r\n\r\n");
}

TEST(SplitTarget, AbsoluteForm) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("http://reviews:9080/api?q=1", "ignored:1", t));
  EXPECT_TRUE(t.absolute);
  EXPECT_EQ(t.authority, "reviews:9080");
  EXPECT_EQ(t.host, "reviews");
  EXPECT_EQ(t.port, 9080u);
  EXPECT_EQ(t.path, "/api?q=1");

  ASSERT_TRUE(splitTarget("HTTP://Reviews", "", t)) << "scheme is case-insensitive";
  EXPECT_EQ(t.host, "Reviews");
  EXPECT_EQ(t.path, "/");

  ASSERT_TRUE(splitTarget("http://reviews:9080?q=1", "", t));
  EXPECT_EQ(t.path, "/?q=1");
  EXPECT_EQ(t.port, 9080u);

  ASSERT_TRUE(splitTarget("https://secure.example.com/x", "", t));
  EXPECT_EQ(t.host, "secure.example.com");
  EXPECT_EQ(t.path, "/x");

  EXPECT_FALSE(splitTarget("http:///nohost", "", t));
  EXPECT_FALSE(splitTarget("http://user@reviews/", "", t)) << "userinfo is refused";
}

TEST(SplitTarget, AbsoluteFormSynthesisedPathSurvivesCopyOfTheTarget) {
  // pathStorage backs `path` when "/" has to be added before a query.
  TargetParts t;
  ASSERT_TRUE(splitTarget("http://h:1?a=b", "", t));
  EXPECT_EQ(t.path.data(), t.pathStorage.data());
  EXPECT_EQ(std::string(t.path), "/?a=b");
}

TEST(SplitTarget, AsteriskForm) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("*", "reviews:9080", t));
  EXPECT_EQ(t.path, "*");
  EXPECT_EQ(t.host, "reviews");
  EXPECT_EQ(t.port, 9080u);
}

TEST(SplitTarget, AuthorityFormIsRefused) {
  TargetParts t;
  EXPECT_FALSE(splitTarget("reviews:443", "reviews:443", t));
  EXPECT_FALSE(splitTarget("", "reviews", t));
}

TEST(SplitTarget, Ipv6Literals) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("/", "[::1]:8080", t));
  EXPECT_EQ(t.host, "[::1]");
  EXPECT_EQ(t.port, 8080u);
  ASSERT_TRUE(splitTarget("http://[fe80::1]/p", "", t));
  EXPECT_EQ(t.host, "[fe80::1]");
  EXPECT_EQ(t.port, 0u);
  EXPECT_EQ(t.path, "/p");
  EXPECT_FALSE(splitTarget("/", "[::1", t)) << "unclosed bracket";
  EXPECT_FALSE(splitTarget("/", "[::1]8080", t)) << "junk after the bracket";
  EXPECT_FALSE(splitTarget("/", "[::1]:", t)) << "empty port";
}

TEST(SplitTarget, BadPorts) {
  TargetParts t;
  for (std::string_view host : {"reviews:", "reviews:0", "reviews:65536", "reviews:99999",
                                "reviews:12a", "reviews:-1", "reviews:+80", "reviews:123456", ":80"}) {
    EXPECT_FALSE(splitTarget("/", host, t)) << "Host: " << host;
  }
  ASSERT_TRUE(splitTarget("/", "reviews:65535", t));
  EXPECT_EQ(t.port, 65535u);
  ASSERT_TRUE(splitTarget("/", "reviews:1", t));
  EXPECT_EQ(t.port, 1u);
}

TEST(LowerHost, FoldsCaseAndDropsRootDot) {
  EXPECT_EQ(lowerHost("Reviews.Default.SVC.cluster.local."), "reviews.default.svc.cluster.local");
  EXPECT_EQ(lowerHost(""), "");
}

// ------------------------------------------------------ buildUpstreamHead

TEST(BuildUpstreamHead, StripsHopByHopAndConnectionListedHeaders) {
  auto p = parseRequest(
      "POST /api HTTP/1.1\r\n"
      "Host: reviews:9080\r\n"
      "Connection: keep-alive, X-Secret-Hop\r\n"
      "Keep-Alive: timeout=5\r\n"
      "Proxy-Connection: keep-alive\r\n"
      "TE: trailers\r\n"
      "Upgrade: h2c\r\n"
      "X-Secret-Hop: 1\r\n"
      "Expect: 100-continue\r\n"
      "Transfer-Encoding: chunked\r\n"
      "X-Custom: kept\r\n"
      "\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  std::string out = upstreamHead(p->head, t, "rid-1");
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "POST /api HTTP/1.1");
  ASSERT_TRUE(out.ends_with("\r\n\r\n"));
  auto lines = headerLines(out);
  for (std::string gone : {"connection:", "keep-alive:", "proxy-connection:", "te:", "upgrade:",
                           "x-secret-hop:", "expect:"}) {
    EXPECT_EQ(countPrefix(lines, gone), 0u) << gone << " was forwarded:\n" << out;
  }
  EXPECT_TRUE(hasLine(lines, "transfer-encoding: chunked")) << "the body keeps its framing:\n" << out;
  EXPECT_TRUE(hasLine(lines, "x-custom: kept")) << out;
  EXPECT_TRUE(hasLine(lines, "host: reviews:9080")) << out;
  EXPECT_EQ(countPrefix(lines, "host:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "x-request-id: rid-1")) << out;
  EXPECT_TRUE(hasLine(lines, "x-forwarded-proto: http")) << out;
}

// The upstream request's framing is the one the parser decided, written
// once by sluiced: odd spellings the parser accepted reach the next hop in
// one clean form.
TEST(BuildUpstreamHead, FramingIsRebuiltNotCopied) {
  struct Case {
    std::string headers;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"Content-Length: 5, 5\r\n", "content-length: 5"},
           {"Content-Length: 5\r\ncontent-length: 5\r\n", "content-length: 5"},
           {"Content-Length: 05\r\n", "content-length: 5"},
           {"Transfer-Encoding: ,chunked\r\n", "transfer-encoding: chunked"},
           {"Transfer-Encoding: chunked,\r\n", "transfer-encoding: chunked"},
           {"transfer-encoding: CHUNKED\r\n", "transfer-encoding: chunked"},
       }) {
    auto p = parseRequest("POST /api HTTP/1.1\r\nHost: reviews:9080\r\n" + c.headers + "\r\n");
    TargetParts t;
    ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
    std::string out = upstreamHead(p->head, t, "rid-1");
    auto lines = headerLines(out);
    EXPECT_EQ(countPrefix(lines, "content-length:") + countPrefix(lines, "transfer-encoding:"), 1u)
        << c.headers << " gave:\n" << out;
    EXPECT_TRUE(hasLine(lines, c.expect)) << c.headers << " gave:\n" << out;
  }
  // No body, no framing header at all.
  auto p = parseRequest("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  auto lines = headerLines(upstreamHead(p->head, t, "rid"));
  EXPECT_EQ(countPrefix(lines, "content-length:") + countPrefix(lines, "transfer-encoding:"), 0u);
}

TEST(BuildUpstreamHead, OnlyAWebSocketUpgradeIsPassedOn) {
  auto ws = parseRequest("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
                         "Sec-WebSocket-Key: k\r\n\r\n");
  EXPECT_TRUE(wantsWebSocket(ws->head));
  TargetParts t;
  ASSERT_TRUE(splitTarget(ws->head.target, ws->head.host, t));
  auto lines = headerLines(upstreamHead(ws->head, t, "rid"));
  EXPECT_TRUE(hasLine(lines, "upgrade: websocket"));
  EXPECT_TRUE(hasLine(lines, "connection: upgrade"));
  EXPECT_EQ(countPrefix(lines, "connection:"), 1u);
  EXPECT_TRUE(hasLine(lines, "sec-websocket-key: k"));

  auto h2c = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n");
  EXPECT_FALSE(wantsWebSocket(h2c->head));
  ASSERT_TRUE(splitTarget(h2c->head.target, h2c->head.host, t));
  lines = headerLines(upstreamHead(h2c->head, t, "rid"));
  EXPECT_EQ(countPrefix(lines, "upgrade:") + countPrefix(lines, "connection:"), 0u);
  // Upgrade without Connection: upgrade is no upgrade request at all.
  auto bare = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
  EXPECT_FALSE(wantsWebSocket(bare->head));
}

TEST(BuildUpstreamHead, AbsoluteFormSetsHostFromTheUri) {
  auto p = parseRequest(
      "GET http://reviews:9080/api/reviews?x=1 HTTP/1.1\r\n"
      "Host: wrong.example\r\n"
      "\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  std::string out = upstreamHead(p->head, t, "rid");
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "GET /api/reviews?x=1 HTTP/1.1") << "origin-form upstream";
  auto lines = headerLines(out);
  EXPECT_EQ(countPrefix(lines, "host:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "host: reviews:9080")) << out;
}

TEST(BuildUpstreamHead, AbsoluteFormWithoutHostHeaderGetsOne) {
  auto p = parseRequest("GET http://ratings/x HTTP/1.0\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  auto lines = headerLines(upstreamHead(p->head, t, "rid"));
  EXPECT_TRUE(hasLine(lines, "host: ratings"));
}

TEST(BuildUpstreamHead, RequestIdAddedOnlyWhenAbsent) {
  auto withId = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-chosen\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(withId->head.target, withId->head.host, t));
  auto lines = headerLines(upstreamHead(withId->head, t, "generated"));
  EXPECT_EQ(countPrefix(lines, "x-request-id:"), 1u);
  EXPECT_TRUE(hasLine(lines, "x-request-id: client-chosen"));

  auto empty = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id:\r\n\r\n");
  ASSERT_TRUE(splitTarget(empty->head.target, empty->head.host, t));
  lines = headerLines(upstreamHead(empty->head, t, "generated"));
  EXPECT_EQ(countPrefix(lines, "x-request-id:"), 1u) << "an empty id is replaced, not duplicated";
  EXPECT_TRUE(hasLine(lines, "x-request-id: generated"));

  auto proto = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n");
  ASSERT_TRUE(splitTarget(proto->head.target, proto->head.host, t));
  lines = headerLines(upstreamHead(proto->head, t, "generated"));
  EXPECT_EQ(countPrefix(lines, "x-forwarded-proto:"), 1u);
  EXPECT_TRUE(hasLine(lines, "x-forwarded-proto: https"));
}

TEST(BuildUpstreamHead, Http10RequestGoesUpstreamAsHttp11) {
  auto p = parseRequest("GET /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  std::string out = upstreamHead(p->head, t, "r");
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "GET /old HTTP/1.1");
  EXPECT_EQ(countPrefix(headerLines(out), "connection:"), 0u);
}

// A compiled mutation of one level, for the head builders.
route::HeaderMutation mutation(const config::HeaderOperations& ops) {
  std::vector<const config::HeaderOperations*> levels{&ops};
  auto m = route::HeaderMutation::compile(levels);
  EXPECT_TRUE(m.has_value()) << m.error();
  return m ? std::move(*m) : route::HeaderMutation{};
}

TEST(BuildUpstreamHead, RewriteOriginalPathAuthorityAndHeaderOps) {
  auto p = parseRequest(
      "GET /api/v1/users?id=3 HTTP/1.1\r\n"
      "Host: reviews:9080\r\n"
      "X-User: alice\r\n"
      "X-Internal: secret\r\n"
      "X-Env: prod\r\n"
      "X-Envoy-Original-Path: /forged\r\n"
      "Content-Length: 0\r\n"
      "\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  config::HeaderOperations ops;
  ops.set = {{"x-env", "canary"}, {"x-who", "%REQ(x-user)%"}};
  ops.add = {{"x-trace", "on"}};
  ops.remove = {"x-internal"};
  route::HeaderMutation m = mutation(ops);
  istio::HeaderContext ctx;
  const http::HeaderMap requestMap = mapOf(p->head.headers);
  ctx.requestHeaders = &requestMap;
  auto rendered = m.render(ctx);
  HeadMutation hm{"/v2/users?id=3", t.path, "ratings.prod:8080", &rendered};
  std::string out = upstreamHead(p->head, t, "rid-9", hm);
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "GET /v2/users?id=3 HTTP/1.1");
  auto lines = headerLines(out);
  EXPECT_EQ(countPrefix(lines, "host:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "host: ratings.prod:8080")) << out;
  EXPECT_EQ(countPrefix(lines, "x-envoy-original-path:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "x-envoy-original-path: /api/v1/users?id=3")) << out;
  EXPECT_EQ(countPrefix(lines, "x-internal:"), 0u) << out;
  EXPECT_EQ(countPrefix(lines, "x-env:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "x-env: canary")) << out;
  EXPECT_TRUE(hasLine(lines, "x-who: alice")) << out;
  EXPECT_TRUE(hasLine(lines, "x-trace: on")) << out;
  EXPECT_TRUE(hasLine(lines, "x-user: alice")) << out;
  EXPECT_TRUE(hasLine(lines, "content-length: 0")) << out;
  EXPECT_TRUE(hasLine(lines, "x-request-id: rid-9")) << out;
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
}

TEST(BuildUpstreamHead, AuthorityRewriteReplacesAnAbsoluteFormHost) {
  auto p = parseRequest("GET http://reviews:9080/x HTTP/1.1\r\nHost: other\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  HeadMutation hm;
  hm.authority = "ratings";
  auto lines = headerLines(upstreamHead(p->head, t, "r", hm));
  EXPECT_EQ(countPrefix(lines, "host:"), 1u);
  EXPECT_TRUE(hasLine(lines, "host: ratings"));
  EXPECT_EQ(countPrefix(lines, "x-envoy-original-path:"), 0u) << "only sent when the path was rewritten";
}

TEST(BuildUpstreamHead, HeaderOpsOwnHostRequestIdAndProto) {
  auto p = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  config::HeaderOperations ops;
  ops.set = {{"host", "b.example"}, {"x-request-id", "fixed"}};
  ops.remove = {"x-forwarded-proto"};
  route::HeaderMutation m = mutation(ops);
  auto rendered = m.render(istio::HeaderContext{});
  HeadMutation hm;
  hm.headers = &rendered;
  auto lines = headerLines(upstreamHead(p->head, t, "generated", hm));
  EXPECT_EQ(countPrefix(lines, "host:"), 1u);
  EXPECT_TRUE(hasLine(lines, "host: b.example"));
  EXPECT_EQ(countPrefix(lines, "x-request-id:"), 1u);
  EXPECT_TRUE(hasLine(lines, "x-request-id: fixed"));
  EXPECT_EQ(countPrefix(lines, "x-forwarded-proto:"), 0u);

  // rewrite.authority wins over a `set host`, as in Envoy.
  hm.authority = "c.example";
  lines = headerLines(upstreamHead(p->head, t, "generated", hm));
  EXPECT_EQ(countPrefix(lines, "host:"), 1u);
  EXPECT_TRUE(hasLine(lines, "host: c.example"));
}

TEST(BuildUpstreamHead, DefaultMutationChangesNothing) {
  auto p = parseRequest("POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Envoy-Original-Path: /z\r\nContent-Length: 2\r\n\r\n");
  TargetParts t;
  ASSERT_TRUE(splitTarget(p->head.target, p->head.host, t));
  EXPECT_EQ(upstreamHead(p->head, t, "r", HeadMutation{}),
            "POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Envoy-Original-Path: /z\r\n"
            "x-request-id: r\r\nx-forwarded-proto: http\r\ncontent-length: 2\r\n\r\n");
}

// ---------------------------------------------------- buildDownstreamHead

TEST(BuildDownstreamHead, StripsHopByHopAndAddsServiceTime) {
  auto r = parseResponse(
      "HTTP/1.1 201 Created\r\n"
      "Content-Length: 5\r\n"
      "Connection: keep-alive, X-Hop\r\n"
      "Keep-Alive: timeout=5\r\n"
      "X-Hop: 1\r\n"
      "X-App: yes\r\n"
      "\r\n");
  std::string out = downstreamHead(r->head, 17, false, false, false);
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "HTTP/1.1 201 Created");
  auto lines = headerLines(out);
  EXPECT_EQ(countPrefix(lines, "connection:"), 0u) << out;
  EXPECT_EQ(countPrefix(lines, "keep-alive:"), 0u) << out;
  EXPECT_EQ(countPrefix(lines, "x-hop:"), 0u) << out;
  EXPECT_TRUE(hasLine(lines, "x-app: yes")) << out;
  EXPECT_TRUE(hasLine(lines, "content-length: 5")) << out;
  EXPECT_TRUE(hasLine(lines, "x-envoy-upstream-service-time: 17")) << out;
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
}

TEST(BuildDownstreamHead, ConnectionHeaderForCloseAndHttp10) {
  auto r = parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(hasLine(headerLines(downstreamHead(r->head, 0, true, false, false)), "connection: close"));
  EXPECT_TRUE(hasLine(headerLines(downstreamHead(r->head, 0, true, true, false)), "connection: close"));
  EXPECT_TRUE(hasLine(headerLines(downstreamHead(r->head, 0, false, true, false)), "connection: keep-alive"))
      << "an HTTP/1.0 client needs an explicit keep-alive";
  EXPECT_EQ(countPrefix(headerLines(downstreamHead(r->head, 0, false, false, false)), "connection:"), 0u);
}

TEST(BuildDownstreamHead, DechunkDropsTransferEncoding) {
  auto r = parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n");
  auto kept = headerLines(downstreamHead(r->head, 0, false, false, false));
  EXPECT_TRUE(hasLine(kept, "transfer-encoding: chunked"));
  auto dechunked = headerLines(downstreamHead(r->head, 0, true, true, true));
  EXPECT_EQ(countPrefix(dechunked, "transfer-encoding:"), 0u);
  EXPECT_EQ(countPrefix(dechunked, "content-length:"), 0u) << "close-delimited";
  EXPECT_TRUE(hasLine(dechunked, "connection: close"));
  EXPECT_TRUE(hasLine(dechunked, "x-a: b"));
}

// Whatever the upstream's headers say about framing besides the framing
// itself (a Connection that names Content-Length, repeated lengths) never
// changes what the client is told.
TEST(BuildDownstreamHead, FramingIsRebuiltNotCopied) {
  auto r = parseResponse("HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n");
  auto lines = headerLines(downstreamHead(r->head, 0, false, false, false));
  EXPECT_TRUE(hasLine(lines, "content-length: 5"));
  EXPECT_EQ(countPrefix(lines, "content-length:"), 1u);

  r = parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
  lines = headerLines(downstreamHead(r->head, 0, false, false, false));
  EXPECT_EQ(countPrefix(lines, "content-length:"), 1u);
  EXPECT_TRUE(hasLine(lines, "content-length: 5"));

  r = parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: ,Chunked\r\n\r\n");
  lines = headerLines(downstreamHead(r->head, 0, false, false, false));
  EXPECT_EQ(countPrefix(lines, "transfer-encoding:"), 1u);
  EXPECT_TRUE(hasLine(lines, "transfer-encoding: chunked"));

  r = parseResponse("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");  // ends with the connection
  lines = headerLines(downstreamHead(r->head, 0, true, false, false));
  EXPECT_EQ(countPrefix(lines, "content-length:") + countPrefix(lines, "transfer-encoding:"), 0u);
}

TEST(BuildDownstreamHead, BodilessResponsesKeepTheirDeclaredLength) {
  auto head = std::make_unique<ParsedResponse>();
  head->raw = "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
  http::ParseError err;
  ASSERT_EQ(http::parseResponseHead(head->raw.data(), head->raw.size(), http::Limits{}, /*HEAD*/ true, head->head, err),
            http::ParseStatus::Complete);
  EXPECT_TRUE(hasLine(headerLines(downstreamHead(head->head, 0, false, false, false)), "content-length: 42"))
      << "a HEAD answer says what GET would carry";
  auto r = parseResponse("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(countPrefix(headerLines(downstreamHead(r->head, 0, false, false, false)), "content-length:"), 0u)
      << "a 204 carries no length";
}

TEST(BuildDownstreamHead, ResponseHeaderOps) {
  auto r = parseResponse(
      "HTTP/1.1 200 OK\r\n"
      "Content-Length: 3\r\n"
      "Server: app\r\n"
      "X-Powered-By: php\r\n"
      "Cache-Control: no-cache\r\n"
      "\r\n");
  config::HeaderOperations ops;
  ops.set = {{"server", "sluice"}, {"x-from", "%RESP(x-powered-by)%"}};
  ops.add = {{"cache-control", "private"}};
  ops.remove = {"x-powered-by"};
  route::HeaderMutation m = mutation(ops);
  istio::HeaderContext ctx;
  const http::HeaderMap responseMap = mapOf(r->head.headers);
  ctx.responseHeaders = &responseMap;
  auto rendered = m.render(ctx);
  std::string out = downstreamHead(r->head, 4, false, false, false, "set-cookie: a=b\r\n", &rendered);
  auto lines = headerLines(out);
  EXPECT_EQ(countPrefix(lines, "server:"), 1u) << out;
  EXPECT_TRUE(hasLine(lines, "server: sluice")) << out;
  EXPECT_EQ(countPrefix(lines, "x-powered-by:"), 0u) << out;
  // %RESP()% reads the upstream's response as received, before the remove.
  EXPECT_TRUE(hasLine(lines, "x-from: php")) << out;
  EXPECT_TRUE(hasLine(lines, "cache-control: no-cache")) << out;
  EXPECT_TRUE(hasLine(lines, "cache-control: private")) << out;
  EXPECT_TRUE(hasLine(lines, "content-length: 3")) << out;
  EXPECT_TRUE(hasLine(lines, "set-cookie: a=b")) << out;
  EXPECT_TRUE(hasLine(lines, "x-envoy-upstream-service-time: 4")) << out;
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));

  config::HeaderOperations hide;
  hide.remove = {"x-envoy-upstream-service-time"};
  route::HeaderMutation h = mutation(hide);
  auto hidden = h.render(ctx);
  EXPECT_EQ(countPrefix(headerLines(downstreamHead(r->head, 4, false, false, false, {}, &hidden)),
                        "x-envoy-upstream-service-time:"),
            0u);
}

TEST(BuildDownstreamHead, EmptyReasonGetsTheStandardPhrase) {
  auto r = parseResponse("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n");
  std::string out = downstreamHead(r->head, 0, false, false, false);
  EXPECT_EQ(out.substr(0, out.find("\r\n")), "HTTP/1.1 404 Not Found");
}

// --------------------------------------------------------- buildLocalReply

TEST(BuildLocalReply, BodyAndLength) {
  std::string out = localReply(503, "no healthy upstream", false, false, {});
  EXPECT_EQ(out,
            "HTTP/1.1 503 Service Unavailable\r\n"
            "content-length: 19\r\n"
            "content-type: text/plain\r\n"
            "\r\n"
            "no healthy upstream");
}

TEST(BuildLocalReply, HeadGetsTheLengthButNoBody) {
  std::string out = localReply(404, "nope", true, true, {});
  EXPECT_EQ(out,
            "HTTP/1.1 404 Not Found\r\n"
            "content-length: 4\r\n"
            "content-type: text/plain\r\n"
            "connection: close\r\n"
            "\r\n");
}

TEST(BuildLocalReply, NoContentHasNoLengthAndNoBody) {
  std::string out = localReply(204, "ignored", false, false, {});
  EXPECT_EQ(out, "HTTP/1.1 204 No Content\r\n\r\n");
  out = localReply(304, "ignored", false, false, {});
  EXPECT_EQ(out, "HTTP/1.1 304 Not Modified\r\n\r\n");
}

TEST(BuildLocalReply, ExtraHeadersAndEmptyBody) {
  std::string out = localReply(301, "", false, false, "location: http://a/b\r\n");
  EXPECT_EQ(out,
            "HTTP/1.1 301 Moved Permanently\r\n"
            "content-length: 0\r\n"
            "location: http://a/b\r\n"
            "\r\n");
}

// -------------------------------------------------------- redirectLocation

TEST(RedirectLocation, KeepsHostPortAndPathByDefault) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("/old?x=1", "reviews:9080", t));
  route::Redirect r;
  EXPECT_EQ(redirectLocation(r, t, 9080), "http://reviews:9080/old?x=1");
  r.uri = "/new";
  EXPECT_EQ(redirectLocation(r, t, 9080), "http://reviews:9080/new?x=1") << "query carried over";
  r.uri = "/new?y=2";
  EXPECT_EQ(redirectLocation(r, t, 9080), "http://reviews:9080/new?y=2") << "the rule's query wins";
}

TEST(RedirectLocation, AuthoritySchemeAndPorts) {
  TargetParts t;
  ASSERT_TRUE(splitTarget("/p", "reviews:9080", t));
  route::Redirect r;
  r.authority = "new.example.com";
  EXPECT_EQ(redirectLocation(r, t, 9080), "http://new.example.com/p") << "a new authority drops the port";
  r.port = 8443;
  r.scheme = "https";
  EXPECT_EQ(redirectLocation(r, t, 9080), "https://new.example.com:8443/p");
  r.port = 443;
  EXPECT_EQ(redirectLocation(r, t, 9080), "https://new.example.com/p") << "default port omitted";
  r.port.reset();
  r.authority.clear();
  r.scheme.clear();
  r.derivePort = route::Redirect::DerivePort::FromProtocolDefault;
  EXPECT_EQ(redirectLocation(r, t, 9080), "http://reviews/p");

  TargetParts noPort;
  ASSERT_TRUE(splitTarget("/p", "reviews", noPort));
  r.derivePort = route::Redirect::DerivePort::FromRequestPort;
  EXPECT_EQ(redirectLocation(r, noPort, 9080), "http://reviews:9080/p");
}

// --------------------------------------------------------------- misc

TEST(NewRequestId, IsAVersion4Uuid) {
  core::Rng rng(42);
  const RE2 uuid("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = newRequestId(rng);
    ASSERT_TRUE(RE2::FullMatch(id, uuid)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ReasonPhrase, KnownAndUnknown) {
  EXPECT_EQ(http::reasonPhrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(http::reasonPhrase(504), "Gateway Timeout");
  EXPECT_EQ(http::reasonPhrase(299), "Unknown");
}

TEST(FormatLogTime, Rfc3339Milliseconds) {
  const RE2 ts("^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$");
  const std::string stamp = formatLogTime();
  EXPECT_TRUE(RE2::FullMatch(stamp, ts)) << stamp;
}

}  // namespace
}  // namespace sluice::proxy
