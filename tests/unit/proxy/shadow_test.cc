// ShadowManager against a real worker event loop and a blocking loopback
// server: the worker runs on the test thread and a timer drives each test's
// steps from inside the loop (the ring and timers are single-threaded).
#include "proxy/shadow.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/timer_wheel.h"
#include "http/parser.h"
#include "proxy/engine.h"
#include "proxy/worker.h"
#include "worker_script.h"

namespace sluice::proxy {
namespace {

using stats::Counter;
using namespace std::chrono_literals;

route::Endpoint endpointAt(uint16_t port) {
  route::Endpoint ep;
  ep.address = "127.0.0.1";
  ep.port = port;
  ep.sockaddr = loopback(port);
  ep.key = "127.0.0.1:" + std::to_string(port);
  return ep;
}

// A loopback HTTP/1.1 server, one thread per connection. `reply` sees each
// complete request (head, body) and returns the bytes to answer with, or
// nullopt to stay silent.
class TestServer {
 public:
  struct Request {
    std::string head, body;
  };
  using Reply = std::function<std::optional<std::string>(const Request&)>;

  explicit TestServer(Reply reply) : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(0);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(fd_, 64), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    timeval tv{0, 20'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    acceptor_ = std::thread([this] { acceptLoop(); });
  }
  ~TestServer() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : conns_) t.join();
    ::close(fd_);
  }

  uint16_t port() const { return port_; }
  int accepted() const {
    std::lock_guard l(mu_);
    return accepted_;
  }
  int eofs() const {
    std::lock_guard l(mu_);
    return eofs_;
  }
  std::vector<Request> requests() const {
    std::lock_guard l(mu_);
    return requests_;
  }

 private:
  void acceptLoop() {
    while (!stop_) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;  // the receive timeout: look at stop_ again
      timeval tv{0, 20'000};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      {
        std::lock_guard l(mu_);
        ++accepted_;
      }
      conns_.emplace_back([this, c] { serve(c); });
    }
  }

  void serve(int c) {
    std::string buf;
    char chunk[16384];
    while (!stop_) {
      ssize_t n = ::recv(c, chunk, sizeof(chunk), 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) {
        std::lock_guard l(mu_);
        ++eofs_;
        break;
      }
      buf.append(chunk, size_t(n));
      for (;;) {
        http::RequestHead head;
        http::ParseError err;
        if (http::parseRequestHead(buf.data(), buf.size(), http::Limits{}, head, err) !=
            http::ParseStatus::Complete) {
          break;
        }
        http::BodyFramer body(head.framing);
        auto step = body.consume(buf.data() + head.headBytes, buf.size() - head.headBytes);
        if (!body.done()) break;
        Request r{buf.substr(0, head.headBytes), buf.substr(head.headBytes, step.consumed)};
        buf.erase(0, head.headBytes + step.consumed);
        {
          std::lock_guard l(mu_);
          requests_.push_back(r);
        }
        if (auto out = reply_(r)) ::send(c, out->data(), out->size(), MSG_NOSIGNAL);
      }
    }
    ::close(c);
  }

  Reply reply_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> conns_;  // touched by the acceptor only, then joined
  mutable std::mutex mu_;
  int accepted_ = 0;
  int eofs_ = 0;
  std::vector<Request> requests_;
};

std::optional<std::string> okReply(const TestServer::Request&) {
  return std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

class ShadowTest : public ::testing::Test {
 protected:
  ShadowTest() : engine_(options()), worker_(engine_, 0) {
    auto r = worker_.init(loopback(0));
    EXPECT_TRUE(r.has_value());
  }

  static EngineOptions options() {
    EngineOptions o;
    o.drainTimeoutNs = 2'000'000'000ull;
    o.connectTimeoutNs = 1'000'000'000ull;
    return o;
  }

  uint64_t counter(Counter c) { return worker_.stats().get(c); }
  bool run(std::vector<std::function<bool()>> steps) {
    Script s(engine_, worker_, std::move(steps));
    return s.run();
  }

  Engine engine_;
  Worker worker_;
};

const std::string kGet = "GET /a HTTP/1.1\r\nHost: svc-shadow\r\n\r\n";

ShadowRequest mirrorOf(std::string head, bool hasBody, uint64_t timeoutNs) {
  return {.head = std::move(head), .hasBody = hasBody, .timeoutNs = timeoutNs};
}

TEST_F(ShadowTest, MirrorsAndReusesKeepAliveConnection) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] {
        auto s = m.start(ep, mirrorOf(kGet, false, 0));
        EXPECT_TRUE(s != nullptr);
        EXPECT_EQ(m.inFlight(), 1u);
        return true;  // a bodiless mirror's stream may be dropped at once
      },
      [&] { return m.inFlight() == 0; },
      [&] {
        auto s = m.start(ep, mirrorOf("GET /b HTTP/1.1\r\nHost: svc-shadow\r\n\r\n", false, 0));
        return true;
      },
      [&] { return m.inFlight() == 0 && server.requests().size() == 2; },
  });
  ASSERT_TRUE(ok);
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].head, kGet);
  EXPECT_EQ(reqs[1].head, "GET /b HTTP/1.1\r\nHost: svc-shadow\r\n\r\n");
  EXPECT_EQ(server.accepted(), 1);  // the second mirror reused the first connection
  EXPECT_EQ(counter(Counter::ShadowRqTotal), 2u);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

TEST_F(ShadowTest, StreamsBodyAsFed) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  std::unique_ptr<ShadowStream> s;
  bool ok = run({
      [&] {
        s = m.start(ep, mirrorOf("POST /u HTTP/1.1\r\nHost: a-shadow\r\nContent-Length: 10\r\n\r\n", true, 0));
        EXPECT_TRUE(s && !s->dead());
        s->feed("hello", false);
        return true;
      },
      // The mirror is connected and waiting for the rest of the body.
      [&] { return server.accepted() == 1; },
      [&] {
        EXPECT_EQ(m.inFlight(), 1u);
        s->feed("world", true);
        return true;
      },
      [&] { return m.inFlight() == 0; },
  });
  ASSERT_TRUE(ok);
  EXPECT_TRUE(s->dead());
  s->feed("late", true);  // a no-op on a finished mirror
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].body, "helloworld");
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

TEST_F(ShadowTest, ShedsPastInFlightCapAndTimesOut) {
  TestServer server([](const TestServer::Request&) { return std::nullopt; });
  auto ep = endpointAt(server.port());
  ShadowManager m(worker_, 1);
  bool ok = run({
      [&] {
        EXPECT_TRUE(m.start(ep, mirrorOf(kGet, false, 100'000'000)) != nullptr);
        EXPECT_TRUE(m.start(ep, mirrorOf(kGet, false, 100'000'000)) == nullptr);
        EXPECT_EQ(m.inFlight(), 1u);
        return true;
      },
      [&] { return m.inFlight() == 0; },  // the 100 ms timeout ended it
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(counter(Counter::ShadowRqShed), 1u);
  EXPECT_EQ(counter(Counter::ShadowRqTotal), 1u);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 1u);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(ShadowTest, AMirrorNeedsAConnectionSlotOfItsCluster) {
  TestServer server([](const TestServer::Request&) { return std::nullopt; });
  auto ep = endpointAt(server.port());
  upstream::PoolLimits one;
  one.maxConnections = 1;
  auto limits = std::make_shared<upstream::ClusterLimits>("outbound|80||mirror", one);
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] {
        EXPECT_TRUE(m.start(ep, mirrorOf(kGet, false, 100'000'000), {}, limits) != nullptr);
        EXPECT_EQ(limits->inUse(upstream::ClusterLimits::kConnections), 1u);
        // The one connection is busy: a second mirror is shed, not queued.
        EXPECT_TRUE(m.start(ep, mirrorOf(kGet, false, 100'000'000), {}, limits) == nullptr);
        EXPECT_EQ(limits->cxOverflow.load(), 1u);
        return true;
      },
      // The first times out and its connection closes: the slot comes back.
      [&] { return m.inFlight() == 0 && limits->inUse(upstream::ClusterLimits::kConnections) == 0; },
      [&] { return m.start(ep, mirrorOf(kGet, false, 100'000'000), {}, limits) != nullptr; },
      [&] { return m.inFlight() == 0; },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(counter(Counter::ShadowRqShed), 1u);
  EXPECT_EQ(counter(Counter::ShadowRqTotal), 2u);
  EXPECT_EQ(server.accepted(), 2);
}

TEST_F(ShadowTest, AnIdleMirrorConnectionKeepsNoSlotItsClusterIsShortOf) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  upstream::PoolLimits one, two;
  one.maxConnections = 1;
  two.maxConnections = 2;
  auto tight = std::make_shared<upstream::ClusterLimits>("outbound|80||tight", one);
  auto roomy = std::make_shared<upstream::ClusterLimits>("outbound|80||roomy", two);
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] { return m.start(ep, mirrorOf(kGet, false, 0), {}, tight) != nullptr; },
      // Done: its connection closes instead of parking on the only slot.
      [&] { return m.inFlight() == 0 && tight->inUse(upstream::ClusterLimits::kConnections) == 0; },
      [&] { return m.start(ep, mirrorOf(kGet, false, 0), {}, roomy) != nullptr; },
      [&] { return m.inFlight() == 0 && server.requests().size() == 2; },
      [&] {
        // With room to spare the connection was parked, and holds its slot.
        EXPECT_EQ(roomy->inUse(upstream::ClusterLimits::kConnections), 1u);
        return m.start(ep, mirrorOf(kGet, false, 0), {}, roomy) != nullptr;
      },
      [&] { return m.inFlight() == 0 && server.requests().size() == 3; },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(server.accepted(), 2) << "the parked connection was reused";
}

TEST_F(ShadowTest, ConnectFailureCountsFailed) {
  // A port nobody listens on: bind, read it back, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(0);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  auto ep = endpointAt(ntohs(a.sin_port));
  ShadowManager& m = worker_.shadows();
  std::unique_ptr<ShadowStream> s;
  bool ok = run({
      [&] {
        s = m.start(ep, mirrorOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", true, 0));
        return true;
      },
      [&] { return m.inFlight() == 0; },
  });
  ASSERT_TRUE(ok);
  EXPECT_TRUE(s->dead());
  s->feed("abc", true);  // the primary keeps feeding a dead mirror: no-op
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 1u);
}

TEST_F(ShadowTest, AbandonsPastUnsentCap) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  ShadowManager m(worker_, 8, 1000);
  std::unique_ptr<ShadowStream> s;
  bool ok = run({
      [&] {
        s = m.start(ep, mirrorOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", true, 0));
        // Still connecting: everything fed is unsent.
        s->feed(std::string(600, 'a'), false);
        EXPECT_FALSE(s->dead());
        s->feed(std::string(600, 'b'), false);
        EXPECT_TRUE(s->dead());
        EXPECT_EQ(m.inFlight(), 0u);
        return true;
      },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(counter(Counter::RetryOrShadowAbandoned), 1u);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(ShadowTest, DroppingUnfinishedStreamClosesMirror) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  std::unique_ptr<ShadowStream> s;
  bool ok = run({
      [&] {
        s = m.start(ep, mirrorOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", true, 0));
        s->feed("12345", false);
        return true;
      },
      [&] { return server.accepted() == 1; },
      [&] {
        s.reset();  // the primary's client went away mid-body
        EXPECT_EQ(m.inFlight(), 0u);
        return true;
      },
      [&] { return server.eofs() == 1; },
  });
  ASSERT_TRUE(ok);
  EXPECT_TRUE(server.requests().empty());
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

TEST_F(ShadowTest, ConnectionCloseResponseIsNotPooled) {
  TestServer server([](const TestServer::Request&) {
    return std::optional<std::string>("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  });
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] { return m.start(ep, mirrorOf(kGet, false, 0)) != nullptr; },
      [&] { return m.inFlight() == 0; },
      [&] { return m.start(ep, mirrorOf(kGet, false, 0)) != nullptr; },
      [&] { return m.inFlight() == 0 && server.requests().size() == 2; },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

TEST_F(ShadowTest, HeadResponseHasNoBodyAndInterimIsSkipped) {
  // Content-Length on a HEAD answer describes the GET body, none follows.
  TestServer server([](const TestServer::Request&) {
    return std::optional<std::string>(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
  });
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] { return m.start(ep, mirrorOf("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", false, 5'000'000'000)) != nullptr; },
      [&] { return m.inFlight() == 0; },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

TEST_F(ShadowTest, BadResponseCountsFailed) {
  TestServer server([](const TestServer::Request&) {
    return std::optional<std::string>("garbage\r\n\r\n");
  });
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] { return m.start(ep, mirrorOf(kGet, false, 0)) != nullptr; },
      [&] { return m.inFlight() == 0; },
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 1u);
}

TEST_F(ShadowTest, DrainClosesPooledConnections) {
  TestServer server(okReply);
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  bool ok = run({
      [&] { return m.start(ep, mirrorOf(kGet, false, 0)) != nullptr; },
      [&] { return m.inFlight() == 0; },
      [&] {
        EXPECT_EQ(server.eofs(), 0);  // pooled, open
        m.drain();
        return true;
      },
      [&] { return server.eofs() == 1; },
  });
  ASSERT_TRUE(ok);
}

TEST_F(ShadowTest, WorkerWaitsForInFlightMirrorWhenDraining) {
  TestServer server([](const TestServer::Request&) {
    std::this_thread::sleep_for(200ms);
    return okReply({});
  });
  auto ep = endpointAt(server.port());
  ShadowManager& m = worker_.shadows();
  // The only step starts the mirror; the script then stops the engine at
  // once, and the worker's drain must let the mirror finish.
  bool ok = run({[&] { return m.start(ep, mirrorOf(kGet, false, 0)) != nullptr; }});
  ASSERT_TRUE(ok);
  EXPECT_EQ(m.inFlight(), 0u);
  EXPECT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(counter(Counter::ShadowRqFailed), 0u);
}

// At the drain deadline the worker exits with the mirror still in flight;
// the manager frees its connection (the socket closes) with the worker.
TEST(ShadowExitTest, DrainDeadlineClosesInFlightMirrorWithWorker) {
  TestServer server([](const TestServer::Request&) { return std::nullopt; });
  EngineOptions o;
  o.drainTimeoutNs = 100'000'000;
  Engine engine(o);
  auto worker = std::make_unique<Worker>(engine, 0);
  ASSERT_TRUE(worker->init(loopback(0)).has_value());
  auto ep = endpointAt(server.port());
  auto start = std::chrono::steady_clock::now();
  Script s(engine, *worker, {[&] { return worker->shadows().start(ep, mirrorOf(kGet, false, 0)) != nullptr; },
                             [&] { return server.requests().size() == 1; }});
  ASSERT_TRUE(s.run());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_EQ(worker->shadows().inFlight(), 1u);
  EXPECT_EQ(server.eofs(), 0);
  worker.reset();
  for (int i = 0; i < 100 && server.eofs() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server.eofs(), 1);
}

}  // namespace
}  // namespace sluice::proxy
