// Request smuggling and framing, probed as an attacker would: requests and
// responses whose framing two hops could read differently, sent through
// sluiced (explicit mode, 2 workers) to a RecordingUpstream that keeps the
// exact head it received and answers each request with its own target
// (x-request-target), so a victim can tell whether it got its own answer.
// Also the CONNECT answer and the admin listener under slow clients.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "proxy_fixture.h"
#include "recording_upstream.h"

namespace sluice::itest::proxy {
namespace {

constexpr std::string_view kRawConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: raw
  namespace: default
spec:
  hosts:
  - raw.default.svc.cluster.local
  addresses:
  - 127.10.0.50
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${RAW_PORT}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: raw
  namespace: default
spec:
  hosts:
  - raw
  http:
  - route:
    - destination:
        host: raw
)";

class Smuggling : public ::testing::Test {
 protected:
  void SetUp() override {
    auto up = RecordingUpstream::start("raw");
    ASSERT_OK(up);
    up_ = std::move(*up);
    mesh_.setVar("RAW_PORT", std::to_string(up_->port()));
    auto cfg = renderTemplate(kRawConfig, mesh_.vars());
    ASSERT_OK(cfg);
    ASSERT_OK(mesh_.writeConfig("raw.yaml", *cfg));
    ASSERT_OK(mesh_.startDaemon(2));
  }

  std::expected<RawConn, std::string> raw(Millis timeout = 5000ms) {
    return RawConn::connect(mesh_.outboundPort(), timeout);
  }

  // Plain GETs on new connections, each of which must get the answer to
  // its own request: the upstream echoes the target it parsed.
  void expectVictimsServed(int n) {
    for (int i = 0; i < n; ++i) {
      auto c = raw();
      ASSERT_OK(c);
      std::string target = "/echo?victim" + std::to_string(i);
      ASSERT_OK(c->send("GET " + target + " HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
      auto r = c->readResponse();
      ASSERT_OK(r);
      EXPECT_EQ(r->status, 200) << target;
      EXPECT_EQ(r->header("x-request-target").value_or("none"), target) << "a victim got another request's answer";
    }
  }

  // Targets the upstream parsed that the test never sent as a request.
  std::vector<std::string> smuggled() {
    std::vector<std::string> out;
    for (const RecordedRequest& r : up_->requests()) {
      if (r.target.find("SMUGGLED") != std::string::npos) out.push_back(r.head);
    }
    return out;
  }

  TempDir tmp_;
  Mesh mesh_{tmp_};
  std::unique_ptr<RecordingUpstream> up_;
};

// The issue's probe: `Connection: Content-Length` made sluiced drop the
// length while it still forwarded the body by it, so the body became the
// next request on the pooled upstream connection and a later client got
// its answer. Refused now (400), and nothing reaches the upstream.
TEST_F(Smuggling, ConnectionNamingAFramingHeaderIsRefused) {
  const std::string smuggledGet = "GET /echo?SMUGGLED HTTP/1.1\r\nX-Ignore: ";
  const std::vector<std::string> attacks = {
      "POST /echo HTTP/1.1\r\nHost: raw:9080\r\nConnection: Content-Length\r\nContent-Length: " +
          std::to_string(smuggledGet.size()) + "\r\n\r\n" + smuggledGet,
      "POST /echo HTTP/1.1\r\nHost: raw:9080\r\nConnection: keep-alive, transfer-encoding\r\n"
      "Transfer-Encoding: chunked\r\n\r\n" +
          fmt::format("{:x}\r\n{}\r\n0\r\n\r\n", smuggledGet.size(), smuggledGet),
      "POST /echo HTTP/1.1\r\nHost: raw:9080\r\nConnection: Host\r\nContent-Length: 0\r\n\r\n",
  };
  for (int round = 0; round < 4; ++round) {
    for (const std::string& attack : attacks) {
      auto c = raw();
      ASSERT_OK(c);
      ASSERT_OK(c->send(attack));
      auto r = c->readResponse();
      ASSERT_OK(r);
      EXPECT_EQ(r->status, 400) << attack;
      EXPECT_TRUE(c->peerClosed()) << "the connection of a refused request closes";
    }
    expectVictimsServed(4);
  }
  EXPECT_TRUE(smuggled().empty()) << "the upstream parsed a smuggled request:\n" << smuggled().front();
  for (const RecordedRequest& r : up_->requests()) {
    EXPECT_NE(r.target, "/echo") << "a refused request reached the upstream:\n" << r.head;
  }
}

// Spellings the parser accepts as one framing reach the upstream in one
// clean form: exactly one framing header, written by sluiced.
TEST_F(Smuggling, OddFramingReachesTheUpstreamInOneCleanForm) {
  struct Case {
    std::string headers, body, expect;
    size_t bodyBytes;
  };
  const std::vector<Case> cases = {
      {"Transfer-Encoding: ,chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", "transfer-encoding: chunked", 5},
      {"Transfer-Encoding: chunked,\r\n", "5\r\nhello\r\n0\r\n\r\n", "transfer-encoding: chunked", 5},
      {"Content-Length: 5, 5\r\n", "hello", "content-length: 5", 5},
      {"Content-Length: 5\r\nContent-Length: 5\r\n", "hello", "content-length: 5", 5},
  };
  auto c = raw();
  ASSERT_OK(c);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    std::string target = "/odd" + std::to_string(i);
    ASSERT_OK(c->send("POST " + target + " HTTP/1.1\r\nHost: raw:9080\r\n" + k.headers + "\r\n" + k.body));
    auto r = c->readResponse();
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << k.headers;
    EXPECT_EQ(r->header("x-request-target").value_or(""), target);
  }
  auto seen = up_->requests();
  ASSERT_EQ(seen.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const RecordedRequest& r = seen[i];
    int framing = 0;
    std::string line;
    for (const Header& h : r.headers) {
      std::string name = h.name;
      for (char& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      if (name == "content-length" || name == "transfer-encoding") {
        ++framing;
        line = name + ": " + h.value;
      }
    }
    EXPECT_EQ(framing, 1) << cases[i].headers << " arrived as:\n" << r.head;
    EXPECT_EQ(line, cases[i].expect) << r.head;
    EXPECT_EQ(r.bodyBytes, cases[i].bodyBytes) << r.head;
  }
}

// A response's framing is rebuilt too: a Connection header that names
// Content-Length cannot strip the length from a keep-alive answer (the next
// response would run into its body), and a length together with chunked is
// a broken upstream, 502 as Envoy answers it.
TEST_F(Smuggling, ResponseFramingIsRebuilt) {
  up_->setResponder([](const RecordedRequest& r) -> std::string {
    if (r.target == "/conn-cl") return "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello";
    if (r.target == "/cl-cl") return "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello";
    if (r.target == "/cl-te")
      return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             "19\r\n0123456789012345678901234\r\n0\r\n\r\n";
    return "";
  });
  auto c = raw();
  ASSERT_OK(c);
  for (const char* target : {"/conn-cl", "/cl-cl"}) {
    ASSERT_OK(c->send(std::string("GET ") + target + " HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-length").value_or("none"), "5") << target;
    EXPECT_EQ(r->body, "hello");
    EXPECT_FALSE(r->closeDelimited);
    // The next answer on the same connection is its own.
    ASSERT_OK(c->send("GET /after HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
    auto next = c->readResponse();
    ASSERT_OK(next);
    EXPECT_EQ(next->status, 200);
    EXPECT_EQ(next->header("x-request-target").value_or(""), "/after");
  }
  for (const char* version : {"HTTP/1.1", "HTTP/1.0"}) {
    auto c2 = raw();
    ASSERT_OK(c2);
    ASSERT_OK(c2->send(std::string("GET /cl-te ") + version + "\r\nHost: raw:9080\r\n\r\n"));
    auto r = c2->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 502) << version;
    EXPECT_EQ(r->body.find("0123456789"), std::string::npos) << "the broken body was forwarded";
  }
  expectVictimsServed(3);
}

// A chunked body crosses sluiced re-encoded: chunk extensions, leading
// zeros in sizes and trailers (which may name framing headers a next hop
// merges into the head) stop at sluiced, both ways.
TEST_F(Smuggling, ChunkedBodiesAreReEncoded) {
  up_->setResponder([](const RecordedRequest& r) -> std::string {
    if (r.target != "/chunked-answer") return "";
    return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0005;ext=\"x\"\r\nhello\r\n0\r\nContent-Length: 1000\r\n\r\n";
  });
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("POST /up HTTP/1.1\r\nHost: raw:9080\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "003;a=b\r\nabc\r\n2\r\nde\r\n0\r\nContent-Length: 1\r\nX-T: y\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  ASSERT_EQ(r->status, 200);
  ASSERT_TRUE(up_->waitForCount(1, 2000ms));
  EXPECT_EQ(up_->requests()[0].body, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");

  ASSERT_OK(c->send("GET /chunked-answer HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
  auto head = c->readUntil("\r\n\r\n");
  ASSERT_OK(head);
  EXPECT_NE(head->find("transfer-encoding: chunked\r\n"), std::string::npos) << *head;
  auto body = c->readUntil("0\r\n\r\n");
  ASSERT_OK(body);
  EXPECT_EQ(*body, "5\r\nhello\r\n0\r\n\r\n");
  // The connection is still in step.
  ASSERT_OK(c->send("GET /after HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
  auto next = c->readResponse();
  ASSERT_OK(next);
  EXPECT_EQ(next->header("x-request-target").value_or(""), "/after");
}

// A Host that is no authority is refused: it would be forwarded, echoed into
// a redirect's Location or become a mirror's Host.
TEST_F(Smuggling, HostThatIsNoAuthorityIs400) {
  for (std::string host : {"raw:9080#x", "raw:9080/x", "user@raw:9080", "raw:9080, other", "raw :9080"}) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /h HTTP/1.1\r\nHost: " + host + "\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 400) << host;
  }
  EXPECT_EQ(up_->count(), 0u);
}

// A request with an empty body ("Content-Length: 0") is complete with its
// head: it keeps its connection.
TEST_F(Smuggling, AnEmptyBodyKeepsTheConnection) {
  auto c = raw();
  ASSERT_OK(c);
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(c->send("POST /empty HTTP/1.1\r\nHost: raw:9080\r\nContent-Length: 0\r\n\r\n"));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_FALSE(r->header("connection").has_value()) << "said connection: " << *r->header("connection");
  }
  ASSERT_TRUE(up_->waitForCount(3, 2000ms));
  EXPECT_NE(up_->requests()[0].head.find("content-length: 0\r\n"), std::string::npos);
}

// Nothing asked the upstream to switch protocols: a 101 is its error, and
// the bytes after it are never read as this or another request's answer.
TEST_F(Smuggling, AnUnaskedSwitchOfProtocolsIs502) {
  up_->setResponder([](const RecordedRequest& r) -> std::string {
    if (r.target != "/switch") return "";
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n"
           "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED";
  });
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /switch HTTP/1.1\r\nHost: raw:9080\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 502);
  EXPECT_EQ(r->body.find("SMUGGLED"), std::string::npos);
  expectVictimsServed(3);
}

// CONNECT is answered 501 whether or not bytes follow the head, and the
// connection ends with the answer: what follows is not HTTP.
TEST_F(Smuggling, ConnectGets501WithOrWithoutBytesAfterIt) {
  for (std::string tail : {"", "GET /echo?SMUGGLED HTTP/1.1\r\nHost: raw:9080\r\n\r\n", "\x16\x03\x01 tls"}) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("CONNECT raw:443 HTTP/1.1\r\nHost: raw:443\r\n\r\n" + tail));
    auto r = c->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 501) << "tail: " << tail;
    EXPECT_TRUE(c->peerClosed());
  }
  EXPECT_TRUE(smuggled().empty());
}

// One client that trickles its request a byte at a time used to hold the
// admin thread (and every readiness probe) for as long as it kept going.
TEST_F(Smuggling, AdminAnswersWhileClientsTrickle) {
  const uint16_t admin = mesh_.adminPort();
  std::vector<RawConn> tricklers;
  for (int i = 0; i < 3; ++i) {
    auto t = RawConn::connect(admin, 10000ms);
    ASSERT_OK(t);
    tricklers.push_back(std::move(*t));
  }
  auto silent = RawConn::connect(admin, 10000ms);
  ASSERT_OK(silent);
  const auto opened = std::chrono::steady_clock::now();
  const std::string request = "GET /stats HTTP/1.1\r\nHost: a\r\n\r\n";
  for (int step = 0; step < 12; ++step) {
    for (RawConn& t : tricklers) ASSERT_OK(t.send(request.substr(size_t(step) % request.size(), 1)));
    auto start = std::chrono::steady_clock::now();
    auto probe = RawConn::connect(admin, 2000ms);
    ASSERT_OK(probe);
    ASSERT_OK(probe->send("GET /ready HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto r = probe->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(msSince(start), 500) << "/ready waited behind a slow client";
    std::this_thread::sleep_for(250ms);
  }
  // A client that never finishes is cut at its deadline (5 s), not kept.
  EXPECT_TRUE(silent->peerClosed());
  EXPECT_LT(msSince(opened), 8000);
  EXPECT_GE(msSince(opened), 4000) << "closed before its deadline";
}

// A probe that sends its request and closes its sending side at once
// (shutdown(SHUT_WR), `nc -N`) still gets its answer.
TEST_F(Smuggling, AdminAnswersARequestFollowedByItsFin) {
  for (int i = 0; i < 5; ++i) {
    auto probe = RawConn::connect(mesh_.adminPort(), 2000ms);
    ASSERT_OK(probe);
    ASSERT_OK(probe->send("GET /ready HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_EQ(::shutdown(probe->fd(), SHUT_WR), 0);
    auto r = probe->readResponse();
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
  }
}

}  // namespace
}  // namespace sluice::itest::proxy
