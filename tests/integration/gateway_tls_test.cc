// HTTPS gateway servers: the seed Gateway's TLS termination (SIMPLE and
// MUTUAL on one port, chosen by SNI) with curl as the client, wildcard and
// exact server names, subjectAltNames, TLS version limits, certificate
// rotation under load, a secret that appears late, and hostile bytes on a
// TLS port. Certificates are made at test time; every listener binds
// 127.0.0.1.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "../common/test_pki.h"
#include "mesh.h"
#include "proxy_fixture.h"

namespace sluice::itest {
namespace {

using proxy::eventually;
using sluice::testing::CertOptions;
using sluice::testing::TestCert;

int openFds(pid_t pid) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
  return n;
}

// The peer closed (FIN or reset) within `timeout`; bytes before it (an
// alert) are read and dropped.
bool closedByPeer(proxy::RawConn& c, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = c.fill();
    if (r) continue;
    if (r.error() == "timeout") continue;
    return true;  // eof or a reset
  }
  return false;
}

// A Gateway "tcp" with one TCP server on `port` and a VirtualService whose
// tcp route goes to `host` port 80.
std::string tcpGateway(uint16_t port, const std::string& host) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: Gateway\n"
         "metadata: {name: tcp}\n"
         "spec:\n"
         "  servers:\n"
         "  - port: {number: " + std::to_string(port) + ", name: tcp, protocol: TCP}\n"
         "    hosts: [\"*\"]\n"
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata: {name: tcp}\n"
         "spec:\n"
         "  hosts: [\"*\"]\n"
         "  gateways: [tcp]\n"
         "  tcp:\n"
         "  - route: [{destination: {host: " + host + ", port: {number: 80}}}]\n";
}

class GatewayTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    creds_ = fs::path(tmp_.path()) / "credentials";
    caFile_ = (fs::path(tmp_.path()) / "ca.crt").string();
    TestCert::writeFile(caFile_, ca_.certPem());
    ASSERT_OK(mesh_.startUpstreams(
        {"users-service-v2", "legacy-api", "health-checker", "cdn-service", "frontend-service"}));
    ASSERT_OK(mesh_.addServiceTemplate("api.yaml"));
  }
  // A server certificate for `names`, signed by the test CA, in credential `name`.
  void credential(const std::string& name, const std::vector<std::string>& names, const std::string& cn = "") {
    std::vector<std::string> sans;
    for (const auto& n : names) sans.push_back("DNS:" + n);
    TestCert leaf({.commonName = cn.empty() ? names[0] : cn, .subjectAltNames = sans}, &ca_);
    leaf.write(creds_ / name);
  }
  std::string clientCert(const std::string& name, const std::vector<std::string>& sans) {
    TestCert c({.commonName = name, .subjectAltNames = sans, .clientAuth = true}, &ca_);
    c.write(fs::path(tmp_.path()) / "clients", name + ".crt", name + ".key");
    return (fs::path(tmp_.path()) / "clients" / name).string();
  }
  void startDaemon(uint16_t offset, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--gateway-bind",    "127.0.0.1", "--gateway-port-offset",
                                     std::to_string(offset), "--credentials-dir", creds_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_OK(mesh_.startDaemon(2, 10000ms, args));
  }
  // curl https://host:port/path resolved to 127.0.0.1, trusting the test CA.
  CurlResult https(uint16_t port, const std::string& host, const std::string& path,
                   std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--cacert", caFile_, "--resolve",
                                     host + ":" + std::to_string(port) + ":127.0.0.1"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("https://" + host + ":" + std::to_string(port) + path);
    return curl(args, 5000ms);
  }
  // The subject of the certificate a handshake naming `sni` gets.
  std::string servedSubject(uint16_t port, const std::string& sni) {
    auto r = https(port, sni, "/", {"-w", "\n@@issuer=%{certs}", "-k"});
    size_t at = r.body.find("Subject:");
    if (at == std::string::npos) return "(none: exit " + std::to_string(r.exitCode) + " " + r.stderrText + ")";
    std::string subject = r.body.substr(at + 8, r.body.find('\n', at) - at - 8);
    subject.erase(0, subject.find_first_not_of(' '));
    return subject;
  }

  TempDir tmp_;
  Mesh mesh_{tmp_};
  TestCert ca_{CertOptions{.commonName = "Sluice Test CA", .ca = true}};
  fs::path creds_;
  std::string caFile_;
};

// The seed's "Gateway Configuration" verbatim: HTTPS for app and api with
// production-tls, plain HTTP redirected to https, and partner-api on the
// same 443 with MUTUAL TLS (its CA in partner-mtls-cert-cacert, as Istio
// allows).
TEST_F(GatewayTlsTest, SeedGatewayTerminatesTlsOnOnePortBySni) {
  ASSERT_OK(mesh_.addSeed("gateway.yaml"));
  auto vs = Mesh::seedVariant("uri-matching.yaml", {{"  hosts:\n  - api.example.com\n",
                                                     "  hosts:\n  - api.example.com\n  gateways:\n"
                                                     "  - production-gateway\n"}});
  ASSERT_OK(vs);
  ASSERT_OK(mesh_.writeConfig("uri-matching.yaml", *vs));
  credential("production-tls", {"app.example.com", "api.example.com"});
  credential("partner-mtls-cert", {"partner-api.example.com"});
  TestCert::writeFile(creds_ / "partner-mtls-cert-cacert/ca.crt", ca_.certPem());
  const uint16_t offset = freeGatewayOffset({80, 443});
  const uint16_t http = uint16_t(80 + offset), port = uint16_t(443 + offset);
  ASSERT_NO_FATAL_FAILURE(startDaemon(offset));

  // Plain HTTP: redirected.
  auto redirect = httpRequest(http, {.method = "GET", .target = "/v1", .headers = {{"Host", "api.example.com"}}});
  ASSERT_OK(redirect);
  EXPECT_EQ(redirect->status, 301);
  EXPECT_EQ(redirect->header("location"), "https://api.example.com/v1");

  // HTTPS, SIMPLE: routed by the URI Matching VirtualService.
  auto books = https(port, "api.example.com", "/api/v1/books");
  ASSERT_EQ(books.exitCode, 0) << books.stderrText << mesh_.logs();
  EXPECT_EQ(books.status, 200);
  EXPECT_EQ(books.json()["name"], "legacy-api") << books.body;
  EXPECT_EQ(books.json()["headers"]["x-forwarded-proto"], "https") << books.body;
  // ALPN: HTTP/2 for a client that offers it, HTTP/1.1 for one that does not.
  auto h2 = https(port, "api.example.com", "/api/v1/books", {"-v", "--http2"});
  EXPECT_NE(h2.stderrText.find("ALPN: server accepted h2"), std::string::npos) << h2.stderrText;
  EXPECT_NE(h2.stderrText.find("< HTTP/2 200"), std::string::npos) << h2.stderrText;
  EXPECT_EQ(h2.json()["headers"]["x-forwarded-proto"], "https") << h2.body;
  auto h1 = https(port, "api.example.com", "/api/v1/books", {"-v", "--http1.1"});
  EXPECT_NE(h1.stderrText.find("< HTTP/1.1 200"), std::string::npos) << h1.stderrText;
  EXPECT_GE(mesh_.stat("downstream_cx_http2_total"), 1);
  auto users = https(port, "api.example.com", "/api/v2/users/1", {"-H", "x-forwarded-proto: http"});
  EXPECT_EQ(users.json()["name"], "users-service-v2") << users.body;
  EXPECT_EQ(users.json()["headers"]["x-forwarded-proto"], "https") << "the client's value is replaced";
  // app.example.com: the same certificate, but no VirtualService routes it there.
  auto app = https(port, "app.example.com", "/");
  EXPECT_EQ(app.exitCode, 0) << app.stderrText;
  EXPECT_EQ(app.status, 404);

  // MUTUAL: no client certificate, refused; the CA's client, served.
  auto anonymous = https(port, "partner-api.example.com", "/");
  EXPECT_NE(anonymous.exitCode, 0) << "served without a client certificate: " << anonymous.status;
  const std::string partner = clientCert("partner", {"URI:spiffe://partner.example.com/client"});
  auto withCert = https(port, "partner-api.example.com", "/", {"--cert", partner + ".crt", "--key", partner + ".key"});
  EXPECT_EQ(withCert.exitCode, 0) << withCert.stderrText;
  EXPECT_EQ(withCert.status, 404) << "handshake done; no VirtualService routes partner-api";
  // The partner certificate was chosen by SNI: curl checked its name.
  EXPECT_EQ(servedSubject(port, "partner-api.example.com"), "CN = partner-api.example.com");
  EXPECT_EQ(servedSubject(port, "app.example.com"), "CN = app.example.com");

  EXPECT_GE(mesh_.stat("ssl.handshake"), 4);
  EXPECT_GE(mesh_.stat("ssl.no_certificate"), 1);
  // Kernel TLS: /stats says whether the kernel offers it; the record layer
  // is sluiced's own either way.
  std::string ulps;
  std::getline(std::ifstream("/proc/sys/net/ipv4/tcp_available_ulp"), ulps);
  EXPECT_EQ(mesh_.stat("tls.ktls_available"), (" " + ulps + " ").find(" tls ") != std::string::npos ? 1 : 0);
  EXPECT_EQ(mesh_.stat("tls.ktls_in_use"), 0);
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  const std::string text = dump->dump();
  EXPECT_EQ(text.find("PRIVATE KEY"), std::string::npos) << "key material in /config_dump";
  nlohmann::json https443;
  for (const auto& l : (*dump)["gateway_listeners"]) {
    if (l["port"] == 443) https443 = l;
  }
  ASSERT_EQ(https443["tls_servers"].size(), 2u) << text;
  EXPECT_EQ(https443["tls_servers"][0]["certificate"]["subject"], "CN=app.example.com");
  EXPECT_EQ(https443["tls_servers"][1]["ca_file"], (creds_ / "partner-mtls-cert-cacert/ca.crt").string());
  EXPECT_EQ(https443["listening"], true);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

std::string tlsGateway(const std::string& extraServers) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: Gateway\n"
         "metadata: {name: edge}\n"
         "spec:\n"
         "  servers:\n" + extraServers +
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata: {name: edge}\n"
         "spec:\n"
         "  hosts: [\"*\"]\n"
         "  gateways: [edge]\n"
         "  http:\n"
         "  - route: [{destination: {host: api.example.com}}]\n";
}

TEST_F(GatewayTlsTest, ExactBeforeWildcardAndSubjectAltNamesChecked) {
  credential("exact", {"shop.edge.test"});
  credential("wild", {"*.edge.test"});
  credential("mtls", {"m.partner.test"});
  TestCert::writeFile(creds_ / "mtls/ca.crt", ca_.certPem());
  const uint16_t port = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml", tlsGateway(
      "  - port: {number: " + std::to_string(port) + ", name: exact, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: exact}\n"
      "    hosts: [shop.edge.test]\n"
      "  - port: {number: " + std::to_string(port) + ", name: wild, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: wild}\n"
      "    hosts: [\"*.edge.test\"]\n"
      "  - port: {number: " + std::to_string(port) + ", name: mtls, protocol: HTTPS}\n"
      "    tls: {mode: MUTUAL, credentialName: mtls, subjectAltNames: [spiffe://good/client]}\n"
      "    hosts: [m.partner.test]\n")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));

  EXPECT_EQ(servedSubject(port, "shop.edge.test"), "CN = shop.edge.test");
  EXPECT_EQ(servedSubject(port, "www.edge.test"), "CN = *.edge.test");
  EXPECT_EQ(servedSubject(port, "a.b.edge.test"), "CN = *.edge.test") << "a wildcard server covers deeper names";
  // curl checks the name: each answer proves the right certificate came.
  for (const std::string host : {"shop.edge.test", "www.edge.test"}) {
    auto r = https(port, host, "/");
    EXPECT_EQ(r.exitCode, 0) << host << ": " << r.stderrText;
    EXPECT_EQ(r.json()["name"], "frontend-service") << host;
  }
  // No server names "other.test", and none takes any name.
  auto none = https(port, "other.test", "/", {"-k"});
  EXPECT_NE(none.exitCode, 0);
  EXPECT_TRUE(eventually([&] { return mesh_.stat("listener.no_filter_chain_match") >= 1; }, 2000ms));

  const std::string good = clientCert("good", {"URI:spiffe://good/client"});
  const std::string bad = clientCert("bad", {"URI:spiffe://bad/client"});
  auto ok = https(port, "m.partner.test", "/", {"--cert", good + ".crt", "--key", good + ".key"});
  EXPECT_EQ(ok.exitCode, 0) << ok.stderrText;
  EXPECT_EQ(ok.status, 200);
  auto wrongSan = https(port, "m.partner.test", "/", {"--cert", bad + ".crt", "--key", bad + ".key"});
  EXPECT_NE(wrongSan.exitCode, 0) << "a client without the SAN was served";
  EXPECT_TRUE(eventually([&] { return mesh_.stat("ssl.fail_verify_san") >= 1; }, 2000ms));
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(GatewayTlsTest, ProtocolVersionLimits) {
  credential("c", {"v.test"});
  const uint16_t only13 = freePort(), only12 = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml", tlsGateway(
      "  - port: {number: " + std::to_string(only13) + ", name: new, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3}\n"
      "    hosts: [v.test]\n"
      "  - port: {number: " + std::to_string(only12) + ", name: old, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: c, maxProtocolVersion: TLSV1_2}\n"
      "    hosts: [v.test]\n")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));

  EXPECT_EQ(https(only13, "v.test", "/").exitCode, 0);
  EXPECT_NE(https(only13, "v.test", "/", {"--tls-max", "1.2"}).exitCode, 0) << "TLS 1.2 taken below the minimum";
  auto v12 = https(only12, "v.test", "/", {"-w", "\n@@v=%{ssl_version}"});
  EXPECT_EQ(v12.exitCode, 0) << v12.stderrText;
  EXPECT_NE(https(only12, "v.test", "/", {"--tlsv1.3"}).exitCode, 0) << "TLS 1.3 taken above the maximum";
  EXPECT_GE(mesh_.stat("ssl.handshake_error"), 2);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// A certificate replaced while a client keeps making new connections: no
// request fails, and new handshakes get the new certificate within a second.
TEST_F(GatewayTlsTest, RotationDuringAClientLoopLosesNothing) {
  credential("rot", {"rot.test"}, "first");
  const uint16_t port = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml", tlsGateway(
      "  - port: {number: " + std::to_string(port) + ", name: https, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: rot}\n"
      "    hosts: [rot.test]\n")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  ASSERT_EQ(servedSubject(port, "rot.test"), "CN = first");

  std::atomic<bool> stop{false};
  std::atomic<int> done{0}, failed{0};
  std::string firstFailure;
  std::thread loop([&] {
    for (int i = 0; i < 400 && !stop; ++i) {
      auto r = https(port, "rot.test", "/api/v1/x");
      if (r.exitCode != 0 || r.status != 200) {
        if (failed++ == 0) firstFailure = std::to_string(r.exitCode) + " " + std::to_string(r.status) + r.stderrText;
      }
      ++done;
    }
  });
  ASSERT_TRUE(eventually([&] { return done >= 5; }, 10000ms));
  credential("rot", {"rot.test"}, "second");
  const auto rotated = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return servedSubject(port, "rot.test") == "CN = second"; }, 1500ms))
      << servedSubject(port, "rot.test");
  EXPECT_LT(std::chrono::steady_clock::now() - rotated, 1500ms);
  const int at = done;
  ASSERT_TRUE(eventually([&] { return done >= at + 5; }, 10000ms));
  stop = true;
  loop.join();
  EXPECT_EQ(failed, 0) << firstFailure;
  EXPECT_GE(done, 10);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(GatewayTlsTest, AMissingSecretIsReportedThenServedWhenItAppears) {
  const uint16_t port = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml", tlsGateway(
      "  - port: {number: " + std::to_string(port) + ", name: https, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: late}\n"
      "    hosts: [late.test]\n")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  const std::string text = dump->dump();
  EXPECT_NE(text.find("Gateway default/edge server https (HTTPS " + std::to_string(port) + "): certificate " +
                      (creds_ / "late/tls.crt").string()),
            std::string::npos)
      << text;
  EXPECT_NE(https(port, "late.test", "/").exitCode, 0);

  credential("late", {"late.test"});
  EXPECT_TRUE(eventually([&] { return https(port, "late.test", "/").status == 200; }, 3000ms)) << mesh_.logs();
}

// Bytes that are not a TLS handshake, a ClientHello cut short, and a
// client that stops mid-hello: each connection is closed and counted, and
// the daemon keeps serving with no descriptor left behind.
TEST_F(GatewayTlsTest, HostileBytesOnATlsPortAreClosedAndCounted) {
  credential("c", {"h.test"});
  const uint16_t port = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml", tlsGateway(
      "  - port: {number: " + std::to_string(port) + ", name: https, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: c}\n"
      "    hosts: [h.test]\n")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0, {"--tls-handshake-timeout", "500ms"}));
  ASSERT_EQ(https(port, "h.test", "/").status, 200);
  const pid_t pid = mesh_.daemon().pid();
  const int fdsBefore = openFds(pid);

  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {
    auto c = proxy::RawConn::connect(port, 500ms);
    ASSERT_OK(c);
    std::string junk(200, '\0');
    for (char& ch : junk) ch = char(rng());
    if (i % 2 == 0) junk[0] = '\x16';  // looks like a handshake record, is not
    (void)c->send(junk);
    EXPECT_TRUE(closedByPeer(*c, 2000ms)) << "junk " << i << " left open";
  }
  // Plain HTTP on the TLS port.
  {
    auto c = proxy::RawConn::connect(port, 500ms);
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET / HTTP/1.1\r\nHost: h.test\r\n\r\n"));
    EXPECT_TRUE(closedByPeer(*c, 2000ms));
  }
  // A ClientHello's first bytes, then silence: closed by the handshake timeout.
  {
    auto c = proxy::RawConn::connect(port, 500ms);
    ASSERT_OK(c);
    ASSERT_OK(c->send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
    EXPECT_TRUE(closedByPeer(*c, 3000ms)) << "a stalled handshake was never closed";
  }
  EXPECT_GE(mesh_.stat("ssl.handshake_error"), 21);
  EXPECT_GE(mesh_.stat("ssl.handshake_timeout"), 1);
  // Counted before the next request: it may open a pooled upstream
  // connection on the other worker.
  EXPECT_TRUE(eventually([&] { return openFds(pid) <= fdsBefore; }, 3000ms))
      << openFds(pid) << " descriptors, " << fdsBefore << " before";
  auto r = https(port, "h.test", "/");
  EXPECT_EQ(r.status, 200) << r.stderrText;
  EXPECT_TRUE(mesh_.daemon().running());
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// TCP servers, and TLS-protocol servers that terminate: the bytes (the
// plaintext, for TLS) go at L4 to the bound VirtualService's tcp route.
// The backend speaks HTTP, so a request sent through shows who answered.
TEST_F(GatewayTlsTest, TcpAndTerminatedTlsServersRelayToTcpRoutes) {
  credential("tcp-cert", {"tcp.edge.test"});
  const uint16_t tcpPort = freePort(), tlsPort = freePort();
  ASSERT_OK(mesh_.writeConfig("edge.yaml",
      "apiVersion: networking.istio.io/v1\n"
      "kind: Gateway\n"
      "metadata: {name: edge}\n"
      "spec:\n"
      "  servers:\n"
      "  - port: {number: " + std::to_string(tcpPort) + ", name: tcp, protocol: TCP}\n"
      "    hosts: [\"*\"]\n"
      "  - port: {number: " + std::to_string(tlsPort) + ", name: tls, protocol: TLS}\n"
      "    tls: {mode: SIMPLE, credentialName: tcp-cert, minProtocolVersion: TLSV1_3}\n"
      "    hosts: [tcp.edge.test]\n"
      "---\n"
      "apiVersion: networking.istio.io/v1\n"
      "kind: VirtualService\n"
      "metadata: {name: tcp}\n"
      "spec:\n"
      "  hosts: [\"*\"]\n"
      "  gateways: [edge]\n"
      "  tcp:\n"
      "  - match: [{port: 1}]\n"
      "    route: [{destination: {host: users-service-v2.default.svc.cluster.local, port: {number: 8080}}}]\n"
      "  - route: [{destination: {host: api.example.com, port: {number: 80}}}]\n"));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0, {"--tls-handshake-timeout", "1s"}));

  auto plain = httpRequest(tcpPort, {.method = "GET", .target = "/over-tcp", .headers = {{"Host", "anything"}}});
  ASSERT_OK(plain);
  EXPECT_EQ(plain->status, 200);
  EXPECT_EQ(upstreamName(*plain), "frontend-service");
  EXPECT_FALSE(plain->header("x-envoy-upstream-service-time")) << "relayed at L4, not proxied as HTTP";

  auto tls = https(tlsPort, "tcp.edge.test", "/over-tls");
  EXPECT_EQ(tls.exitCode, 0) << tls.stderrText << mesh_.logs();
  EXPECT_EQ(tls.json()["name"], "frontend-service") << tls.body;
  EXPECT_EQ(tls.json()["path"], "/over-tls");
  // A handshake that fails on the hello itself: closed with an alert, the
  // daemon serves on.
  auto old = https(tlsPort, "tcp.edge.test", "/", {"--tls-max", "1.2"});
  EXPECT_NE(old.exitCode, 0);
  EXPECT_NE(old.stderrText.find("alert"), std::string::npos) << "no TLS alert reached the client: " << old.stderrText;
  EXPECT_EQ(https(tlsPort, "tcp.edge.test", "/again").exitCode, 0);
  EXPECT_GE(mesh_.stat("tcp_cx_total"), 3);
  // A whole ClientHello, then silence: the handshake times out on the L4
  // path as well.
  auto stalled = proxy::RawConn::connect(tlsPort, 500ms);
  ASSERT_OK(stalled);
  ASSERT_OK(stalled->send(sluice::testing::clientHello("tcp.edge.test")));
  EXPECT_TRUE(closedByPeer(*stalled, 4000ms)) << "a stalled handshake was never closed";
  EXPECT_GE(mesh_.stat("ssl.handshake_timeout"), 1);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// ------------------------------------------------------------ upstream TLS

// DestinationRule trafficPolicy.tls against `openssl s_server -www` (its
// status page says whether the session was new or reused and, with
// -Verify, requires a client certificate).
class UpstreamTlsTest : public GatewayTlsTest {
 protected:
  void SetUp() override {
    GatewayTlsTest::SetUp();
    TestCert server({.commonName = "secure.backend.test", .subjectAltNames = {"DNS:secure.backend.test"}}, &ca_);
    server.write(fs::path(tmp_.path()) / "backend", "tls.crt", "tls.key");
    TestCert client({.commonName = "sluice-client", .clientAuth = true}, &ca_);
    client.write(fs::path(tmp_.path()) / "client", "tls.crt", "tls.key");
  }
  std::string file(const std::string& rel) { return (fs::path(tmp_.path()) / rel).string(); }
  // s_server on a free port; `verify`: a client certificate is required.
  uint16_t startBackend(bool verify) {
    const uint16_t port = freePort();
    std::vector<std::string> argv = {"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
                                     "-cert", file("backend/tls.crt"), "-key", file("backend/tls.key"), "-www"};
    if (verify) argv.insert(argv.end(), {"-Verify", "1", "-CAfile", caFile_});
    auto p = Process::start(argv, fs::path(tmp_.path()) / ("s_server-" + std::to_string(port) + ".log"));
    EXPECT_TRUE(p.has_value()) << p.error();
    if (p) backends_.push_back(std::move(*p));
    EXPECT_TRUE(eventually([&] { return !refusedPort(port); }, 3000ms)) << "s_server never listened";
    return port;
  }
  static bool refusedPort(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool refused = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0;
    ::close(fd);
    return refused;
  }
  std::string service(const std::string& host, uint16_t port, const std::string& tls) {
    return "apiVersion: networking.istio.io/v1\n"
           "kind: ServiceEntry\n"
           "metadata: {name: " + host.substr(0, host.find('.')) + "}\n"
           "spec:\n"
           "  hosts: [" + host + "]\n"
           "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
           "  resolution: STATIC\n"
           "  endpoints: [{address: 127.0.0.1, ports: {http: " + std::to_string(port) + "}}]\n"
           "---\n"
           "apiVersion: networking.istio.io/v1\n"
           "kind: DestinationRule\n"
           "metadata: {name: " + host.substr(0, host.find('.')) + "}\n"
           "spec:\n"
           "  host: " + host + "\n"
           "  trafficPolicy:\n"
           "    tls: " + tls + "\n";
  }
  std::vector<Process> backends_;
};

TEST_F(UpstreamTlsTest, SimpleAndMutualOriginationWithResumption) {
  const uint16_t simple = startBackend(false), mutual = startBackend(true), strict = startBackend(true);
  ASSERT_OK(mesh_.writeConfig("secure.yaml", service("secure.backend.test", simple,
      "{mode: SIMPLE, caCertificates: " + caFile_ + ", sni: secure.backend.test}")));
  ASSERT_OK(mesh_.writeConfig("partner.yaml", service("partner.backend.test", mutual,
      "{mode: MUTUAL, caCertificates: " + caFile_ + ", sni: secure.backend.test, clientCertificate: " +
      file("client/tls.crt") + ", privateKey: " + file("client/tls.key") + "}")));
  // MUTUAL through a credential: tls.crt, tls.key and ca.crt in --credentials-dir.
  fs::create_directories(creds_ / "upstream-client");
  fs::copy_file(file("client/tls.crt"), creds_ / "upstream-client/tls.crt");
  fs::copy_file(file("client/tls.key"), creds_ / "upstream-client/tls.key");
  fs::copy_file(caFile_, creds_ / "upstream-client/ca.crt");
  ASSERT_OK(mesh_.writeConfig("strict.yaml", service("strict.backend.test", strict,
      "{mode: MUTUAL, credentialName: upstream-client, subjectAltNames: [x.other.test], sni: secure.backend.test}")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));

  auto first = mesh_.get("secure.backend.test", "/");
  ASSERT_OK(first);
  EXPECT_EQ(first->status, 200) << first->summary() << mesh_.logs();
  EXPECT_NE(first->body.find("New, TLSv1.3"), std::string::npos) << first->body.substr(0, 300);
  // s_server closes after each answer (HTTP/1.0): each request is a new
  // connection. A worker keeps the session an endpoint gave it, so of four
  // requests over two workers at least two resume.
  int reused = 0;
  for (int i = 0; i < 4; ++i) {
    auto again = mesh_.get("secure.backend.test", "/");
    ASSERT_OK(again);
    EXPECT_EQ(again->status, 200);
    if (again->body.find("Reused, TLSv1.3") != std::string::npos) ++reused;
  }
  EXPECT_GE(reused, 2);
  EXPECT_EQ(mesh_.stat("upstream_ssl.session_reused"), reused);

  auto partner = mesh_.get("partner.backend.test", "/");
  ASSERT_OK(partner);
  EXPECT_EQ(partner->status, 200) << partner->summary();
  EXPECT_NE(partner->body.find("TLSv1.3"), std::string::npos);

  // subjectAltNames [x.other.test]: the backend's certificate names
  // secure.backend.test, so the handshake fails: 503 UF, counted.
  auto strictR = mesh_.get("strict.backend.test", "/");
  ASSERT_OK(strictR);
  EXPECT_EQ(strictR->status, 503) << strictR->summary();
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake_error"), 1);
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake"), 3);
  // /clusters shows each cluster's upstream TLS, client certificate by subject.
  nlohmann::json partnerCluster = mesh_.cluster("outbound|80||partner.backend.test");
  EXPECT_EQ(partnerCluster["tls"]["mode"], "MUTUAL") << partnerCluster.dump();
  EXPECT_EQ(partnerCluster["tls"]["sni"], "secure.backend.test");
  EXPECT_EQ(partnerCluster["tls"]["client_certificate"]["subject"], "CN=sluice-client");
  EXPECT_EQ(partnerCluster.dump().find("PRIVATE KEY"), std::string::npos);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(UpstreamTlsTest, AWrongCaOrAPlaintextServerFailsCleanly) {
  const uint16_t port = startBackend(false);
  TestCert otherCa({.commonName = "Other CA", .ca = true});
  TestCert::writeFile(file("other-ca.crt"), otherCa.certPem());
  ASSERT_OK(mesh_.writeConfig("wrong.yaml", service("wrong.backend.test", port,
      "{mode: SIMPLE, caCertificates: " + file("other-ca.crt") + ", sni: secure.backend.test}")));
  // TLS to a server that speaks plain HTTP (an ordinary sluice-upstream).
  ASSERT_OK(mesh_.writeConfig("plain.yaml", service("plain.backend.test", mesh_.upstreamPort("frontend-service"),
      "{mode: SIMPLE, insecureSkipVerify: true}")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  const pid_t pid = mesh_.daemon().pid();
  const int fds = openFds(pid);
  for (int i = 0; i < 5; ++i) {
    auto wrong = mesh_.get("wrong.backend.test", "/");
    ASSERT_OK(wrong);
    EXPECT_EQ(wrong->status, 503) << wrong->summary();
    auto plain = mesh_.get("plain.backend.test", "/");
    ASSERT_OK(plain);
    EXPECT_EQ(plain->status, 503) << plain->summary();
  }
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake_error"), 10);
  EXPECT_EQ(mesh_.stat("upstream_ssl.handshake"), 0);
  EXPECT_TRUE(eventually([&] { return openFds(pid) <= fds; }, 3000ms)) << openFds(pid) << " fds, " << fds << " before";
  // A gateway TCP server whose tcp route's cluster wants TLS, to a backend
  // that speaks plaintext: the relay's TLS handshake fails and the
  // connection is reset; nothing is relayed in plaintext.
  const uint16_t tcpPort = freePort();
  ASSERT_OK(mesh_.applyConfig("tcp.yaml",
      tcpGateway(tcpPort, "plain.backend.test")));
  const int64_t errorsBefore = mesh_.stat("upstream_ssl.handshake_error");
  auto relayed = httpRequest(tcpPort, {.method = "GET", .target = "/", .headers = {{"Host", "x"}}}, 2000ms);
  EXPECT_FALSE(relayed.has_value()) << "relayed in plaintext: " << relayed->summary();
  EXPECT_EQ(mesh_.stat("upstream_ssl.handshake_error"), errorsBefore + 1);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// A mirror to a cluster with DestinationRule tls speaks TLS (and never
// plaintext): the good mirror completes its exchange with s_server, the
// one whose server speaks plain HTTP fails its handshake; the client only
// ever sees the primary.
TEST_F(UpstreamTlsTest, MirrorsToATlsClusterSpeakTls) {
  const uint16_t backend = startBackend(false);
  ASSERT_OK(mesh_.writeConfig("secure.yaml", service("secure.backend.test", backend,
      "{mode: SIMPLE, caCertificates: " + caFile_ + ", sni: secure.backend.test}")));
  ASSERT_OK(mesh_.writeConfig("plain.yaml", service("plain.backend.test", mesh_.upstreamPort("frontend-service"),
      "{mode: SIMPLE, insecureSkipVerify: true}")));
  ASSERT_OK(mesh_.writeConfig("primary.yaml",
      "apiVersion: networking.istio.io/v1\n"
      "kind: ServiceEntry\n"
      "metadata: {name: primary}\n"
      "spec:\n"
      "  hosts: [primary.backend.test]\n"
      "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
      "  resolution: STATIC\n"
      "  endpoints: [{address: 127.0.0.1, ports: {http: " + std::to_string(mesh_.upstreamPort("frontend-service")) +
      "}}]\n"
      "---\n"
      "apiVersion: networking.istio.io/v1\n"
      "kind: VirtualService\n"
      "metadata: {name: primary}\n"
      "spec:\n"
      "  hosts: [primary.backend.test]\n"
      "  http:\n"
      "  - route: [{destination: {host: primary.backend.test}}]\n"
      "    mirrors: [{destination: {host: secure.backend.test}}, {destination: {host: plain.backend.test}}]\n"));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  constexpr int kRequests = 4;
  for (int i = 0; i < kRequests; ++i) {
    auto r = mesh_.get("primary.backend.test", "/m" + std::to_string(i));
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200) << r->summary();
    EXPECT_EQ(upstreamName(*r), "frontend-service");
  }
  EXPECT_EQ(mesh_.stat("shadow_rq_total"), 2 * kRequests);
  // The plaintext server fails every TLS mirror; s_server answers each.
  EXPECT_TRUE(eventually([&] { return mesh_.stat("shadow_rq_failed") == kRequests; }, 3000ms))
      << mesh_.stat("shadow_rq_failed");
  // s_server serves one connection at a time: the mirrors finish after
  // their primaries.
  EXPECT_TRUE(eventually([&] { return mesh_.stat("upstream_ssl.handshake") >= kRequests; }, 5000ms))
      << mesh_.stat("upstream_ssl.handshake");
  EXPECT_EQ(mesh_.stat("upstream_ssl.handshake_error"), kRequests) << "one per failed handshake";
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// A DestinationRule that turns TLS on: keep-alive plaintext connections
// already pooled for the endpoint are never used for it (the pool keys
// connections by how they were made).
TEST_F(UpstreamTlsTest, TurningTlsOnNeverReusesPlaintextConnections) {
  const uint16_t port = mesh_.upstreamPort("frontend-service");
  const std::string se =
      "apiVersion: networking.istio.io/v1\n"
      "kind: ServiceEntry\n"
      "metadata: {name: pooled}\n"
      "spec:\n"
      "  hosts: [pooled.backend.test]\n"
      "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
      "  resolution: STATIC\n"
      "  endpoints: [{address: 127.0.0.1, ports: {http: " + std::to_string(port) + "}}]\n";
  ASSERT_OK(mesh_.writeConfig("pooled.yaml", se));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  // Plaintext, kept alive in both workers' pools.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(mesh_.servedBy("pooled.backend.test"), "frontend-service");
  // The backend speaks plaintext, so TLS to it must fail, every time.
  ASSERT_OK(mesh_.applyConfig("pooled.yaml", se +
      "---\n"
      "apiVersion: networking.istio.io/v1\n"
      "kind: DestinationRule\n"
      "metadata: {name: pooled}\n"
      "spec:\n"
      "  host: pooled.backend.test\n"
      "  trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}\n"));
  for (int i = 0; i < 6; ++i) {
    auto r = mesh_.get("pooled.backend.test", "/");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 503) << "request " << i << " went out on a plaintext connection";
  }
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// TLS origination on the L4 path: a gateway TCP server whose tcp route
// goes to a cluster with DestinationRule tls SIMPLE. The client speaks
// plaintext; s_server sees TLS (its status page comes back).
TEST_F(UpstreamTlsTest, TcpRoutesOriginateTls) {
  const uint16_t backend = startBackend(false);
  ASSERT_OK(mesh_.writeConfig("secure.yaml", service("secure.backend.test", backend,
      "{mode: SIMPLE, caCertificates: " + caFile_ + ", sni: secure.backend.test}")));
  const uint16_t tcpPort = freePort();
  ASSERT_OK(mesh_.writeConfig("tcp.yaml",
      tcpGateway(tcpPort, "secure.backend.test")));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));
  for (int i = 0; i < 2; ++i) {
    auto r = httpRequest(tcpPort, {.method = "GET", .target = "/", .headers = {{"Host", "x"}}}, 3000ms);
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("TLSv1.3"), std::string::npos) << r->body.substr(0, 200);
  }
  EXPECT_GE(mesh_.stat("upstream_ssl.handshake"), 2);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// ------------------------------------------------------------ PASSTHROUGH

// A PASSTHROUGH server beside a terminating one on the same port: by SNI,
// one client's TLS goes untouched to `openssl s_server` (the client sees
// the backend's own certificate and its status page), the other's ends at
// sluiced.
TEST_F(UpstreamTlsTest, PassthroughRelaysTheClientsTlsBySni) {
  const uint16_t backend = startBackend(false);
  credential("edge-cert", {"web.edge.test"});
  const uint16_t port = freePort();
  ASSERT_OK(mesh_.writeConfig("backend.yaml",
      "apiVersion: networking.istio.io/v1\n"
      "kind: ServiceEntry\n"
      "metadata: {name: secure-backend}\n"
      "spec:\n"
      "  hosts: [secure.backend.test]\n"
      "  ports: [{number: 443, name: tls, protocol: TLS}]\n"
      "  resolution: STATIC\n"
      "  endpoints: [{address: 127.0.0.1, ports: {tls: " + std::to_string(backend) + "}}]\n"));
  ASSERT_OK(mesh_.writeConfig("edge.yaml",
      "apiVersion: networking.istio.io/v1\n"
      "kind: Gateway\n"
      "metadata: {name: edge}\n"
      "spec:\n"
      "  servers:\n"
      "  - port: {number: " + std::to_string(port) + ", name: pass, protocol: TLS}\n"
      "    tls: {mode: PASSTHROUGH}\n"
      "    hosts: [secure.backend.test]\n"
      "  - port: {number: " + std::to_string(port) + ", name: https, protocol: HTTPS}\n"
      "    tls: {mode: SIMPLE, credentialName: edge-cert}\n"
      "    hosts: [web.edge.test]\n"
      "---\n"
      "apiVersion: networking.istio.io/v1\n"
      "kind: VirtualService\n"
      "metadata: {name: pass}\n"
      "spec:\n"
      "  hosts: [secure.backend.test]\n"
      "  gateways: [edge]\n"
      "  tls:\n"
      "  - match: [{sniHosts: [secure.backend.test]}]\n"
      "    route: [{destination: {host: secure.backend.test, port: {number: 443}}}]\n"
      "---\n"
      "apiVersion: networking.istio.io/v1\n"
      "kind: VirtualService\n"
      "metadata: {name: web}\n"
      "spec:\n"
      "  hosts: [web.edge.test]\n"
      "  gateways: [edge]\n"
      "  http:\n"
      "  - route: [{destination: {host: api.example.com}}]\n"));
  ASSERT_NO_FATAL_FAILURE(startDaemon(0));

  // curl checks the backend's certificate (secure.backend.test, our CA):
  // only an untouched TLS stream from s_server passes.
  auto pass = https(port, "secure.backend.test", "/");
  EXPECT_EQ(pass.exitCode, 0) << pass.stderrText << mesh_.logs();
  EXPECT_EQ(pass.status, 200);
  EXPECT_NE(pass.body.find("s_server -accept 127.0.0.1:" + std::to_string(backend)), std::string::npos)
      << pass.body.substr(0, 300);
  EXPECT_EQ(servedSubject(port, "secure.backend.test"), "CN = secure.backend.test");
  // The same port terminates web.edge.test itself.
  auto web = https(port, "web.edge.test", "/");
  EXPECT_EQ(web.exitCode, 0) << web.stderrText;
  EXPECT_EQ(web.json()["name"], "frontend-service") << web.body;
  EXPECT_EQ(servedSubject(port, "web.edge.test"), "CN = web.edge.test");
  EXPECT_GE(mesh_.stat("tcp_cx_total"), 2);
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  const nlohmann::json& servers = (*dump)["gateway_listeners"][0]["tls_servers"];
  ASSERT_EQ(servers.size(), 2u) << dump->dump();
  EXPECT_EQ(servers[0]["passthrough"], true);
  EXPECT_EQ(servers[0]["sni_routes"][0]["clusters"][0]["cluster"], "outbound|443||secure.backend.test");
  EXPECT_FALSE(servers[0].contains("certificate_error")) << servers[0].dump();
  // A name neither server has: closed before any TLS state.
  EXPECT_NE(https(port, "nobody.test", "/", {"-k"}).exitCode, 0);
  EXPECT_TRUE(eventually([&] { return mesh_.stat("listener.no_filter_chain_match") >= 1; }, 2000ms));
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

}  // namespace
}  // namespace sluice::itest
