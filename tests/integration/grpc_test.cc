// gRPC through sluiced with a real client and server (Debian's
// python3-grpcio, tests/integration/grpc_peer.py): every kind of call, over
// an HTTP/2 upstream chosen by the ServiceEntry port's GRPC protocol;
// trailers intact, retries on grpc-status, deadlines passed on, errors
// passed through, and an HTTP/1.1 client reaching the same HTTP/2 upstream.
#include <gtest/gtest.h>

#include "../common/test_pki.h"
#include "proxy_fixture.h"
#include "recording_upstream.h"

namespace sluice::itest::proxy {
namespace {

constexpr std::string_view kGrpcConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc.default.svc.cluster.local]
  addresses: [127.10.0.50]
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {grpc: ${GRPC_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc]
  http:
  - match: [{uri: {exact: /sluice.test.Echo/Flaky}}]
    route: [{destination: {host: grpc}}]
    retries: {attempts: ${ATTEMPTS}, retryOn: unavailable}
  - match: [{uri: {exact: /sluice.test.Echo/Slow}}]
    timeout: 300ms
    route: [{destination: {host: grpc}}]
    retries: {attempts: 0}
  - match: [{uri: {exact: /sluice.test.Echo/Fault}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: grpc}}]
  - route: [{destination: {host: grpc}}]
    retries: {attempts: 0}
)";

class GrpcTest : public ::testing::Test {
 protected:
  // `serverTls`: the server speaks TLS with a certificate for the
  // service's name, signed by a CA written to ca.crt.
  void start(int failFirst = 0, int attempts = 3, bool serverTls = false) {
    const uint16_t port = freePort();
    ASSERT_NO_FATAL_FAILURE(server_ = startServer("g1", port, serverTls, failFirst));
    mesh_.setVar("GRPC_PORT", std::to_string(port));
    mesh_.setVar("ATTEMPTS", std::to_string(attempts));
    auto cfg = renderTemplate(kGrpcConfig, mesh_.vars());
    ASSERT_OK(cfg);
    ASSERT_OK(mesh_.writeConfig("grpc.yaml", *cfg));
    ASSERT_OK(mesh_.startDaemon(1));
  }

  // A gRPC server named `name` on `port`; `tls`: with a certificate for
  // grpc.default.svc.cluster.local, signed by the CA in ca.crt.
  Process startServer(const std::string& name, uint16_t port, bool tls = false, int failFirst = 0) {
    std::vector<std::string> argv = {"/usr/bin/python3", (repoRoot() / "tests/integration/grpc_peer.py").string(),
                                     "server", "--port", std::to_string(port), "--name", name, "--fail-first",
                                     std::to_string(failFirst)};
    if (tls) {
      if (!fs::exists(tmp_.path() / "server/tls.crt")) {
        sluice::testing::TestCert ca({.commonName = "test ca", .ca = true});
        sluice::testing::TestCert leaf({.commonName = "grpc.default.svc.cluster.local",
                                        .subjectAltNames = {"DNS:grpc.default.svc.cluster.local"}},
                                       &ca);
        leaf.write(tmp_.path() / "server");
        sluice::testing::TestCert::writeFile(tmp_.path() / "ca.crt", ca.certPem());
      }
      argv.insert(argv.end(), {"--cert", (tmp_.path() / "server/tls.crt").string(), "--key",
                               (tmp_.path() / "server/tls.key").string()});
    }
    auto p = Process::start(argv, tmp_.path() / ("grpc-server-" + name + ".log"));
    EXPECT_TRUE(p.has_value()) << p.error();
    if (!p) return {};
    EXPECT_TRUE(p->waitForLog("listening", 10000ms)) << p->logText();
    return std::move(*p);
  }

  // One call through sluiced's outbound listener; the JSON line the client printed.
  nlohmann::json call(const std::string& kind, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {"/usr/bin/python3", (repoRoot() / "tests/integration/grpc_peer.py").string(),
                                     "client", "--target", "127.0.0.1:" + std::to_string(mesh_.outboundPort()),
                                     "--authority", "grpc:9090", "--call", kind};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const fs::path out = tmp_.path() / ("client-" + std::to_string(++calls_) + ".log");
    auto p = Process::start(argv, out);
    if (!p) return {{"error", p.error()}};
    if (!p->wait(20000ms)) return {{"error", "client did not finish"}};
    const std::string text = p->logText();
    const size_t brace = text.rfind("{\"code\"");
    if (brace == std::string::npos) return {{"error", text}};
    return nlohmann::json::parse(text.substr(brace), nullptr, false);
  }

  std::string out() { return "\n" + mesh_.logs() + "\nserver: " + server_.logText(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
  Process server_;
  int calls_ = 0;
};

TEST_F(GrpcTest, EveryKindOfCallWithTrailersOverOneHttp2Connection) {
  start();
  nlohmann::json unary = call("unary", {"--message", "hello"});
  EXPECT_EQ(unary["code"], "OK") << unary.dump() << out();
  EXPECT_EQ(unary["responses"][0], "g1:hello");
  EXPECT_EQ(unary["trailers"]["x-served-by"], "g1") << "trailers arrive intact";
  EXPECT_FALSE(unary["trailers"].contains("content-type")) << "and only the trailers: " << unary.dump();
  nlohmann::json server = call("server", {"--n", "5"});
  EXPECT_EQ(server["code"], "OK") << server.dump();
  EXPECT_EQ(server["responses"].size(), 5u);
  EXPECT_EQ(server["responses"][4], "g1:4");
  nlohmann::json client = call("client", {"--n", "4"});
  EXPECT_EQ(client["responses"][0], "m0|m1|m2|m3") << client.dump();
  // Bidirectional: each message is sent only after the answer to the one
  // before came back through sluiced.
  nlohmann::json bidi = call("bidi", {"--n", "3"});
  EXPECT_EQ(bidi["code"], "OK") << bidi.dump();
  EXPECT_EQ(bidi["responses"], nlohmann::json::array({"echo:b0", "echo:b1", "echo:b2"}));
  // Four calls, four client connections, one HTTP/2 connection upstream.
  EXPECT_EQ(mesh_.stat("upstream_cx_http2_total"), 1) << out();
  EXPECT_EQ(mesh_.stat("upstream_rq_total"), 4);
  EXPECT_EQ(mesh_.stat("downstream_cx_http2_total"), 4);
}

TEST_F(GrpcTest, UnavailableIsRetriedAndOtherStatusesPassThrough) {
  start(/*failFirst=*/2);
  nlohmann::json flaky = call("flaky");
  EXPECT_EQ(flaky["code"], "OK") << flaky.dump() << out();
  EXPECT_EQ(mesh_.stat("upstream_rq_retry"), 2);
  // NOT_FOUND is not in retryOn: one attempt, and the client sees the
  // server's status and message (a trailers-only response passed on).
  nlohmann::json notFound = call("abort", {"--message", "5"});
  EXPECT_EQ(notFound["code"], "NOT_FOUND") << notFound.dump();
  EXPECT_EQ(notFound["details"], "asked to fail");
  EXPECT_EQ(mesh_.stat("upstream_rq_retry"), 2);
}

TEST_F(GrpcTest, RetriesRunOutAndTheLastStatusIsTheAnswer) {
  start(/*failFirst=*/10, /*attempts=*/2);
  nlohmann::json flaky = call("flaky");
  EXPECT_EQ(flaky["code"], "UNAVAILABLE") << flaky.dump() << out();
  EXPECT_EQ(flaky["details"], "not yet");
  EXPECT_EQ(mesh_.stat("upstream_rq_retry"), 2);
  EXPECT_EQ(mesh_.stat("upstream_rq_total"), 3);
}

TEST_F(GrpcTest, CancelledStreamsGiveTheirUnreadBytesBackToTheConnectionWindow) {
  start();
  // Each call leaves up to a stream window of answer unread in sluiced
  // when it is cancelled; 30 of them are more than the upstream
  // connection's window, which must open again each time.
  for (int i = 0; i < 30; ++i) {
    nlohmann::json c = call("cancel");
    ASSERT_EQ(c["code"], "CANCELLED") << i << " " << c.dump() << out();
  }
  nlohmann::json after = call("unary", {"--timeout", "5"});
  EXPECT_EQ(after["code"], "OK") << after.dump() << out();
  EXPECT_EQ(mesh_.stat("upstream_cx_http2_total"), 1) << "all on one connection";
}

TEST_F(GrpcTest, MaxRequestsPerConnectionClosesSpentConnections) {
  start();
  ASSERT_OK(mesh_.applyConfig("grpc-dr.yaml", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: grpc, namespace: default}
spec:
  host: grpc
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
)"));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(call("unary")["code"], "OK") << out();
  EXPECT_EQ(mesh_.stat("upstream_cx_http2_total"), 3);
  EXPECT_TRUE(eventually([&] { return mesh_.stat("upstream_cx_active") == 0; }, 3000ms))
      << "each spent connection closes: " << mesh_.stat("upstream_cx_active");
}

TEST_F(GrpcTest, Http2OverTlsToTheUpstreamWithAlpnH2) {
  start(0, 3, /*serverTls=*/true);
  // Plaintext to a TLS server fails (UNAVAILABLE); the DestinationRule's
  // tls makes it work, checked against the test CA.
  EXPECT_EQ(call("unary")["code"], "UNAVAILABLE") << out();
  ASSERT_OK(mesh_.applyConfig("grpc-dr.yaml", "apiVersion: networking.istio.io/v1\n"
                                              "kind: DestinationRule\n"
                                              "metadata: {name: grpc, namespace: default}\n"
                                              "spec:\n"
                                              "  host: grpc\n"
                                              "  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: " +
                                                  (tmp_.path() / "ca.crt").string() + "}}\n"));
  nlohmann::json r = call("unary", {"--message", "secure"});
  EXPECT_EQ(r["code"], "OK") << r.dump() << out();
  EXPECT_EQ(r["responses"][0], "g1:secure");
  EXPECT_EQ(r["trailers"]["x-served-by"], "g1");
  nlohmann::json stream = call("server", {"--n", "4"});
  EXPECT_EQ(stream["responses"].size(), 4u) << stream.dump();
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake"), 1);
  EXPECT_EQ(mesh_.stat("upstream_cx_http2_total"), 2) << "the failed plaintext one, then one TLS connection";
}

TEST_F(GrpcTest, TheClientsDeadlineReachesTheServer) {
  start();
  nlohmann::json r = call("deadline", {"--timeout", "3"});
  ASSERT_EQ(r["code"], "OK") << r.dump() << out();
  const int left = std::stoi(r["responses"][0].get<std::string>());
  EXPECT_GT(left, 2000) << "grpc-timeout was passed on";
  EXPECT_LE(left, 3100) << "the client's own rounding may add a little";
}

TEST_F(GrpcTest, ARouteTimeoutIsDeadlineExceededAndOtherLocalAnswersAreGrpcStatuses) {
  start();
  nlohmann::json slow = call("slow", {"--message", "3000"});
  EXPECT_EQ(slow["code"], "DEADLINE_EXCEEDED") << slow.dump() << out();
  EXPECT_EQ(slow["details"], "upstream request timeout");
  nlohmann::json fault = call("fault");
  EXPECT_EQ(fault["code"], "UNAVAILABLE") << fault.dump();
  EXPECT_EQ(fault["details"], "fault filter abort");
  // No route: 404 NR becomes UNIMPLEMENTED, the reason in grpc-message.
  nlohmann::json nowhere = call("unary", {"--authority", "nowhere:9090"});
  EXPECT_EQ(nowhere["code"], "UNIMPLEMENTED") << nowhere.dump();
  const std::string prom = mesh_.prometheus();
  EXPECT_EQ(istioRequests(prom, {"request_protocol=\"grpc\"", "response_code=\"200\"", "response_flags=\"UT\"",
                                 "grpc_response_status=\"4\""}),
            1)
      << prom;
  EXPECT_EQ(istioRequests(prom, {"response_flags=\"FI\"", "grpc_response_status=\"14\""}), 1) << prom;
  EXPECT_EQ(istioRequests(prom, {"response_flags=\"NR\"", "grpc_response_status=\"12\""}), 1) << prom;
}

TEST_F(GrpcTest, GrpcTimeoutIsHonouredBelowTheRouteTimeout) {
  start();
  // The Slow route allows 300 ms; this call asks for 100 ms, sent by hand
  // so that only sluiced can be the one to give up.
  const std::string frame = std::string("\0\0\0\0\x04", 5) + "2000";
  const fs::path body = tmp_.path() / "slow.bin";
  ASSERT_OK(writeFile(body, frame));
  const auto t0 = std::chrono::steady_clock::now();
  CurlResult r = curl({"--http2-prior-knowledge", "-H", "Host: grpc:9090", "-H", "content-type: application/grpc",
                       "-H", "te: trailers", "-H", "grpc-timeout: 100m", "--data-binary", "@" + body.string(),
                       "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/sluice.test.Echo/Slow"});
  const int64_t ms = msSince(t0);
  ASSERT_EQ(r.exitCode, 0) << r.stderrText << out();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("grpc-status").value_or(""), "4");
  EXPECT_LT(ms, 290) << "answered at the grpc-timeout, not the route's";
}

TEST_F(GrpcTest, MessagesAndStatusesAreCountedAsIstioDoes) {
  start();
  ASSERT_EQ(call("server", {"--n", "5"})["code"], "OK") << out();
  ASSERT_EQ(call("client", {"--n", "3"})["code"], "OK");
  ASSERT_EQ(call("abort", {"--message", "5"})["code"], "NOT_FOUND");
  const std::string prom = mesh_.prometheus();
  auto sum = [&](const std::string& family, const std::vector<std::string>& labels) {
    int64_t total = 0;
    std::istringstream in(prom);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(family + "{", 0) != 0) continue;
      bool all = true;
      for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
      if (all) total += std::stoll(line.substr(line.rfind(' ') + 1));
    }
    return total;
  };
  EXPECT_EQ(sum("istio_requests_total", {"request_protocol=\"grpc\"", "grpc_response_status=\"0\""}), 2) << prom;
  EXPECT_EQ(sum("istio_requests_total", {"grpc_response_status=\"5\""}), 1);
  // 1 + 3 requests messages (and the abort's 1), 5 + 1 answers.
  EXPECT_EQ(sum("istio_request_messages_total", {}), 5);
  EXPECT_EQ(sum("istio_response_messages_total", {}), 6);
}

TEST_F(GrpcTest, AnHttp1ClientReachesTheHttp2Upstream) {
  start();
  // One gRPC message by hand: flag 0, a 4-byte length, the bytes.
  const std::string frame = std::string("\0\0\0\0\x05", 5) + "howdy";
  const fs::path body = tmp_.path() / "frame.bin";
  ASSERT_OK(writeFile(body, frame));
  CurlResult r = curl({"--http1.1", "-H", "Host: grpc:9090", "-H", "content-type: application/grpc", "-H",
                       "te: trailers", "--data-binary", "@" + body.string(),
                       "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/sluice.test.Echo/Unary"});
  ASSERT_EQ(r.exitCode, 0) << r.stderrText << out();
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("g1:howdy"), std::string::npos) << r.body;
  EXPECT_EQ(r.header("transfer-encoding").value_or(""), "chunked") << "no length from the upstream: chunked";
  EXPECT_EQ(mesh_.stat("upstream_cx_http2_total"), 1);
}

TEST_F(GrpcTest, ADeadServerIsUnavailable) {
  start();
  server_.stop();
  nlohmann::json r = call("unary");
  EXPECT_EQ(r["code"], "UNAVAILABLE") << r.dump() << out();
  EXPECT_GE(mesh_.stat("upstream_cx_connect_fail"), 1);
}

// A gRPC call mirrored three ways: to a plaintext HTTP/2 cluster, to one
// over TLS (ALPN h2), and to an HTTP/1.1 one that gets the body re-framed
// as chunked (the client sent no length, the primary went out as HTTP/2).
TEST_F(GrpcTest, MirrorsSpeakTheirOwnClustersProtocolAndTls) {
  auto rec = RecordingUpstream::start("h1-mirror");
  ASSERT_OK(rec);
  std::unique_ptr<RecordingUpstream> h1Mirror = std::move(*rec);
  start();
  const uint16_t plainPort = freePort(), tlsPort = freePort();
  Process plain, secure;
  ASSERT_NO_FATAL_FAILURE(plain = startServer("m-plain", plainPort));
  ASSERT_NO_FATAL_FAILURE(secure = startServer("m-tls", tlsPort, /*tls=*/true));
  auto service = [](const std::string& name, uint16_t port, const std::string& protocol) {
    return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name +
           ", namespace: default}\nspec:\n  hosts: [" + name + ".default.svc.cluster.local]\n"
           "  ports: [{number: 9090, name: p, protocol: " + protocol + "}]\n  resolution: STATIC\n"
           "  endpoints: [{address: 127.0.0.1, ports: {p: " + std::to_string(port) + "}}]\n---\n";
  };
  std::string cfg = service("mirrored", std::stoi(mesh_.vars().at("GRPC_PORT")), "GRPC") +
                    service("m-plain", plainPort, "GRPC") + service("m-tls", tlsPort, "GRPC") +
                    service("m-h1", h1Mirror->port(), "HTTP") +
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    "metadata: {name: m-tls, namespace: default}\nspec:\n  host: m-tls\n"
                    "  trafficPolicy: {tls: {mode: SIMPLE, sni: grpc.default.svc.cluster.local, caCertificates: " +
                    (tmp_.path() / "ca.crt").string() + "}}\n---\n"
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                    "metadata: {name: mirrored, namespace: default}\nspec:\n  hosts: [mirrored]\n  http:\n"
                    "  - route: [{destination: {host: mirrored}}]\n"
                    "    mirrors: [{destination: {host: m-plain}}, {destination: {host: m-tls}}, "
                    "{destination: {host: m-h1}}]\n";
  ASSERT_OK(mesh_.applyConfig("mirror.yaml", cfg));
  for (int i = 0; i < 3; ++i) {
    const std::string msg = "copy" + std::to_string(i);
    std::vector<std::string> argv = {"/usr/bin/python3", (repoRoot() / "tests/integration/grpc_peer.py").string(),
                                     "client", "--target", "127.0.0.1:" + std::to_string(mesh_.outboundPort()),
                                     "--authority", "mirrored:9090", "--call", "unary", "--message", msg};
    auto p = Process::start(argv, tmp_.path() / ("mirror-client-" + std::to_string(i) + ".log"));
    ASSERT_OK(p);
    ASSERT_TRUE(p->wait(20000ms));
    EXPECT_NE(p->logText().find("g1:" + msg), std::string::npos) << "the client sees the primary: " << p->logText();
    EXPECT_TRUE(plain.waitForLog("unary " + msg, 5000ms)) << plain.logText() << out();
    EXPECT_TRUE(secure.waitForLog("unary " + msg, 5000ms)) << secure.logText() << out();
  }
  ASSERT_TRUE(h1Mirror->waitForCount(3, 5000ms)) << out();
  for (const RecordedRequest& r : h1Mirror->requests()) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.header("host").value_or(""), "mirrored-shadow:9090");
    EXPECT_EQ(r.header("transfer-encoding").value_or(""), "chunked");
    // One gRPC message (5-byte prefix + "copyN"), in well-formed chunks.
    std::string payload;
    std::string_view rest = r.body;
    for (;;) {
      const size_t eol = rest.find("\r\n");
      ASSERT_NE(eol, std::string_view::npos) << r.body;
      const size_t n = std::stoul(std::string(rest.substr(0, eol)), nullptr, 16);
      rest.remove_prefix(eol + 2);
      if (n == 0) break;
      ASSERT_GE(rest.size(), n + 2) << r.body;
      payload.append(rest.substr(0, n));
      EXPECT_EQ(rest.substr(n, 2), "\r\n");
      rest.remove_prefix(n + 2);
    }
    EXPECT_EQ(rest, "\r\n") << r.body;
    EXPECT_EQ(payload.size(), 10u) << r.body;
    EXPECT_TRUE(payload.starts_with(std::string("\0\0\0\0\x05", 5) + "copy")) << r.body;
  }
  EXPECT_EQ(mesh_.stat("shadow_rq_total"), 9);
  EXPECT_EQ(mesh_.stat("shadow_rq_shed"), 0);
  EXPECT_EQ(mesh_.stat("shadow_rq_failed"), 0) << out();
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake"), 1);
  // A client that leaves mid-body abandons its mirrors (the HTTP/2 ones
  // are reset); the next call is mirrored as before.
  auto half = RawConn::connect(mesh_.outboundPort(), 2000ms);
  ASSERT_OK(half);
  ASSERT_OK(half->send("POST /sluice.test.Echo/Unary HTTP/1.1\r\nHost: mirrored:9090\r\n"
                       "content-type: application/grpc\r\nte: trailers\r\ncontent-length: 100\r\n\r\n" +
                       std::string(40, 'x')));
  std::this_thread::sleep_for(200ms);
  half->abort();
  EXPECT_TRUE(eventually([&] { return mesh_.stat("shadow_rq_total") == 12; }, 3000ms)) << out();
  std::vector<std::string> argv = {"/usr/bin/python3", (repoRoot() / "tests/integration/grpc_peer.py").string(),
                                   "client", "--target", "127.0.0.1:" + std::to_string(mesh_.outboundPort()),
                                   "--authority", "mirrored:9090", "--call", "unary", "--message", "after"};
  auto p = Process::start(argv, tmp_.path() / "mirror-client-after.log");
  ASSERT_OK(p);
  ASSERT_TRUE(p->wait(20000ms));
  EXPECT_TRUE(plain.waitForLog("unary after", 5000ms)) << plain.logText() << out();
  EXPECT_TRUE(secure.waitForLog("unary after", 5000ms)) << secure.logText() << out();
  EXPECT_EQ(mesh_.stat("shadow_rq_total"), 15);
  h1Mirror.reset();
}

}  // namespace
}  // namespace sluice::itest::proxy
