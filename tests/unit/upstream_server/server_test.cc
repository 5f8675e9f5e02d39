// End-to-end tests of sluice-upstream's server core over real loopback
// sockets: the server runs in-process on an ephemeral 127.0.0.1 port.
#include "upstream_server/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "test_client.h"

namespace sluice::upstream_server {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::Response;
using Json = nlohmann::json;

class UpstreamServerTest : public ::testing::Test {
 protected:
  void SetUp() override { startServer(1); }

  void startServer(int threads) {
    server_ = std::make_unique<UpstreamServer>(ServerOptions{"127.0.0.1:0", "svc-a", threads});
    auto r = server_->start();
    ASSERT_TRUE(r.has_value()) << r.error();
    ASSERT_NE(server_->port(), 0);
  }

  static std::string get(const std::string& target, const std::string& extra = "") {
    return "GET " + target + " HTTP/1.1\r\nHost: upstream\r\n" + extra + "\r\n";
  }

  // One request on a fresh connection.
  Response roundTrip(const std::string& request) {
    Client c(server_->port());
    EXPECT_TRUE(c.connected());
    EXPECT_TRUE(c.send(request));
    auto r = c.read();
    EXPECT_TRUE(r.has_value()) << "no response to: " << request;
    return r.value_or(Response{});
  }

  std::unique_ptr<UpstreamServer> server_;
};

TEST_F(UpstreamServerTest, EchoesRequestAsJson) {
  Response r = roundTrip(get("/echo/path?a=1&b=x%20y", "X-Foo: bar\r\nX-Multi: 1\r\nx-multi: 2\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-upstream-name"), "svc-a");
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["name"], "svc-a");
  EXPECT_EQ(j["method"], "GET");
  EXPECT_EQ(j["path"], "/echo/path");
  EXPECT_EQ(j["query"], "a=1&b=x%20y");
  EXPECT_EQ(j["headers"]["host"], "upstream");
  EXPECT_EQ(j["headers"]["x-foo"], "bar");
  EXPECT_EQ(j["headers"]["x-multi"], "1, 2");
  EXPECT_EQ(j["body_bytes"], 0);
  EXPECT_EQ(j["request_number"], 1);
  EXPECT_EQ(server_->requestCount(), 1u);
}

TEST_F(UpstreamServerTest, EscapesAwkwardHeaderValuesIntoValidJson) {
  // Quotes, backslashes, tabs and an obs-text byte (0xe9) are legal in a
  // field value but each needs escaping in JSON.
  Response r = roundTrip(get("/", "X-Q: say \"hi\"\t\\ \xe9\r\n"));
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);  // throws (fails the test) on invalid JSON
  EXPECT_EQ(j["headers"]["x-q"], "say \"hi\"\t\\ \xc3\xa9");
}

TEST_F(UpstreamServerTest, StatusControlHeaderBeatsQuery) {
  EXPECT_EQ(roundTrip(get("/?status=404")).status, 404);
  EXPECT_EQ(roundTrip(get("/?status=404", "x-upstream-status: 502\r\n")).status, 502);
  EXPECT_EQ(roundTrip(get("/", "X-Upstream-Status: 201\r\n")).status, 201);
  Response bad = roundTrip(get("/?status=abc"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("status"), std::string::npos);
}

TEST_F(UpstreamServerTest, NoContentStatusHasNoBody) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/?status=204") + get("/second")));
  auto r1 = c.read();
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 204);
  EXPECT_TRUE(r1->body.empty());
  auto r2 = c.read();
  ASSERT_TRUE(r2);
  EXPECT_EQ(Json::parse(r2->body)["path"], "/second");
}

TEST_F(UpstreamServerTest, DelayDoesNotBlockOtherConnections) {
  Client slow(server_->port());
  Client fast(server_->port());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(slow.send(get("/?delay=300ms")));
  ASSERT_TRUE(fast.send(get("/fast")));
  auto rf = fast.read();
  auto tFast = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(rf);
  EXPECT_EQ(rf->status, 200);
  EXPECT_LT(tFast, 200ms);
  auto rs = slow.read();
  auto tSlow = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(rs);
  EXPECT_EQ(rs->status, 200);
  EXPECT_GE(tSlow, 290ms);
  EXPECT_LT(tSlow, 1500ms);
}

TEST_F(UpstreamServerTest, DelayByHeaderKeepsPipelinedOrder) {
  Client c(server_->port());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send(get("/one", "x-upstream-delay: 0.15s\r\n") + get("/two")));
  auto r1 = c.read();
  auto r2 = c.read();
  ASSERT_TRUE(r1 && r2);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 140ms);
  EXPECT_EQ(Json::parse(r1->body)["path"], "/one");
  EXPECT_EQ(Json::parse(r2->body)["path"], "/two");
  EXPECT_EQ(roundTrip(get("/?delay=soon")).status, 400);
}

TEST_F(UpstreamServerTest, CloseBeforeClosesWithoutAnswer) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/?close=before")));
  EXPECT_TRUE(c.closedWithoutData());
  EXPECT_EQ(server_->requestCount(), 1u);  // it was still received and counted
}

TEST_F(UpstreamServerTest, CloseAfterAnswersThenCloses) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/", "x-upstream-close: after\r\n") + get("/never")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(c.closedWithoutData());
}

TEST_F(UpstreamServerTest, SizeStreamsPlainTextBody) {
  Response r = roundTrip(get("/?size=100000"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_EQ(r.header("content-length"), "100000");
  ASSERT_EQ(r.body.size(), 100000u);
  EXPECT_EQ(r.body.find_first_not_of('x'), std::string::npos);
}

TEST_F(UpstreamServerTest, ChunkedResponses) {
  Response big = roundTrip(get("/?size=150000&chunked=1"));
  EXPECT_EQ(big.header("transfer-encoding"), "chunked");
  EXPECT_EQ(big.header("content-length"), "");
  ASSERT_EQ(big.body.size(), 150000u);
  EXPECT_EQ(big.body.find_first_not_of('x'), std::string::npos);

  Response json = roundTrip(get("/j", "x-upstream-chunked: true\r\n"));
  EXPECT_EQ(json.header("transfer-encoding"), "chunked");
  EXPECT_EQ(Json::parse(json.body)["path"], "/j");
}

TEST_F(UpstreamServerTest, ChunkedRequestBodyIsCounted) {
  Client c(server_->port());
  // Sent in pieces so the body is counted as it streams in, not from one buffer.
  ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(c.send("lo\r\n6\r\n world\r\n"));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(c.send("0\r\n\r\n"));
  auto r = c.read();
  ASSERT_TRUE(r);
  Json j = Json::parse(r->body);
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["body_bytes"], 11);
}

TEST_F(UpstreamServerTest, LargeContentLengthBodyIsCountedNotBuffered) {
  const size_t kBody = 1 << 20;  // 1 MiB: far above the per-connection input cap
  Client c(server_->port());
  ASSERT_TRUE(c.send("PUT /big HTTP/1.1\r\nHost: u\r\nContent-Length: " + std::to_string(kBody) + "\r\n\r\n"));
  ASSERT_TRUE(c.send(std::string(kBody, 'b') + get("/after")));
  auto r1 = c.read();
  auto r2 = c.read();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(Json::parse(r1->body)["body_bytes"], kBody);
  EXPECT_EQ(Json::parse(r2->body)["path"], "/after");
}

TEST_F(UpstreamServerTest, PipelinedRequestsAnsweredInOrder) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/first") + "POST /second HTTP/1.1\r\nHost: u\r\nContent-Length: 3\r\n\r\nabc"));
  auto r1 = c.read();
  auto r2 = c.read();
  ASSERT_TRUE(r1 && r2);
  Json j1 = Json::parse(r1->body);
  Json j2 = Json::parse(r2->body);
  EXPECT_EQ(j1["path"], "/first");
  EXPECT_EQ(j1["request_number"], 1);
  EXPECT_EQ(j2["path"], "/second");
  EXPECT_EQ(j2["body_bytes"], 3);
  EXPECT_EQ(j2["request_number"], 2);
}

TEST_F(UpstreamServerTest, ManyPipelinedRequestsWithoutReadingAreAllAnswered) {
  // More requests than fit the server's output bound: it must pause and
  // resume rather than buffer everything or drop any.
  constexpr int kCount = 3000;
  std::string batch;
  for (int i = 0; i < kCount; ++i) batch += get("/p" + std::to_string(i));
  Client c(server_->port());
  std::thread writer([&] { c.send(batch); });
  int ok = 0;
  for (int i = 0; i < kCount; ++i) {
    auto r = c.read();
    if (!r) break;
    if (Json::parse(r->body)["path"] == "/p" + std::to_string(i)) ++ok;
  }
  writer.join();
  EXPECT_EQ(ok, kCount);
}

TEST_F(UpstreamServerTest, Http10ClosesUnlessKeepAlive) {
  {
    Client c(server_->port());
    ASSERT_TRUE(c.send("GET /old HTTP/1.0\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(Json::parse(r->body)["path"], "/old");
    EXPECT_TRUE(c.closedWithoutData());
  }
  {
    Client c(server_->port());
    ASSERT_TRUE(c.send("GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "keep-alive");
    // chunked is not allowed towards an HTTP/1.0 client.
    ASSERT_TRUE(c.send("GET /ka2?chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r2 = c.read();
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->header("transfer-encoding"), "");
    EXPECT_EQ(Json::parse(r2->body)["path"], "/ka2");
  }
}

TEST_F(UpstreamServerTest, ConnectionCloseIsHonoured) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/bye", "Connection: close\r\n") + get("/ignored")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_EQ(Json::parse(r->body)["path"], "/bye");
  EXPECT_TRUE(c.closedWithoutData());
  EXPECT_EQ(server_->requestCount(), 1u);  // the request after close is never read
}

TEST_F(UpstreamServerTest, ExpectContinueGetsInterimResponse) {
  Client c(server_->port());
  ASSERT_TRUE(c.send("POST /e HTTP/1.1\r\nHost: u\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  auto interim = c.read(2s);
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(c.send("hello"));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Json::parse(r->body)["body_bytes"], 5);
}

TEST_F(UpstreamServerTest, CounterAndReset) {
  for (int i = 0; i < 3; ++i) EXPECT_EQ(roundTrip(get("/x")).status, 200);
  Json c1 = Json::parse(roundTrip(get("/__counter")).body);
  EXPECT_EQ(c1["name"], "svc-a");
  EXPECT_EQ(c1["requests"], 3);
  Json c2 = Json::parse(roundTrip(get("/__counter?again=1")).body);
  EXPECT_EQ(c2["requests"], 3);  // the counter endpoint does not count itself
  EXPECT_EQ(roundTrip("POST /__reset HTTP/1.1\r\nHost: u\r\nContent-Length: 0\r\n\r\n").status, 200);
  EXPECT_EQ(Json::parse(roundTrip(get("/__counter")).body)["requests"], 0);
  EXPECT_EQ(Json::parse(roundTrip(get("/y")).body)["request_number"], 1);
}

TEST_F(UpstreamServerTest, FailFirstThenSucceedsAndResetRearms) {
  std::vector<int> got;
  for (int i = 0; i < 4; ++i) got.push_back(roundTrip(get("/?fail_first=2")).status);
  EXPECT_EQ(got, (std::vector<int>{503, 503, 200, 200}));
  EXPECT_EQ(roundTrip(get("/", "x-upstream-fail-first: 2\r\n")).status, 200);
  roundTrip(get("/__reset"));
  EXPECT_EQ(roundTrip(get("/", "x-upstream-fail-first: 1\r\n")).status, 503);
}

TEST_F(UpstreamServerTest, AddsRequestedResponseHeaders) {
  Response r = roundTrip(get("/", "x-upstream-response-header: x-a: one\r\n"
                                  "X-Upstream-Response-Header: x-b:two words\r\n"
                                  "x-upstream-response-header: x-a: again\r\n"));
  EXPECT_EQ(r.header("x-a"), "one\nagain");
  EXPECT_EQ(r.header("x-b"), "two words");
  EXPECT_EQ(roundTrip(get("/", "x-upstream-response-header: nocolon\r\n")).status, 400);
}

TEST_F(UpstreamServerTest, MalformedRequestGets400AndClose) {
  Client c(server_->port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: u\r\nBad Header\r\n\r\n"));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(c.closedWithoutData());

  Client c2(server_->port());
  ASSERT_TRUE(c2.send("POST / HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
  auto r2 = c2.read();
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 400);
}

TEST_F(UpstreamServerTest, HeadRequestHasLengthButNoBody) {
  Client c(server_->port());
  ASSERT_TRUE(c.send("HEAD /?size=10 HTTP/1.1\r\nHost: u\r\n\r\n" + get("/next")));
  // The test decoder does not know the request was HEAD, so it takes the
  // first 10 bytes after the head as body: they must be the next status line.
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("content-length"), "10");
  EXPECT_EQ(r->body.substr(0, 10), "HTTP/1.1 2");
}

TEST_F(UpstreamServerTest, OversizedHeadGets431) {
  Client c(server_->port());
  ASSERT_TRUE(c.send(get("/", "X-Big: " + std::string(70000, 'a') + "\r\n")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
}

TEST(UpstreamServerThreads, SeveralWorkersShareOneCounter) {
  UpstreamServer server(ServerOptions{"127.0.0.1:0", "multi", 3});
  ASSERT_TRUE(server.start().has_value());
  constexpr int kClients = 30;
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < kClients; ++i) {
    ts.emplace_back([&] {
      Client c(server.port());
      for (int k = 0; k < 5; ++k) {
        if (!c.send("GET / HTTP/1.1\r\nHost: u\r\n\r\n")) return;
        auto r = c.read();
        if (r && r->status == 200) ++ok;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), kClients * 5);
  EXPECT_EQ(server.requestCount(), static_cast<uint64_t>(kClients * 5));
  EXPECT_EQ(server.boundAddress(), "127.0.0.1:" + std::to_string(server.port()));
  server.stop();
  server.stop();  // idempotent
}

TEST(UpstreamServerStart, RejectsBadOptions) {
  EXPECT_FALSE(UpstreamServer(ServerOptions{"nonsense", "n", 1}).start().has_value());
  EXPECT_FALSE(UpstreamServer(ServerOptions{"127.0.0.1:99999", "n", 1}).start().has_value());
  EXPECT_FALSE(UpstreamServer(ServerOptions{"127.0.0.1:0", "bad\r\nname", 1}).start().has_value());
  EXPECT_FALSE(UpstreamServer(ServerOptions{"127.0.0.1:0", "n", 0}).start().has_value());
}

}  // namespace
}  // namespace sluice::upstream_server
