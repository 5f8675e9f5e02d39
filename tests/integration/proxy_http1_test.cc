// The HTTP/1.1 engine of sluiced as a client sees it: connection reuse,
// pipelining, streamed request bodies, 100-continue, HTTP/1.0 clients,
// Connection: close, and the answers to malformed requests.
#include <gtest/gtest.h>
#include <re2/re2.h>

#include "proxy_fixture.h"

namespace sluice::itest::proxy {
namespace {

using ProxyHttp1 = ProxyTest;

std::string chunked(const std::string& body, size_t piece) {
  std::string out;
  for (size_t i = 0; i < body.size(); i += piece) {
    size_t n = std::min(piece, body.size() - i);
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", n);
    out += size;
    out.append(body, i, n);
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

// Many requests, few upstream connections: one keep-alive client connection
// and then many short-lived ones all ride the workers' idle pools.
TEST_F(ProxyHttp1, KeepAliveReusesUpstreamConnections) {
  ASSERT_NO_FATAL_FAILURE(startMesh(2));
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  for (int i = 0; i < 100; ++i) {
    auto r = conn->send({.target = "/ka/" + std::to_string(i), .headers = {{"Host", kEcho}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    EXPECT_FALSE(r->header("connection").has_value()) << "keep-alive answer said " << *r->header("connection");
  }
  EXPECT_TRUE(conn->isOpen()) << "the client connection was closed";
  for (int i = 0; i < 50; ++i) {
    auto r = get("/fresh/" + std::to_string(i));
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary();
  }
  EXPECT_EQ(mesh_.counter("echo"), 150);
  auto s = stats();
  EXPECT_EQ(s["upstream_rq_total"], 150);
  // One pooled connection per worker is enough for sequential traffic.
  EXPECT_GE(s["upstream_cx_total"], 1);
  EXPECT_LE(s["upstream_cx_total"], 2) << "upstream connections were not reused";
  EXPECT_GE(s["upstream_cx_reused"], 148);
}

TEST_F(ProxyHttp1, PipelinedRequestsAreAnsweredInOrder) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  // The first one is slow: answers must still come back in request order.
  std::string req;
  for (std::string t : {"/p1?delay=150ms", "/p2", "/p3"}) {
    req += "GET " + t + " HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n";
  }
  ASSERT_OK(c->send(req));
  for (std::string want : {"/p1", "/p2", "/p3"}) {
    auto r = c->readResponse();
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->body << out();
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    EXPECT_EQ(j["path"], want) << r->body;
  }
  EXPECT_EQ(mesh_.counter("echo"), 3);
  // And the connection stays usable.
  ASSERT_OK(c->send("GET /p4 HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
}

// More pipelined input than the proxy buffers (128 KiB) while a request is in
// flight: reading pauses and resumes, and every answer comes back in order.
TEST_F(ProxyHttp1, LongPipelinedBurstIsAnsweredInOrder) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw(10000ms);
  ASSERT_OK(c);
  constexpr int kRequests = 600;
  const std::string pad(300, 'p');
  std::string req;
  for (int i = 0; i < kRequests; ++i) {
    req += "GET /burst/" + std::to_string(i) + " HTTP/1.1\r\nHost: " + kEcho + "\r\nX-Pad: " + pad + "\r\n\r\n";
  }
  ASSERT_GT(req.size(), 128u * 1024);
  // A separate writer: the proxy is allowed to stop reading until we read.
  std::thread writer([&] { (void)c->send(req); });
  int inOrder = 0;
  for (int i = 0; i < kRequests; ++i) {
    auto r = c->readResponse();
    if (!r) {
      ADD_FAILURE() << "response " << i << ": " << r.error() << out();
      break;
    }
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (r->status == 200 && j.is_object() && j["path"] == "/burst/" + std::to_string(i)) ++inOrder;
  }
  writer.join();
  EXPECT_EQ(inOrder, kRequests);
  EXPECT_EQ(mesh_.counter("echo"), kRequests);
}

// Responses without a body (HEAD, 204, 304) end at their head; the
// connection must not wait for body bytes that never come.
TEST_F(ProxyHttp1, BodylessResponsesKeepTheConnectionInStep) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw(3000ms);
  ASSERT_OK(c);
  ASSERT_OK(c->send("HEAD /h?size=1000 HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
  auto head = c->readResponse(true);
  ASSERT_OK(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length").value_or(""), "1000");
  for (std::string status : {"204", "304"}) {
    ASSERT_OK(c->send("GET /s?status=" + status + " HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, std::stoi(status));
  }
  ASSERT_OK(c->send("GET /next HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
  auto next = c->readResponse();
  ASSERT_OK(next);
  EXPECT_EQ(next->status, 200);
  EXPECT_TRUE(c->buffered().empty()) << "stray bytes: " << c->buffered().substr(0, 100);
}

// Trailers after the last chunk belong to the body's framing and pass through.
TEST_F(ProxyHttp1, ChunkedBodyWithTrailersIsForwarded) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("POST /t HTTP/1.1\r\nHost: " + kEcho + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
                    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n" +
                    "GET /after HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  EXPECT_EQ(j["body_bytes"], 11) << r->body;
  auto after = c->readResponse();
  ASSERT_OK(after);
  EXPECT_EQ(nlohmann::json::parse(after->body, nullptr, false)["path"], "/after") << after->body;
}

// Bodies arrive intact in both framings: the upstream counts the payload
// bytes it decoded. 20 MiB cannot fit any buffer in the path, so it only
// gets through if back-pressure pauses and resumes the client correctly.
TEST_F(ProxyHttp1, RequestBodiesStreamThrough) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  for (size_t size : {size_t(1) << 20, size_t(20) << 20}) {
    const std::string body(size, 'b');
    {
      auto conn = HttpConnection::connect(mesh_.outboundPort(), 10000ms);
      ASSERT_OK(conn);
      auto start = std::chrono::steady_clock::now();
      auto r = conn->send({.method = "POST", .target = "/cl", .headers = {{"Host", kEcho}}, .body = body});
      ASSERT_OK(r);
      ASSERT_EQ(r->status, 200) << r->summary() << out();
      EXPECT_EQ(r->json()["body_bytes"], size) << "Content-Length body of " << size;
      EXPECT_LT(msSince(start), 5000);
    }
    {
      auto conn = HttpConnection::connect(mesh_.outboundPort(), 10000ms);
      ASSERT_OK(conn);
      ASSERT_OK(conn->sendRaw("POST /chunked HTTP/1.1\r\nHost: " + kEcho +
                              "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 65536 + 7)));
      auto r = conn->readResponse();
      ASSERT_OK(r);
      ASSERT_EQ(r->status, 200) << r->summary() << out();
      EXPECT_EQ(r->json()["body_bytes"], size) << "chunked body of " << size;
      // The same connection carries the next request.
      auto again = conn->send({.target = "/after", .headers = {{"Host", kEcho}}});
      ASSERT_OK(again);
      EXPECT_EQ(again->status, 200);
    }
  }
}

TEST_F(ProxyHttp1, ExpectContinueGets100ThenTheResponse) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("POST /upload HTTP/1.1\r\nHost: " + kEcho +
                    "\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"));
  // The body is held back until the 100 arrives, as curl does.
  auto interim = c->readUntil("\r\n\r\n");
  ASSERT_OK(interim);
  EXPECT_EQ(interim->rfind("HTTP/1.1 100 ", 0), 0u) << *interim;
  ASSERT_OK(c->send("hello world"));
  std::vector<int> more;
  auto r = c->readResponse(false, &more);
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(more.empty()) << "a second interim response was forwarded";
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  EXPECT_EQ(j["body_bytes"], 11) << r->body;
  EXPECT_FALSE(j["headers"].contains("expect")) << "Expect is hop-by-hop for the proxy: " << r->body;
}

TEST_F(ProxyHttp1, Http10ClientWithoutKeepAliveGetsACloseAfterTheResponse) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /old HTTP/1.0\r\nHost: " + kEcho + "\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("connection").value_or(""), "close");
  EXPECT_TRUE(r->closeDelimited || c->peerClosed()) << "the connection stayed open";
}

TEST_F(ProxyHttp1, Http10ClientWithKeepAliveKeepsItsConnection) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(c->send("GET /old HTTP/1.0\r\nHost: " + kEcho + "\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->header("connection").value_or(""), "keep-alive") << "request " << i;
    EXPECT_TRUE(r->header("content-length").has_value()) << "a 1.0 keep-alive body needs a length";
    EXPECT_FALSE(r->closeDelimited);
  }
}

// A 1.0 client cannot read chunked framing: the proxy decodes it and ends
// the body by closing.
TEST_F(ProxyHttp1, ChunkedUpstreamResponseReachesHttp10ClientDechunked) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  // Sanity: a 1.1 client gets the upstream's chunked framing.
  {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /c?chunked=true&size=100000 HTTP/1.1\r\nHost: " + kEcho + "\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->header("transfer-encoding").value_or(""), "chunked");
    EXPECT_EQ(r->body, std::string(100000, 'x'));
  }
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /c?chunked=true&size=100000 HTTP/1.0\r\nHost: " + kEcho +
                    "\r\nConnection: keep-alive\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(r->header("transfer-encoding").has_value()) << "chunked framing sent to a 1.0 client";
  EXPECT_FALSE(r->header("content-length").has_value());
  EXPECT_EQ(r->header("connection").value_or(""), "close");
  EXPECT_TRUE(r->closeDelimited);
  EXPECT_EQ(r->body.size(), 100000u);
  EXPECT_EQ(r->body, std::string(100000, 'x')) << "chunk framing leaked into the body";
}

TEST_F(ProxyHttp1, ConnectionCloseIsHonoured) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /bye HTTP/1.1\r\nHost: " + kEcho + "\r\nConnection: close\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("connection").value_or(""), "close");
  EXPECT_TRUE(c->peerClosed()) << "sluiced kept the connection open after Connection: close";
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  EXPECT_FALSE(j["headers"].contains("connection")) << "Connection forwarded upstream: " << r->body;
}

TEST_F(ProxyHttp1, OversizedHeadGets431) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET / HTTP/1.1\r\nHost: " + kEcho + "\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 431) << r->body;
  EXPECT_TRUE(r->closeDelimited || c->peerClosed());
  EXPECT_EQ(mesh_.counter("echo"), 0);
}

TEST_F(ProxyHttp1, ContentLengthWithTransferEncodingGets400) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto c = raw();
  ASSERT_OK(c);
  // A smuggling attempt: the two framings disagree on where the body ends.
  ASSERT_OK(c->send("POST / HTTP/1.1\r\nHost: " + kEcho +
                    "\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " +
                    kEcho + "\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_TRUE(c->peerClosed()) << "connection kept open after a framing error";
  EXPECT_EQ(mesh_.counter("echo"), 0) << "a request reached the upstream";
}

TEST_F(ProxyHttp1, BadChunkSizeGets400AndClose) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  for (std::string bad : {"zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"}) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("POST /chunks HTTP/1.1\r\nHost: " + kEcho + "\r\nTransfer-Encoding: chunked\r\n\r\n" + bad));
    auto r = c->readResponse();
    ASSERT_TRUE(r) << r.error() << " for body " << ::testing::PrintToString(bad) << out();
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_EQ(r->header("connection").value_or(""), "close");
    EXPECT_TRUE(c->peerClosed()) << "connection kept open after a bad chunk";
  }
  EXPECT_EQ(mesh_.counter("echo"), 0) << "the upstream completed a request with a broken body";
  EXPECT_EQ(mesh_.servedBy(kEcho, "/"), "echo");
}

TEST_F(ProxyHttp1, MalformedBytesGet400AndNoCrash) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  const std::vector<std::string> garbage = {
      std::string("\x00\x01\x02\xff\xfe garbage\r\n\r\n", 17),
      "GET\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: echo:9080\r\nBad Header: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: echo:9080\r\n folded: continuation\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: echo:9080\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "GET / HTTP/1.1\r\nHost: echo:9080\r\nContent-Length: -5\r\n\r\n",
      "GET /\x01 HTTP/1.1\r\nHost: echo:9080\r\n\r\n",
  };
  for (const auto& g : garbage) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send(g));
    auto r = c->readResponse();
    ASSERT_TRUE(r) << r.error() << " for input " << ::testing::PrintToString(g) << out();
    EXPECT_EQ(r->status, 400) << "input " << ::testing::PrintToString(g) << " body " << r->body;
    ASSERT_TRUE(mesh_.daemon().running()) << out();
  }
  // Random bytes, seeded: never a crash, always an answer or a close.
  uint64_t x = 0x5eed;
  for (int i = 0; i < 50; ++i) {
    std::string bytes;
    for (int k = 0; k < 300; ++k) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      bytes.push_back(char(x >> 56));
    }
    auto c = raw(2000ms);
    ASSERT_OK(c);
    ASSERT_OK(c->send(bytes + "\r\n\r\n"));
    auto r = c->readResponse();
    if (r) {
      EXPECT_GE(r->status, 400) << "random input " << i;
    }
  }
  ASSERT_TRUE(mesh_.daemon().running()) << out();
  EXPECT_EQ(mesh_.counter("echo"), 0);
  EXPECT_EQ(mesh_.servedBy(kEcho, "/"), "echo");
  EXPECT_GE(stat("downstream_rq_bad"), int64_t(garbage.size()));
}

TEST_F(ProxyHttp1, RequestIdFromTheClientPassesThroughUnchanged) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto r = get("/", {{"X-Request-Id", "client-id-42 with spaces"}});
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200) << r->summary();
  EXPECT_EQ(r->json()["headers"]["x-request-id"], "client-id-42 with spaces") << r->body;

  auto gen = get("/");
  ASSERT_OK(gen);
  std::string id = gen->json()["headers"].value("x-request-id", "");
  EXPECT_TRUE(RE2::FullMatch(id, RE2("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
      << "generated x-request-id: " << id;
}

}  // namespace
}  // namespace sluice::itest::proxy

namespace sluice::itest::proxy {
namespace {

// A malformed request followed at once by the client's FIN still gets its
// 400, then the close. (A routed request whose client half-closes is
// cancelled like any abandoned one: timeouts_test.cc.)
TEST_F(ProxyHttp1, HalfClosedClientStillGetsItsError) {
  ASSERT_NO_FATAL_FAILURE(startMesh());
  auto conn = raw();
  ASSERT_OK(conn);
  ASSERT_OK(conn->send("GET\r\n\r\n"));
  ASSERT_EQ(::shutdown(conn->fd(), SHUT_WR), 0);
  auto r = conn->readResponse();
  ASSERT_TRUE(r) << r.error() << out();
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(eventually([&] { return conn->peerClosed(); }, 2000ms)) << "connection left open";
  ASSERT_TRUE(mesh_.daemon().running()) << out();
}

}  // namespace
}  // namespace sluice::itest::proxy
