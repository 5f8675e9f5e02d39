#include "http/parser.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice::http {
namespace {

struct Req {
  RequestHead head;
  ParseError err;
  ParseStatus status = ParseStatus::Error;
};

Req parseReq(std::string_view s, const Limits& limits = {}) {
  Req r;
  r.status = parseRequestHead(s.data(), s.size(), limits, r.head, r.err);
  return r;
}

// Expects an Error with the given status code.
void expectReqError(std::string_view s, int status, const Limits& limits = {}) {
  Req r = parseReq(s, limits);
  ASSERT_EQ(r.status, ParseStatus::Error) << s;
  EXPECT_EQ(r.err.status, status) << s << " reason: " << r.err.reason;
  EXPECT_FALSE(r.err.reason.empty());
}

TEST(RequestHead, OriginForm) {
  std::string s = "GET /reviews/1?x=y HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent:  curl/8 \r\n\r\n";
  Req r = parseReq(s);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.method, "GET");
  EXPECT_EQ(r.head.target, "/reviews/1?x=y");
  EXPECT_EQ(r.head.versionMinor, 1);
  EXPECT_EQ(r.head.headBytes, s.size());
  EXPECT_EQ(r.head.host, "reviews:9080");
  ASSERT_EQ(r.head.headers.size(), 2u);
  EXPECT_EQ(r.head.headers[0].name, "Host");
  EXPECT_EQ(r.head.headers[1].value, "curl/8");  // OWS trimmed both sides
  EXPECT_TRUE(r.head.keepAlive);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::None);
  ASSERT_NE(r.head.find("user-agent"), nullptr);
  EXPECT_EQ(r.head.find("USER-AGENT")->value, "curl/8");
  EXPECT_EQ(r.head.find("accept"), nullptr);
}

// A hop that honours "Connection: Content-Length" drops the length and
// reads the body as the next request: such a request is refused outright.
TEST(RequestHead, ConnectionNamingAFramingHeaderIs400) {
  std::string h = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n";
  for (std::string c : {"Content-Length", "content-length", "close, Content-Length", "Transfer-Encoding",
                        "keep-alive,  HOST"}) {
    expectReqError(h + "Connection: " + c + "\r\n\r\n", 400);
  }
  Req r = parseReq(h + "Connection: keep-alive, x-custom\r\n\r\n");
  EXPECT_EQ(r.status, ParseStatus::Complete);
}

TEST(RequestHead, AbsoluteFormNeedsNoHost) {
  Req r = parseReq("GET http://reviews:9080/p HTTP/1.1\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.target, "http://reviews:9080/p");
  EXPECT_TRUE(r.head.host.empty());
}

TEST(RequestHead, AuthorityForm) {
  Req r = parseReq("CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.method, "CONNECT");
  EXPECT_EQ(r.head.target, "reviews:443");
  // Authority-form is not absolute-form: HTTP/1.1 still needs Host.
  expectReqError("CONNECT reviews:443 HTTP/1.1\r\n\r\n", 400);
}

TEST(RequestHead, AsteriskForm) {
  Req r = parseReq("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.target, "*");
}

TEST(RequestHead, MissingHostOn11Is400ButFineOn10) {
  expectReqError("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
  Req r = parseReq("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.versionMinor, 0);
}

TEST(RequestHead, TwoHostHeaders) {
  expectReqError("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

TEST(RequestHead, LeadingEmptyLineToleratedOnce) {
  std::string s = "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  Req r = parseReq(s);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.method, "GET");
  EXPECT_EQ(r.head.headBytes, s.size());
  expectReqError("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

TEST(RequestHead, KeepAliveRules) {
  auto ka = [](std::string_view s) {
    Req r = parseReq(s);
    EXPECT_EQ(r.status, ParseStatus::Complete) << s;
    return r.head.keepAlive;
  };
  EXPECT_TRUE(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_FALSE(ka("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  EXPECT_FALSE(ka("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"));
  EXPECT_FALSE(ka("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_TRUE(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  EXPECT_FALSE(ka("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
  EXPECT_FALSE(ka("GET / HTTP/1.0\r\nConnection: keep-alive-not\r\n\r\n"));
}

TEST(RequestHead, ExpectContinueAndUpgrade) {
  Req r = parseReq("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_TRUE(r.head.expectContinue);
  EXPECT_FALSE(r.head.upgrade);
  r = parseReq("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_FALSE(r.head.expectContinue);  // 1.0 clients do not wait for 100

  r = parseReq("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_TRUE(r.head.upgrade);
  r = parseReq("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_FALSE(r.head.upgrade);  // Upgrade not nominated in Connection
}

TEST(RequestHead, ContentLengthFraming) {
  Req r = parseReq("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::ContentLength);
  EXPECT_EQ(r.head.framing.length, 42u);
  // Repeated and list forms are accepted when every value agrees.
  r = parseReq("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\ncontent-length: 7\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.length, 7u);
  r = parseReq("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.length, UINT64_MAX);
}

TEST(RequestHead, ChunkedFraming) {
  Req r = parseReq("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::Chunked);
}

TEST(RequestHead, Smuggling) {
  const std::string h = "POST / HTTP/1.1\r\nHost: a\r\n";
  expectReqError(h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
  expectReqError(h + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
  expectReqError(h + "Content-Length: 5, 6\r\n\r\n", 400);
  expectReqError(h + "Content-Length: 5,\r\n\r\n", 400);
  expectReqError(h + "Content-Length: +5\r\n\r\n", 400);
  expectReqError(h + "Content-Length: 0x5\r\n\r\n", 400);
  expectReqError(h + "Content-Length: \r\n\r\n", 400);
  expectReqError(h + "Content-Length: 18446744073709551616\r\n\r\n", 400);
  expectReqError(h + "Content-Length: 99999999999999999999999\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding: gzip\r\n\r\n", 501);
  expectReqError(h + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501);
  expectReqError(h + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding: \r\n\r\n", 400);
  expectReqError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  // obs-fold, whitespace before the colon, bare CR/LF anywhere.
  expectReqError(h + "X-A: 1\r\n continued\r\n\r\n", 400);
  expectReqError(h + "X-A: 1\r\n\tcontinued\r\n\r\n", 400);
  expectReqError(h + "Content-Length : 5\r\n\r\n", 400);
  expectReqError(h + "Transfer-Encoding\t: chunked\r\n\r\n", 400);
  expectReqError(h + "X-A: 1\nContent-Length: 5\r\n\r\n", 400);
  expectReqError(h + "X-A: 1\rContent-Length: 5\r\n\r\n", 400);
  expectReqError(h + "X-A: 1\r\n\n", 400);
  expectReqError(h + "X-A: 1\r\n\r\r", 400);
  expectReqError("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
  expectReqError("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
  expectReqError(h + std::string("X-A: a\0b\r\n\r\n", 12), 400);
  expectReqError(h + "X-A: a\x7f" "b\r\n\r\n", 400);
  expectReqError(h + "X@A: 1\r\n\r\n", 400);
  expectReqError(h + ": 1\r\n\r\n", 400);
}

TEST(RequestHead, StartLineErrors) {
  expectReqError("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
  expectReqError("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET /\r\n\r\n", 400);
  expectReqError("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET / HTTP/11\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expectReqError("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
  expectReqError("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
  expectReqError("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
  // Garbage is rejected as soon as it is seen, not after a full line.
  expectReqError("GET / XTTP", 400);
  expectReqError("GET / HTTP/x", 400);
}

TEST(RequestHead, TargetTooLong) {
  std::string target(8 * 1024, 'a');
  target[0] = '/';
  Req ok = parseReq("GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(ok.status, ParseStatus::Complete);
  expectReqError("GET " + target + "b HTTP/1.1\r\nHost: a\r\n\r\n", 414);
  // Known to be too long before the request line is complete.
  expectReqError("GET " + target + "bc", 414);
}

TEST(RequestHead, HeadLimits) {
  Limits limits;
  limits.maxHeadBytes = 100;
  limits.maxHeaders = 3;
  std::string ok = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
  EXPECT_EQ(parseReq(ok, limits).status, ParseStatus::Complete);
  expectReqError("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, limits);

  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100, 'v') + "\r\n\r\n";
  expectReqError(big, 431, limits);
  // Incomplete but already past the limit: answer now rather than wait.
  expectReqError(big.substr(0, 101), 431, limits);
  EXPECT_EQ(parseReq(big.substr(0, 100), limits).status, ParseStatus::Incomplete);

  // A head of exactly maxHeadBytes fits.
  std::string exact = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  exact += std::string(limits.maxHeadBytes - exact.size() - 4, 'v') + "\r\n\r\n";
  ASSERT_EQ(exact.size(), limits.maxHeadBytes);
  EXPECT_EQ(parseReq(exact, limits).status, ParseStatus::Complete);
}

TEST(RequestHead, IncompleteAtEverySplitPoint) {
  const std::string s =
      "POST /upload?id=7 HTTP/1.1\r\nHost: reviews.default.svc.cluster.local:9080\r\n"
      "Content-Type: application/json\r\nX-Long: " +
      std::string(40, 'z') + "\r\nContent-Length: 12\r\n\r\n";
  for (size_t n = 0; n < s.size(); ++n) {
    Req r = parseReq(std::string_view(s).substr(0, n));
    EXPECT_EQ(r.status, ParseStatus::Incomplete) << "prefix " << n;
  }
  Req r = parseReq(s);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.headBytes, s.size());
  EXPECT_EQ(r.head.framing.length, 12u);
}

TEST(RequestHead, PipelinedBackToBack) {
  const std::string buf =
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      "DELETE /c HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n";
  std::vector<std::string> targets;
  size_t off = 0;
  RequestHead head;
  ParseError err;
  std::vector<const Header*> storage;
  for (int i = 0; i < 10 && off < buf.size(); ++i) {
    ASSERT_EQ(parseRequestHead(buf.data() + off, buf.size() - off, {}, head, err),
              ParseStatus::Complete);
    storage.push_back(head.headers.data());
    targets.emplace_back(head.target);
    off += head.headBytes;
    BodyFramer body(head.framing);
    auto step = body.consume(buf.data() + off, buf.size() - off);
    ASSERT_EQ(step.status, BodyFramer::Status::Done);
    off += step.consumed;
  }
  EXPECT_EQ(off, buf.size());
  EXPECT_EQ(targets, (std::vector<std::string>{"/a", "/b", "/c"}));
  EXPECT_FALSE(head.keepAlive);
  // The vector is reused across parses: same-sized heads do not reallocate.
  ASSERT_EQ(storage.size(), 3u);
  EXPECT_EQ(storage[1], storage[2]);
}

struct Resp {
  ResponseHead head;
  ParseError err;
  ParseStatus status = ParseStatus::Error;
};

Resp parseResp(std::string_view s, bool head = false, const Limits& limits = {}) {
  Resp r;
  r.status = parseResponseHead(s.data(), s.size(), limits, head, r.head, r.err);
  return r;
}

TEST(ResponseHead, Basic) {
  std::string s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\nhi";
  Resp r = parseResp(s);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.status, 200);
  EXPECT_EQ(r.head.reason, "OK");
  EXPECT_EQ(r.head.headBytes, s.size() - 2);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::ContentLength);
  EXPECT_EQ(r.head.framing.length, 2u);
  EXPECT_TRUE(r.head.keepAlive);
  ASSERT_NE(r.head.find("server"), nullptr);

  r = parseResp("HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n");  // no reason phrase
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.status, 503);
  EXPECT_TRUE(r.head.reason.empty());
}

TEST(ResponseHead, FramingWithoutBody) {
  const std::string cl = "Content-Length: 10\r\n\r\n";
  Resp r = parseResp("HTTP/1.1 200 OK\r\n" + cl, /*head=*/true);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::None);
  EXPECT_TRUE(r.head.keepAlive);
  for (const char* line : {"HTTP/1.1 204 No Content\r\n", "HTTP/1.1 304 Not Modified\r\n",
                           "HTTP/1.1 100 Continue\r\n", "HTTP/1.1 101 Switching Protocols\r\n"}) {
    r = parseResp(line + cl);
    ASSERT_EQ(r.status, ParseStatus::Complete) << line;
    EXPECT_EQ(r.head.framing.kind, Framing::Kind::None) << line;
  }
}

// The proxy writes a response's framing itself from what the parser
// decided, so anything that a client could read another way is refused: a
// length and a coding together, or a coding the proxy would have to drop.
TEST(ResponseHead, AmbiguousOrForeignFramingIs502) {
  for (std::string h : {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                        "Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: gzip\r\n",
                        "Transfer-Encoding: chunked, chunked\r\n", "Transfer-Encoding: ,\r\n",
                        "Content-Length: 5, 6\r\n"}) {
    Resp r = parseResp("HTTP/1.1 200 OK\r\n" + h + "\r\n");
    ASSERT_EQ(r.status, ParseStatus::Error) << h;
    EXPECT_EQ(r.err.status, 502) << h;
    // Whether or not a body follows: the head itself is forwarded.
    r = parseResp("HTTP/1.1 304 Not Modified\r\n" + h + "\r\n");
    EXPECT_EQ(r.status, ParseStatus::Error) << h;
  }
}

TEST(ResponseHead, DeclaredFramingSurvivesABodilessResponse) {
  Resp r = parseResp("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", /*head=*/true);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::None);
  EXPECT_EQ(r.head.declared.kind, Framing::Kind::ContentLength);
  EXPECT_EQ(r.head.declared.length, 5u);
  r = parseResp("HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n", /*head=*/true);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.declared.kind, Framing::Kind::Chunked);
}

TEST(ResponseHead, ChunkedAndClose) {
  Resp r = parseResp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::Chunked);
  EXPECT_TRUE(r.head.keepAlive);

  r = parseResp("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.framing.kind, Framing::Kind::UntilClose);
  EXPECT_FALSE(r.head.keepAlive);

  r = parseResp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_FALSE(r.head.keepAlive);
  r = parseResp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_TRUE(r.head.keepAlive);
  r = parseResp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_FALSE(r.head.keepAlive);
}

TEST(ResponseHead, ErrorsAre502) {
  for (std::string s : {"HTTP/1.1 99 Low\r\n\r\n", "HTTP/1.1 600 High\r\n\r\n",
                        "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n",
                        "HTTP/2.0 200 OK\r\n\r\n", "HTTX/1.1 200 OK\r\n\r\n",
                        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
                        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
                        "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n"}) {
    Resp r = parseResp(s);
    ASSERT_EQ(r.status, ParseStatus::Error) << s;
    EXPECT_EQ(r.err.status, 502) << s;
  }
  Limits limits;
  limits.maxHeadBytes = 64;
  std::string big = "HTTP/1.1 200 OK\r\nX: " + std::string(80, 'v');
  Resp r = parseResp(big, false, limits);
  ASSERT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.err.status, 502);
}

TEST(ResponseHead, IncompleteAtEverySplitPoint) {
  const std::string s = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Y: z\r\n\r\n";
  for (size_t n = 0; n < s.size(); ++n) {
    EXPECT_EQ(parseResp(std::string_view(s).substr(0, n)).status, ParseStatus::Incomplete) << n;
  }
  EXPECT_EQ(parseResp(s).status, ParseStatus::Complete);
}

TEST(Helpers, IequalsAndTokens) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_FALSE(iequals("Content-Length", "content-lengt"));
  EXPECT_FALSE(iequals("a-b", std::string_view("a\rb")));  // no |0x20 folding of '-'
  EXPECT_FALSE(iequals("[", "{"));
  EXPECT_TRUE(headerHasToken("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(headerHasToken(" close ", "close"));
  EXPECT_FALSE(headerHasToken("closed, x", "close"));
  EXPECT_FALSE(headerHasToken("", "close"));
}

TEST(Helpers, HopByHop) {
  for (const char* n : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Transfer-Encoding",
                        "upgrade"}) {
    EXPECT_TRUE(isHopByHop(n)) << n;
  }
  for (const char* n : {"Host", "Content-Length", "Trailer", "x-request-id", "T"}) {
    EXPECT_FALSE(isHopByHop(n)) << n;
  }
  EXPECT_TRUE(isHopByHop("X-Secret", "close, x-secret"));
  EXPECT_FALSE(isHopByHop("X-Other", "close, x-secret"));
}

}  // namespace
}  // namespace sluice::http
