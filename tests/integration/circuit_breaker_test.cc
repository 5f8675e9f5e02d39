// DestinationRule connectionPool limits as circuit breakers, with real
// processes: the seed's "Testing Circuit Breaking" experiment done with our
// own concurrent client against maxConnections: 1 and
// http1MaxPendingRequests: 1 (sluiced has 2 workers, so the limits must hold
// across them), then http2MaxRequests and maxRequestsPerConnection alone.
// The upstream's own peak of concurrent connections is the ground truth.
#include <gtest/gtest.h>

#include <atomic>
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
