// Gateway listeners from configuration: the seed's "URI Matching"
// VirtualService served on the Gateway it names, the seed's Gateway
// redirecting plain HTTP to https, and listeners opened, refused and closed
// as the configuration changes. Every listener binds 127.0.0.1.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "mesh.h"
#include "proxy_fixture.h"

namespace sluice::itest {
namespace {

using proxy::eventually;

// The seed VirtualService with the `gateways:` line it has in the seed
// article put back (configs/seed/uri-matching.yaml leaves it out).
std::expected<std::string, std::string> uriMatchingOnItsGateway() {
  return Mesh::seedVariant("uri-matching.yaml",
                           {{"  hosts:\n  - api.example.com\n", "  hosts:\n  - api.example.com\n  gateways:\n  - api-gateway\n"}});
}

std::string apiGateway(uint16_t port, uint16_t secondPort = 0) {
  std::string y = "apiVersion: networking.istio.io/v1\n"
                  "kind: Gateway\n"
                  "metadata:\n"
                  "  name: api-gateway\n"
                  "spec:\n"
                  "  selector:\n"
                  "    istio: ingressgateway\n"
                  "  servers:\n"
                  "  - port: {number: " + std::to_string(port) + ", name: http, protocol: HTTP}\n"
                  "    hosts: [api.example.com]\n";
  if (secondPort) {
    y += "  - port: {number: " + std::to_string(secondPort) + ", name: http-2, protocol: HTTP}\n"
         "    hosts: [api.example.com]\n";
  }
  return y;
}

std::expected<Response, std::string> getVia(uint16_t port, const std::string& host, const std::string& target) {
  return httpRequest(port, {.method = "GET", .target = target, .headers = {{"Host", host}}}, 3000ms);
}

bool refused(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool out = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno == ECONNREFUSED;
  ::close(fd);
  return out;
}

// Listening TCP sockets `pid` holds: its socket descriptors' inodes looked up
// in /proc/net/tcp (state 0A is LISTEN). Unlike a descriptor count, pooled
// upstream connections do not move it.
int listeningSockets(pid_t pid) {
  std::set<std::string> inodes;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : fs::directory_iterator(dir)) {
    std::error_code ec;
    std::string target = fs::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::ifstream tcp("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  int n = 0;
  while (std::getline(tcp, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state, queues, timer, retrans, uid, timeout, inode;
    in >> slot >> local >> remote >> state >> queues >> timer >> retrans >> uid >> timeout >> inode;
    if (state == "0A" && inodes.contains(inode)) ++n;
  }
  return n;
}

nlohmann::json gatewayListeners(Mesh& mesh) {
  auto dump = mesh.configDump();
  if (!dump || !(*dump)["gateway_listeners"].is_array()) {
    ADD_FAILURE() << "no gateway_listeners in /config_dump: " << (dump ? dump->dump() : dump.error());
    return nlohmann::json::array({"unreadable"});
  }
  return (*dump)["gateway_listeners"];
}

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(mesh_.startUpstreams(
        {"users-service-v2", "legacy-api", "health-checker", "cdn-service", "frontend-service"}));
    ASSERT_OK(mesh_.addServiceTemplate("api.yaml"));
  }
  // The seed VirtualService bound to api-gateway; with `gatewayPort`, the
  // Gateway too, serving it there. Then the daemon, listeners on 127.0.0.1.
  void serveUriMatching(uint16_t gatewayPort) {
    auto vs = uriMatchingOnItsGateway();
    ASSERT_OK(vs);
    ASSERT_OK(mesh_.writeConfig("uri-matching.yaml", *vs));
    if (gatewayPort) ASSERT_OK(mesh_.writeConfig("gateway.yaml", apiGateway(gatewayPort)));
    ASSERT_OK(mesh_.startDaemon(2, 10000ms, {"--gateway-bind", "127.0.0.1"}));
  }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(GatewayTest, SeedUriMatchingIsServedOnTheGatewayItNames) {
  const uint16_t port = freePort();
  ASSERT_NO_FATAL_FAILURE(serveUriMatching(port));

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/api/v2/users/42", "users-service-v2"}, {"/api/v1/books", "legacy-api"},
      {"/healthz", "health-checker"},           {"/static/app.js", "cdn-service"},
      {"/", "frontend-service"},
  };
  for (const auto& [target, want] : cases) {
    auto r = getVia(port, "api.example.com", target);
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200) << target << ": " << r->summary();
    EXPECT_EQ(upstreamName(*r), want) << target;
  }
  auto assets = getVia(port, "API.example.com:" + std::to_string(port), "/static/app.js");
  ASSERT_OK(assets);
  EXPECT_EQ(assets->header("cache-control"), "public, max-age=86400");
  // A host the Gateway does not serve: no route.
  auto other = getVia(port, "www.example.com", "/api/v1/books");
  ASSERT_OK(other);
  EXPECT_EQ(other->status, 404) << other->summary();
  // The VirtualService names only its gateway, so mesh traffic for
  // api.example.com takes the service's default route.
  EXPECT_EQ(mesh_.servedBy("api.example.com", "/api/v1/books"), "frontend-service");

  nlohmann::json ls = gatewayListeners(mesh_);
  ASSERT_EQ(ls.size(), 1u) << ls.dump();
  EXPECT_EQ(ls[0]["address"], "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(ls[0]["listening"], true);
  EXPECT_EQ(ls[0]["port"], port);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(GatewayTest, SeedGatewayRedirectsPlainHttpToHttps) {
  ASSERT_OK(mesh_.addSeed("gateway.yaml"));
  // The seed's ports (80, 443) moved to free ones.
  const uint16_t http = uint16_t(80 + freeGatewayOffset({80, 443}));
  const std::string offset = std::to_string(http - 80);
  ASSERT_OK(mesh_.startDaemon(2, 10000ms, {"--gateway-bind", "127.0.0.1", "--gateway-port-offset", offset}));

  auto r = getVia(http, "app.example.com", "/login?next=%2Fcart");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 301) << r->summary();
  EXPECT_EQ(r->header("location"), "https://app.example.com/login?next=%2Fcart");
  auto api = getVia(http, "api.example.com:" + std::to_string(http), "/v1");
  ASSERT_OK(api);
  EXPECT_EQ(api->status, 301) << api->summary();
  EXPECT_EQ(api->header("location"), "https://api.example.com/v1");
  // partner-api.example.com has only an HTTPS server.
  auto partner = getVia(http, "partner-api.example.com", "/");
  ASSERT_OK(partner);
  EXPECT_EQ(partner->status, 404);

  // Without --credentials-dir the HTTPS servers cannot load their
  // certificates: said, and their port refuses handshakes.
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  std::string warnings = (*dump)["warnings"].dump();
  EXPECT_NE(warnings.find("Gateway default/production-gateway server https (HTTPS 443): credentialName "
                          "production-tls: sluiced has no --credentials-dir"),
            std::string::npos)
      << warnings;
  EXPECT_NE(warnings.find("server https-mtls (HTTPS 443)"), std::string::npos) << warnings;
  EXPECT_EQ((*dump)["gateway_listeners"].size(), 2u);
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

TEST_F(GatewayTest, GatewayLabelsLeaveOtherGatewaysUnserved) {
  ASSERT_OK(mesh_.addSeed("gateway.yaml"));
  const uint16_t http = freePort();
  ASSERT_OK(mesh_.startDaemon(2, 10000ms,
                              {"--gateway-bind", "127.0.0.1", "--gateway-port-offset", std::to_string(http - 80),
                               "--gateway-labels", "istio=ingressgateway"}));
  EXPECT_TRUE(gatewayListeners(mesh_).empty()) << gatewayListeners(mesh_).dump();
  EXPECT_TRUE(refused(http));
}

TEST_F(GatewayTest, ListenersOpenAndCloseWithTheConfigurationWithoutLeakingSockets) {
  const uint16_t port = freePort();
  ASSERT_NO_FATAL_FAILURE(serveUriMatching(0));  // no Gateway yet
  const pid_t pid = mesh_.daemon().pid();
  EXPECT_TRUE(refused(port));
  EXPECT_TRUE(gatewayListeners(mesh_).empty());
  const int listening = listeningSockets(pid);  // outbound (one per worker) and admin
  ASSERT_EQ(listening, 3);

  // Added: served on every worker's socket.
  ASSERT_OK(mesh_.applyConfig("gateway.yaml", apiGateway(port)));
  ASSERT_TRUE(eventually(
      [&] {
        auto r = getVia(port, "api.example.com", "/api/v1/x");
        return r && r->status == 200 && upstreamName(*r) == "legacy-api";
      },
      3000ms))
      << mesh_.logs();
  for (int i = 0; i < 20; ++i) {
    auto r = getVia(port, "api.example.com", "/api/v1/x");
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary();
  }
  EXPECT_EQ(listeningSockets(pid), listening + 2);  // one per worker

  // A second server on a port somebody else holds: that one is refused
  // with the reason, the first keeps serving.
  SilentListener taken;
  ASSERT_OK(mesh_.applyConfig("gateway.yaml", apiGateway(port, taken.port())));
  nlohmann::json ls = gatewayListeners(mesh_);
  ASSERT_EQ(ls.size(), 2u) << ls.dump();
  EXPECT_EQ(ls[0]["listening"], true) << ls.dump();
  EXPECT_EQ(ls[1]["listening"], false) << ls.dump();
  EXPECT_NE(ls[1]["error"].get<std::string>().find("Address already in use"), std::string::npos) << ls.dump();
  EXPECT_NE(mesh_.daemon().logText().find("gateway listener 127.0.0.1:" + std::to_string(taken.port())),
            std::string::npos);
  auto still = getVia(port, "api.example.com", "/healthz");
  ASSERT_OK(still);
  EXPECT_EQ(upstreamName(*still), "health-checker");
  EXPECT_EQ(listeningSockets(pid), listening + 2);

  // Removed: the port closes and its sockets are gone.
  ASSERT_OK(mesh_.applyConfig("gateway.yaml", "# no gateway\n"));
  EXPECT_TRUE(eventually([&] { return refused(port); }, 3000ms));
  EXPECT_TRUE(gatewayListeners(mesh_).empty());
  EXPECT_TRUE(eventually([&] { return listeningSockets(pid) == listening; }, 3000ms))
      << listeningSockets(pid) << " listening sockets, " << listening << " before the gateway";
  if (HasFailure()) ADD_FAILURE() << mesh_.logs();
}

// SIGTERM: a gateway port stops taking connections at once (not into a
// backlog nobody accepts), while the request in flight on it finishes.
TEST_F(GatewayTest, DrainRefusesNewConnectionsOnGatewayPorts) {
  const uint16_t port = freePort();
  ASSERT_NO_FATAL_FAILURE(serveUriMatching(port));

  auto busy = proxy::RawConn::connect(port, 5000ms);
  ASSERT_OK(busy);
  ASSERT_OK(busy->send("GET /api/v1/slow?delay=1s HTTP/1.1\r\nHost: api.example.com\r\n\r\n"));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(::kill(mesh_.daemon().pid(), SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return refused(port); }, 500ms)) << "gateway port still accepting while draining";
  auto r = busy->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(upstreamName(Response{.status = r->status, .headers = r->headers, .body = r->body}), "legacy-api");
  auto status = mesh_.daemon().wait(5000ms);
  ASSERT_TRUE(status.has_value()) << "sluiced still running 5 s after SIGTERM";
  EXPECT_EQ(*status, 0);
}

}  // namespace
}  // namespace sluice::itest
