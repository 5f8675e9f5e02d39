// The L4 path's userspace copy loop without root: TcpProxy::start is handed
// an accepted loopback connection and the original destination a capture
// would have recorded, on a real worker loop, with a TCP service compiled
// from YAML. Bytes cross both ways in order, a half-close passes through
// and the other direction still completes, and everything is closed after.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "config/loader.h"
#include "proxy/tcp_proxy.h"
#include "route/table.h"
#include "worker_script.h"

namespace sluice::proxy {
namespace {

constexpr uint32_t kVip = 0x7f0a0005;  // 127.10.0.5, only ever a key into the snapshot
constexpr uint16_t kServicePort = 9000;

int listenLoopback(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(0);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::listen(fd, 8), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// An upstream that answers "got N bytes" once the client half-closes, then
// closes: the proxy must carry the EOF to it and the answer back.
class CountingServer {
 public:
  CountingServer() : fd_(listenLoopback(&port_)) {
    thread_ = std::thread([this] {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      char buf[65536];
      size_t total = 0;
      for (ssize_t n; (n = ::recv(c, buf, sizeof(buf), 0)) > 0;) total += size_t(n);
      std::string answer = "got " + std::to_string(total) + " bytes";
      ::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
      done_ = true;
    });
  }
  ~CountingServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  bool done() const { return done_; }

 private:
  uint16_t port_ = 0;
  int fd_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

std::shared_ptr<const route::Snapshot> tcpSnapshot(uint16_t backendPort) {
  std::string yaml = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: store, namespace: default}
spec:
  hosts: [store.test]
  addresses: [127.10.0.5]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp: )" + std::to_string(backendPort) + "}}]\n";
  config::LoadReport report;
  for (const auto& e : config::loadYaml(yaml, "store.yaml", report)) ADD_FAILURE() << e.str();
  auto compiled = route::compile(report.resources, 1);
  EXPECT_TRUE(compiled.has_value());
  return compiled ? *compiled : nullptr;
}

TEST(TcpCopyLoop, BytesHalfCloseAndTheAnswerCrossThePlainRelay) {
  CountingServer server;
  auto snap = tcpSnapshot(server.port());
  ASSERT_TRUE(snap);
  const route::TcpService* svc = snap->findTcp(htonl(kVip), kServicePort);
  ASSERT_NE(svc, nullptr);

  Engine engine{EngineOptions{}};
  Worker worker(engine, 0);
  ASSERT_TRUE(worker.init(loopback(0)).has_value());
  // The client's connection as the proxy would have accepted it.
  uint16_t lport = 0;
  int lfd = listenLoopback(&lport);
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to = loopback(lport);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  sockaddr_in peer{};
  socklen_t plen = sizeof(peer);
  int accepted = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC | SOCK_NONBLOCK);
  ASSERT_GE(accepted, 0);
  ::close(lfd);
  sockaddr_in orig{};
  orig.sin_family = AF_INET;
  orig.sin_addr.s_addr = htonl(kVip);
  orig.sin_port = htons(kServicePort);

  const std::string payload(3 * 1024 * 1024 + 17, 'p');  // more than one buffer's worth each way
  std::string answer;
  std::thread writer;
  Script script(engine, worker,
                {[&] {
                   TcpProxy::start(worker, accepted, peer, orig, snap, *svc, {});
                   writer = std::thread([&] {
                     for (size_t off = 0; off < payload.size();) {
                       ssize_t n = ::send(client, payload.data() + off, payload.size() - off, MSG_NOSIGNAL);
                       if (n <= 0) return;
                       off += size_t(n);
                     }
                     ::shutdown(client, SHUT_WR);  // the half-close the server waits for
                   });
                   return true;
                 },
                 [&] {
                   char buf[256];
                   ssize_t n;
                   while ((n = ::recv(client, buf, sizeof(buf), MSG_DONTWAIT)) > 0) answer.append(buf, size_t(n));
                   return n == 0;  // the server's close came through after its answer
                 },
                 [&] { return worker.stats().get(stats::Counter::TcpCxTotal) == 1 && server.done(); }});
  const bool finished = script.run(std::chrono::milliseconds(10'000));
  writer.join();
  ::close(client);
  ASSERT_TRUE(finished) << "answer so far: '" << answer << "'";
  EXPECT_EQ(answer, "got " + std::to_string(payload.size()) + " bytes");
  EXPECT_EQ(worker.stats().get(stats::Counter::TcpCxSpliced), 0u);
  EXPECT_GE(worker.stats().get(stats::Counter::TcpBytesCopied), payload.size() + answer.size());
  EXPECT_EQ(worker.stats().get(stats::Counter::TcpCxError), 0u);
}

TEST(TcpCopyLoop, ADeadUpstreamClosesTheClient) {
  uint16_t deadPort = 0;
  ::close(listenLoopback(&deadPort));  // nothing listens there any more
  auto snap = tcpSnapshot(deadPort);
  ASSERT_TRUE(snap);
  const route::TcpService* svc = snap->findTcp(htonl(kVip), kServicePort);
  ASSERT_NE(svc, nullptr);
  Engine engine{EngineOptions{}};
  Worker worker(engine, 0);
  ASSERT_TRUE(worker.init(loopback(0)).has_value());
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  sockaddr_in orig{};
  orig.sin_family = AF_INET;
  orig.sin_addr.s_addr = htonl(kVip);
  orig.sin_port = htons(kServicePort);
  bool closed = false;
  Script script(engine, worker,
                {[&] {
                   TcpProxy::start(worker, fds[0], loopback(1), orig, snap, *svc, {});
                   return true;
                 },
                 [&] {
                   char b;
                   ssize_t n = ::recv(fds[1], &b, 1, MSG_DONTWAIT);
                   closed = n == 0 || (n < 0 && errno != EAGAIN);
                   return closed;
                 }});
  ASSERT_TRUE(script.run());
  EXPECT_TRUE(closed);
  EXPECT_EQ(worker.stats().get(stats::Counter::UpstreamCxConnectFail), 1u);
  ::close(fds[1]);
}

}  // namespace
}  // namespace sluice::proxy
