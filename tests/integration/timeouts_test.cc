// Downstream timeouts, limits and cancellation: --request-headers-timeout
// against a client that trickles its head (slowloris), --idle-timeout,
// --max-connections, and a client that leaves with its request in flight
// (cancelled at once, flag DC).
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/wait.h>

#include <fstream>

#include "proxy_fixture.h"

namespace sluice::itest::proxy {
namespace {

using Timeouts = ProxyTest;

TEST_F(Timeouts, ATricklingHeadGets408AtTheRequestHeadersTimeout) {
  ASSERT_NO_FATAL_FAILURE(startMesh(2, {"--request-headers-timeout", "1s"}));
  // An idle keep-alive connection is not this timer's business: the clock
  // starts at a head's first byte.
  auto idle = raw();
  ASSERT_OK(idle);
  auto slow = raw(5000ms);
  ASSERT_OK(slow);
  const auto start = std::chrono::steady_clock::now();
  const std::string head = "GET /slow HTTP/1.1\r\nHost: echo:9080\r\nX-Pad: ";
  bool closed = false;
  for (size_t i = 0; i < 40 && !closed; ++i) {  // a byte every 100 ms: 4 s if nothing stopped it
    if (!slow->send(i < head.size() ? head.substr(i, 1) : std::string("a"))) closed = true;
    std::this_thread::sleep_for(100ms);
    pollfd p{slow->fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) closed = true;
  }
  auto r = slow->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 408);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(slow->peerClosed());
  const int64_t ms = msSince(start);
  EXPECT_GE(ms, 900);
  EXPECT_LT(ms, 2500) << "the trickling head was not cut at the 1 s limit";
  EXPECT_EQ(stat("downstream_rq_header_timeout"), 1);

  ASSERT_OK(idle->send("GET /after-idle HTTP/1.1\r\nHost: echo:9080\r\n\r\n"));
  auto ok = idle->readResponse();
  ASSERT_OK(ok);
  EXPECT_EQ(ok->status, 200) << "an idle connection was closed by the headers timeout";
}

TEST_F(Timeouts, IdleClientConnectionsCloseAtTheIdleTimeout) {
  ASSERT_NO_FATAL_FAILURE(startMesh(1, {"--idle-timeout", "400ms"}));
  auto c = raw(3000ms);
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET /one HTTP/1.1\r\nHost: echo:9080\r\n\r\n"));
  ASSERT_OK(c->readResponse());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c->peerClosed());
  EXPECT_GE(msSince(start), 300);
  EXPECT_LT(msSince(start), 2000);
}

TEST_F(Timeouts, BadDurationsAreRefusedAtStart) {
  for (std::vector<std::string> args : {std::vector<std::string>{"--request-headers-timeout", "10"},
                                        std::vector<std::string>{"--idle-timeout", "-1s"}}) {
    std::vector<std::string> argv = {binaryPath("sluiced").string(), "--config-dir", tmp_.path().string(), "--bpf", "off",
                                     "--outbound", "127.0.0.1:" + std::to_string(freePort()), "--admin",
                                     "127.0.0.1:" + std::to_string(freePort())};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::start(argv, tmp_.path() / "bad.log");
    ASSERT_OK(p);
    auto rc = p->wait(5000ms);
    ASSERT_TRUE(rc.has_value()) << "sluiced kept running with " << args[0] << " " << args[1];
    EXPECT_TRUE(WIFEXITED(*rc) && WEXITSTATUS(*rc) == 2) << "status " << *rc;
    EXPECT_NE(p->logText().find(args[0]), std::string::npos) << p->logText();
  }
}

// A client that leaves while its request waits on a slow upstream cancels
// it within a loop turn: the upstream connection is closed rather than kept
// for the answer, the daemon holds no descriptor for it, and the access log
// says DC. A half-close counts as leaving, as in Envoy and nginx.
TEST_F(Timeouts, AClientThatLeavesCancelsItsRequest) {
  const fs::path log = tmp_.path() / "access.log";
  ASSERT_NO_FATAL_FAILURE(startMesh(1, {"--access-log", log.string()}));
  ASSERT_OK(get("/warm"));
  const int baseline = fdCount(daemonPid());
  for (bool halfClose : {false, true}) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /abandoned?delay=3s HTTP/1.1\r\nHost: echo:9080\r\n\r\n"));
    ASSERT_TRUE(eventually([&] { return stat("upstream_rq_total") >= (halfClose ? 3 : 2); }, 2000ms));
    const auto left = std::chrono::steady_clock::now();
    if (halfClose) {
      ASSERT_EQ(::shutdown(c->fd(), SHUT_WR), 0);
    } else {
      c->close();
    }
    EXPECT_TRUE(eventually([&] { return fdCount(daemonPid()) <= baseline; }, 2000ms))
        << "fds " << fdCount(daemonPid()) << " vs " << baseline << " after the client left";
    EXPECT_LT(msSince(left), 1000) << "the abandoned request held its descriptors";
    if (halfClose) {
      EXPECT_TRUE(c->peerClosed());
    }
  }
  EXPECT_EQ(stat("downstream_cx_destroy_remote_active_rq"), 2);
  ASSERT_TRUE(eventually(
      [&] {
        std::ifstream in(log);
        std::string text((std::istreambuf_iterator<char>(in)), {});
        size_t n = 0;
        for (size_t at = text.find("/abandoned"); at != std::string::npos; at = text.find("/abandoned", at + 1)) {
          size_t eol = text.find('\n', at);
          n += text.substr(at, eol - at).find(" DC ") != std::string::npos;
        }
        return n == 2;
      },
      2000ms))
      << "access log:\n"
      << [&] {
           std::ifstream in(log);
           return std::string((std::istreambuf_iterator<char>(in)), {});
         }();
}

// Past --max-connections a new client is closed as soon as it is accepted
// (not left waiting in the backlog), the admin API still answers, and a
// freed slot is usable again.
TEST_F(Timeouts, ConnectionsPastMaxConnectionsAreClosedAtOnce) {
  ASSERT_NO_FATAL_FAILURE(startMesh(2, {"--max-connections", "3"}));
  std::vector<RawConn> held;
  for (int i = 0; i < 3; ++i) {
    auto c = raw();
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /held HTTP/1.1\r\nHost: echo:9080\r\n\r\n"));
    ASSERT_OK(c->readResponse());  // admitted and served
    held.push_back(std::move(*c));
  }
  auto extra = raw(3000ms);
  ASSERT_OK(extra);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(extra->peerClosed()) << "the connection past the limit was not closed";
  EXPECT_LT(msSince(start), 1000);
  EXPECT_EQ(stat("downstream_cx_overflow"), 1);
  auto ready = httpRequest(mesh_.adminPort(), {.target = "/ready"});
  ASSERT_OK(ready);
  EXPECT_EQ(ready->status, 200);

  held.pop_back();  // one slot frees when the daemon sees the close
  ASSERT_TRUE(eventually(
      [&] {
        auto c = raw(1000ms);
        if (!c || !c->send("GET /again HTTP/1.1\r\nHost: echo:9080\r\n\r\n")) return false;
        auto r = c->readResponse();
        return r && r->status == 200;
      },
      2000ms));
}

// Past --max-heap (here 1 MiB, which the daemon passes at once) new
// requests are refused with 503 (flag OM, x-envoy-overloaded) and idle
// client connections are closed, while the admin API still answers.
TEST_F(Timeouts, PastMaxHeapNewRequestsAre503AndIdleConnectionsClose) {
  ASSERT_NO_FATAL_FAILURE(startMesh(2, {"--max-heap", "1M"}));
  ASSERT_TRUE(eventually(
      [&] {
        auto r = get("/overloaded");
        return r && r->status == 503 && r->header("x-envoy-overloaded") == "true";
      },
      3000ms))
      << "never refused past the heap limit" << out();
  auto idle = raw(3000ms);
  ASSERT_OK(idle);
  EXPECT_TRUE(idle->peerClosed()) << "an idle connection was kept while overloaded";
  EXPECT_GE(stat("downstream_rq_overload"), 1);
  EXPECT_GE(stat("downstream_cx_overload_shed"), 1);
  auto ready = httpRequest(mesh_.adminPort(), {.target = "/ready"});
  ASSERT_OK(ready);
  EXPECT_EQ(ready->status, 200);
}

TEST_F(Timeouts, UnderMaxHeapNothingIsRefused) {
  ASSERT_NO_FATAL_FAILURE(startMesh(2, {"--max-heap", "1G"}));
  std::this_thread::sleep_for(300ms);  // a few samples
  for (int i = 0; i < 20; ++i) {
    auto r = get("/fine");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(stat("downstream_rq_overload"), 0);
}

}  // namespace
}  // namespace sluice::itest::proxy
