// DestinationRule connectionPool limits as circuit breakers, with real
// processes: the seed's "Testing Circuit Breaking" experiment done with our
// own concurrent client against maxConnections: 1 and
// http1MaxPendingRequests: 1 (sluiced has 2 workers, so the limits must hold
// across them), then http2MaxRequests and maxRequestsPerConnection alone.
// The upstream's own peak of concurrent connections is the ground truth.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "mesh.h"

namespace sluice::itest {
namespace {

using namespace std::chrono_literals;

constexpr const char* kHost = "reviews:9080";

std::string config(const std::string& pool) {
  return R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${UP_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: )" +
         pool + "\n";
}

struct Tally {
  std::atomic<int> ok{0}, overflow{0}, other{0};
};

class CircuitBreaking : public ::testing::Test {
 protected:
  void start(const std::string& pool, int workers = 2) {
    ASSERT_OK(mesh_.startUpstreams({"up"}));
    auto text = renderTemplate(config(pool), mesh_.vars());
    ASSERT_TRUE(text) << text.error();
    ASSERT_OK(mesh_.writeConfig("reviews.yaml", *text));
    ASSERT_OK(mesh_.startDaemon(workers));
  }
  // `clients` threads, each on its own connection, `each` requests of 20 ms.
  void load(int clients, int each, Tally& t) {
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        auto conn = HttpConnection::connect(mesh_.outboundPort());
        for (int i = 0; i < each; ++i) {
          if (!conn || !conn->isOpen()) conn = HttpConnection::connect(mesh_.outboundPort());
          if (!conn) {
            t.other++;
            continue;
          }
          auto r = conn->send({.target = "/?delay=20ms", .headers = {{"Host", kHost}}});
          if (!r) {
            t.other++;
            conn->close();
          } else if (r->status == 200) {
            t.ok++;
          } else if (r->status == 503 && r->header("x-envoy-overloaded") == "true") {
            t.overflow++;
          } else {
            t.other++;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  nlohmann::json upstreamCounter() {
    auto r = httpRequest(mesh_.upstreamPort("up"), {.method = "GET", .target = "/__counter"});
    return r ? r->json() : nlohmann::json();
  }
  uint64_t stat(const std::string& line) {
    auto r = httpRequest(mesh_.adminPort(), {.method = "GET", .target = "/stats"});
    if (!r) return ~0ull;
    auto at = r->body.find("\n" + line + ": ");
    if (at == std::string::npos) return ~0ull;
    return std::strtoull(r->body.c_str() + at + line.size() + 3, nullptr, 10);
  }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(CircuitBreaking, OneConnectionOnePendingTheRestOverflowAtOnce) {
  ASSERT_NO_FATAL_FAILURE(start("{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}"));
  Tally t;
  load(10, 10, t);
  EXPECT_EQ(t.other, 0);
  EXPECT_GE(t.ok, 10) << "one connection keeps serving";
  EXPECT_GE(t.overflow, 20) << "most of 10 concurrent clients find the connection and the queue full";
  auto up = upstreamCounter();
  EXPECT_EQ(up["peak_connections"], 1) << "the upstream never saw more than maxConnections: " << up.dump();
  const std::string cluster = "cluster.outbound|9080||reviews.default.svc.cluster.local.";
  EXPECT_EQ(stat(cluster + "upstream_rq_pending_overflow"), uint64_t(t.overflow));
  EXPECT_GT(stat(cluster + "upstream_cx_overflow"), 0u);
  EXPECT_EQ(stat("upstream_rq_pending_overflow"), uint64_t(t.overflow));
  auto prom = httpRequest(mesh_.adminPort(), {.method = "GET", .target = "/stats/prometheus"});
  ASSERT_OK(prom);
  EXPECT_NE(prom->body.find("envoy_cluster_upstream_rq_pending_overflow{cluster_name=\"outbound|9080||"
                            "reviews.default.svc.cluster.local\"} " + std::to_string(t.overflow.load())),
            std::string::npos);
  // Nothing stays held once the load is gone.
  EXPECT_EQ(stat(cluster + "circuit_breakers.rq_open"), 0u);
  EXPECT_EQ(stat(cluster + "circuit_breakers.rq_pending_open"), 0u);
}

TEST_F(CircuitBreaking, MaxRequestsBoundsRequestsInFlight) {
  ASSERT_NO_FATAL_FAILURE(start("{http: {http2MaxRequests: 2}}"));
  Tally t;
  load(8, 5, t);
  EXPECT_EQ(t.other, 0);
  EXPECT_GE(t.ok, 5);
  EXPECT_GE(t.overflow, 5);
  EXPECT_LE(upstreamCounter()["peak_connections"].get<int>(), 2) << "never more than 2 in flight";
}

TEST_F(CircuitBreaking, MaxRequestsPerConnectionOpensAFreshConnection) {
  ASSERT_NO_FATAL_FAILURE(start("{http: {maxRequestsPerConnection: 1}}", 1));
  for (int i = 0; i < 5; ++i) {
    auto r = mesh_.get(kHost, "/");
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(r->json()["connection_request"], 1) << "request " << i << " reused a connection";
  }
}

TEST_F(CircuitBreaking, WithoutLimitsConnectionsAreReused) {
  ASSERT_NO_FATAL_FAILURE(start("{tcp: {connectTimeout: 1s}}", 1));
  int reused = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = mesh_.get(kHost, "/");
    ASSERT_OK(r);
    reused += r->json()["connection_request"].get<int>() > 1;
  }
  EXPECT_GE(reused, 3) << "the control: keep-alive pooling works without the limit";
}

}  // namespace
}  // namespace sluice::itest

namespace sluice::itest {
namespace {

using Clock = std::chrono::steady_clock;

// connectionPool timing: connectTimeout against a host that never answers
// the SYN, idleTimeout and maxConnectionDuration on pooled connections, and
// tcpKeepalive on the upstream socket (as `ss` shows it).
class PoolSettings : public CircuitBreaking {};

TEST_F(PoolSettings, ConnectTimeoutGivesUpOnASilentHost) {
  SilentListener silent;
  mesh_.setVar("SILENT_PORT", std::to_string(silent.port()));
  ASSERT_OK(mesh_.startUpstreams({"up"}));
  auto text = renderTemplate(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: silent}
spec:
  hosts: [silent.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${SILENT_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: silent}
spec:
  host: silent
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 150ms}}}
)",
                             mesh_.vars());
  ASSERT_TRUE(text) << text.error();
  ASSERT_OK(mesh_.writeConfig("silent.yaml", *text));
  ASSERT_OK(mesh_.startDaemon(1));
  auto t0 = Clock::now();
  auto r = mesh_.get("silent:9080", "/");
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 503) << r->summary();
  // Three attempts (Istio's default retries) of 150 ms plus back-off, far
  // from the 10 s default.
  EXPECT_GE(ms, 400);
  EXPECT_LE(ms, 1500);
  EXPECT_NE(r->body.find("connection timeout"), std::string::npos) << r->body;
}

TEST_F(PoolSettings, IdleTimeoutClosesPooledConnections) {
  ASSERT_NO_FATAL_FAILURE(start("{http: {idleTimeout: 200ms}}", 1));
  ASSERT_EQ(mesh_.get(kHost, "/")->status, 200);
  EXPECT_EQ(upstreamCounter()["connections"], 1) << "pooled after the request";
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(upstreamCounter()["connections"], 0) << "closed after 200 ms idle";
}

TEST_F(PoolSettings, MaxConnectionDurationRetiresOldConnections) {
  ASSERT_NO_FATAL_FAILURE(start("{tcp: {maxConnectionDuration: 300ms}}", 1));
  int fresh = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = mesh_.get(kHost, "/");
    ASSERT_OK(r);
    fresh += r->json()["connection_request"] == 1;
    std::this_thread::sleep_for(100ms);
  }
  // 1 s of requests every 100 ms over connections that live 300 ms.
  EXPECT_GE(fresh, 2);
  EXPECT_LE(fresh, 6);
}

TEST_F(PoolSettings, TcpKeepaliveIsSetOnUpstreamSockets) {
  ASSERT_NO_FATAL_FAILURE(start("{tcp: {tcpKeepalive: {time: 77s, interval: 5s, probes: 4}}}", 1));
  ASSERT_EQ(mesh_.get(kHost, "/")->status, 200);
  // The pooled connection's keepalive timer, as the kernel reports it.
  auto out = [&] {
    std::string cmd = "ss -tnoH state established '( dport = :" + std::to_string(mesh_.upstreamPort("up")) +
                      " )' 2>&1";
    std::string text;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof(buf), p)) text += buf;
      ::pclose(p);
    }
    return text;
  }();
  EXPECT_NE(out.find("timer:(keepalive,1min1"), std::string::npos) << out;  // 77 s = 1min17s left
}

}  // namespace
}  // namespace sluice::itest

namespace sluice::itest {
namespace {

// maxRetries bounds retries in flight across the cluster: requests to a host
// that refuses connections are retried (Istio's default policy) only while
// the budget lasts; the rest fail without retrying, counted as overflow.
class RetryBudget : public CircuitBreaking {
 protected:
  void startDead(const std::string& pool) {
    mesh_.setVar("DEAD_PORT", std::to_string(freePort()));  // nothing listens there
    auto text = renderTemplate(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dead}
spec:
  hosts: [dead.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${DEAD_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dead}
spec:
  host: dead
  trafficPolicy: {connectionPool: )" + pool + "}\n",
                               mesh_.vars());
    ASSERT_TRUE(text) << text.error();
    ASSERT_OK(mesh_.writeConfig("dead.yaml", *text));
    ASSERT_OK(mesh_.startDaemon(2));
  }
  int load503s(int clients) {
    std::atomic<int> n503{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        for (int i = 0; i < 3; ++i) {
          auto r = mesh_.get("dead:9080", "/");
          if (r && r->status == 503) n503++;
        }
      });
    }
    for (auto& t : threads) t.join();
    return n503;
  }
};

TEST_F(RetryBudget, RetriesBeyondMaxRetriesAreNotMade) {
  ASSERT_NO_FATAL_FAILURE(startDead("{http: {maxRetries: 1}}"));
  EXPECT_EQ(load503s(10), 30);
  const std::string cluster = "cluster.outbound|9080||dead.default.svc.cluster.local.";
  EXPECT_GT(stat(cluster + "upstream_rq_retry_overflow"), 0u);
  EXPECT_EQ(stat(cluster + "circuit_breakers.rq_open"), 0u);
}

TEST_F(RetryBudget, WithoutTheLimitEveryRequestIsRetried) {
  ASSERT_NO_FATAL_FAILURE(startDead("{tcp: {maxConnections: 100000}}"));
  EXPECT_EQ(load503s(10), 30);
  EXPECT_EQ(stat("cluster.outbound|9080||dead.default.svc.cluster.local.upstream_rq_retry_overflow"), 0u);
  EXPECT_GE(stat("upstream_rq_retry"), 60u) << "two retries per request";
}

}  // namespace
}  // namespace sluice::itest
