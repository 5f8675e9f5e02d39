// WebSocket through sluiced, as Istio allows it on every route: the Upgrade
// reaches the upstream, its 101 reaches the client, and then bytes flow both
// ways as they are, with back-pressure, past the route timeout, until either
// side closes. The upstream here is a small in-test server that answers the
// upgrade and echoes every byte after it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "proxy_fixture.h"

namespace sluice::itest::proxy {
namespace {

// Accepts connections one after another; for each, reads the head and
// either answers 101 and echoes (an Upgrade: websocket request) or answers
// 400 and closes. Remembers the last head it read.
class EchoWebSocketServer {
 public:
  EchoWebSocketServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "echo server: " << strerror(errno);
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~EchoWebSocketServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string lastHead() {
    std::lock_guard lock(mu_);
    return lastHead_;
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }
  void serve(int c) {
    std::string in;
    char buf[65536];
    while (in.find("\r\n\r\n") == std::string::npos) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) return;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, size_t(n));
    }
    size_t end = in.find("\r\n\r\n") + 4;
    std::string head = in.substr(0, end);
    {
      std::lock_guard lock(mu_);
      lastHead_ = head;
    }
    std::string lower = head;
    for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (lower.find("upgrade: websocket") == std::string::npos) {
      const char* no = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
      [[maybe_unused]] ssize_t n = ::send(c, no, strlen(no), MSG_NOSIGNAL);
      return;
    }
    std::string out =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + in.substr(end);
    while (!stop_) {
      size_t off = 0;
      while (off < out.size()) {
        ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += size_t(n);
      }
      out.clear();
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;  // the other side ended the conversation
      out.assign(buf, size_t(n));
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string lastHead_;
  std::thread thread_;
};

constexpr std::string_view kWsConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: chat, namespace: default}
spec:
  hosts: [chat.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${CHAT_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: chat, namespace: default}
spec:
  hosts: [chat]
  http:
  - timeout: 300ms
    route: [{destination: {host: chat}}]
)";

const std::string kUpgrade =
    "GET /chat HTTP/1.1\r\nHost: chat:9080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

class WebSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    mesh_.setVar("CHAT_PORT", std::to_string(server_.port()));
    auto cfg = renderTemplate(kWsConfig, mesh_.vars());
    ASSERT_OK(cfg);
    ASSERT_OK(mesh_.writeConfig("chat.yaml", *cfg));
    ASSERT_OK(mesh_.startDaemon(2));
  }
  EchoWebSocketServer server_;
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

// Reads exactly `n` bytes (or fails).
std::expected<std::string, std::string> readExactly(RawConn& c, size_t n) {
  while (c.buffered().size() < n) {
    if (auto f = c.fill(); !f) return std::unexpected(f.error() + " after " + std::to_string(c.buffered().size()));
  }
  std::string out = c.buffered().substr(0, n);
  c.buffered().erase(0, n);
  return out;
}

TEST_F(WebSocket, UpgradesAndTunnelsBytesBothWaysPastTheRouteTimeout) {
  const int baseline = fdCount(mesh_.daemon().pid());
  auto c = RawConn::connect(mesh_.outboundPort(), 5000ms);
  ASSERT_OK(c);
  ASSERT_OK(c->send(kUpgrade));
  auto head = c->readUntil("\r\n\r\n");
  ASSERT_OK(head);
  EXPECT_EQ(head->rfind("HTTP/1.1 101", 0), 0u) << *head;
  EXPECT_NE(head->find("upgrade: websocket\r\n"), std::string::npos) << *head;
  EXPECT_NE(head->find("connection: upgrade\r\n"), std::string::npos) << *head;
  EXPECT_NE(head->find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), std::string::npos) << *head;
  const std::string up = server_.lastHead();
  EXPECT_NE(up.find("upgrade: websocket\r\n"), std::string::npos) << "the upgrade did not reach the upstream:\n" << up;
  EXPECT_NE(up.find("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), std::string::npos) << up;

  ASSERT_OK(c->send("hello"));
  auto hello = readExactly(*c, 5);
  ASSERT_OK(hello);
  EXPECT_EQ(*hello, "hello");

  // Past the route's 300 ms timeout the conversation goes on.
  std::this_thread::sleep_for(500ms);
  std::string big(4 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4093) big[i] = char('a' + i % 26);
  std::thread writer([&] { ASSERT_OK(c->send(big)); });
  auto echoed = readExactly(*c, big.size());
  writer.join();
  ASSERT_OK(echoed);
  EXPECT_TRUE(*echoed == big) << "4 MiB did not come back intact";

  // The client ends it: nothing is left behind in the daemon.
  c->close();
  EXPECT_TRUE(eventually([&] { return fdCount(mesh_.daemon().pid()) <= baseline; }, 3000ms))
      << "fds " << fdCount(mesh_.daemon().pid()) << " vs " << baseline;
  // And the next client gets its own conversation.
  auto again = RawConn::connect(mesh_.outboundPort(), 5000ms);
  ASSERT_OK(again);
  ASSERT_OK(again->send(kUpgrade));
  ASSERT_OK(again->readUntil("\r\n\r\n"));
  ASSERT_OK(again->send("ping"));
  auto ping = readExactly(*again, 4);
  ASSERT_OK(ping);
  EXPECT_EQ(*ping, "ping");
}

// An upstream that refuses the upgrade answers like any other: the client
// gets its 400, and nothing is tunnelled.
TEST_F(WebSocket, ARefusedUpgradeIsAnOrdinaryAnswer) {
  auto c = RawConn::connect(mesh_.outboundPort(), 5000ms);
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /chat HTTP/1.1\r\nHost: chat:9080\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"));
  auto r = c->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(server_.lastHead().find("pgrade: h2c"), std::string::npos) << "a non-WebSocket upgrade was forwarded";
}

}  // namespace
}  // namespace sluice::itest::proxy
