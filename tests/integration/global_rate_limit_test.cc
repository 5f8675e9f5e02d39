// Global rate limiting through a real redis-server (started and stopped
// here, on a loopback port): the seed's ratelimit-config ConfigMap
// (configs/seed/ratelimit-config.yaml, as written) with an EnvoyFilter
// enabling envoy.filters.http.ratelimit on the outbound listener. Two
// sluiced processes sharing the Redis admit the limit together, not twice
// it; each remote address has its own counter; the counters are the
// ratelimit service's own keys; Redis killed mid-test fails open, then
// closed with failure_mode_deny, and counting resumes when it returns; a
// Redis that never answers costs a request only the filter's timeout.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <ctime>
#include <thread>

#include "mesh.h"
#include "proxy_fixture.h"

namespace sluice::itest {
namespace {

using proxy::eventually;

constexpr std::string_view kService =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata: {name: frontend}\n"
    "spec:\n"
    "  hosts: [frontend.test]\n"
    "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
    "  resolution: STATIC\n"
    "  endpoints: [{address: 127.0.0.1, ports: {http: ${FRONTEND_SERVICE_PORT}}}]\n";

// The filter (domain production, as the seed's ConfigMap) and the
// outbound virtual hosts' rate_limits: `actions` is their YAML list.
std::string envoyFilter(const std::string& actions, bool deny = false, const std::string& timeout = "2s") {
  return "apiVersion: networking.istio.io/v1alpha3\n"
         "kind: EnvoyFilter\n"
         "metadata: {name: ratelimit, namespace: istio-system}\n"
         "spec:\n"
         "  configPatches:\n"
         "  - applyTo: HTTP_FILTER\n"
         "    match:\n"
         "      context: SIDECAR_OUTBOUND\n"
         "      listener:\n"
         "        filterChain:\n"
         "          filter:\n"
         "            name: envoy.filters.network.http_connection_manager\n"
         "            subFilter: {name: envoy.filters.http.router}\n"
         "    patch:\n"
         "      operation: INSERT_BEFORE\n"
         "      value:\n"
         "        name: envoy.filters.http.ratelimit\n"
         "        typed_config:\n"
         "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit\n"
         "          domain: production\n"
         "          failure_mode_deny: " + std::string(deny ? "true" : "false") + "\n"
         "          timeout: " + timeout + "\n"
         "          rate_limit_service:\n"
         "            grpc_service:\n"
         "              envoy_grpc: {cluster_name: outbound|8081||ratelimit.istio-system.svc.cluster.local}\n"
         "            transport_api_version: V3\n"
         "  - applyTo: VIRTUAL_HOST\n"
         "    match:\n"
         "      context: SIDECAR_OUTBOUND\n"
         "      routeConfiguration: {vhost: {name: \"\", route: {action: ANY}}}\n"
         "    patch:\n"
         "      operation: MERGE\n"
         "      value:\n"
         "        rate_limits:\n"
         "        - actions: " + actions + "\n";
}

// /api/... requests are the seed's `header_match: api`.
const std::string kApiAction =
    "[{header_value_match: {descriptor_value: api, headers: [{name: \":path\", prefix_match: /api/}]}}]";
const std::string kAddressAction = "[{remote_address: {}}]";

// Waits until the minute has more than `seconds` of it left, so a burst
// counts in one window (the tests check it did).
void awayFromMinuteEnd(int seconds = 20) {
  for (int i = 0; i < 70 && std::time(nullptr) % 60 > 60 - seconds; ++i) std::this_thread::sleep_for(1s);
}

std::string minuteWindow() { return std::to_string(std::time(nullptr) / 60 * 60); }

class Proxy {
 public:
  // A daemon with the service, the seed's ConfigMap (or a variant) and
  // `filter`, counting in `redisPort`.
  std::expected<void, std::string> start(const std::string& filter, uint16_t redisPort,
                                         const std::vector<std::pair<std::string, std::string>>& seedChanges = {},
                                         int workers = 2) {
    if (auto r = writeService(filter); !r) return r;
    if (auto r = seedChanges.empty() ? mesh_.addSeed("ratelimit-config.yaml")
                                     : mesh_.addSeedVariant("ratelimit-config.yaml", seedChanges);
        !r)
      return r;
    return mesh_.startDaemon(workers, 10000ms, {"--redis", "127.0.0.1:" + std::to_string(redisPort)});
  }
  // Without --redis: the service and `filter`, whose rate_limit_service is
  // a ServiceEntry (GRPC) with its endpoint on `servicePort`.
  std::expected<void, std::string> startWithService(const std::string& filter, uint16_t servicePort) {
    if (auto r = writeService(filter); !r) return r;
    if (auto r = mesh_.writeConfig(
            "ratelimit-service.yaml",
            "apiVersion: networking.istio.io/v1\n"
            "kind: ServiceEntry\n"
            "metadata: {name: ratelimit, namespace: istio-system}\n"
            "spec:\n"
            "  hosts: [ratelimit.istio-system.svc.cluster.local]\n"
            "  ports: [{number: 8081, name: grpc, protocol: GRPC}]\n"
            "  resolution: STATIC\n"
            "  endpoints: [{address: 127.0.0.1, ports: {grpc: " + std::to_string(servicePort) + "}}]\n");
        !r)
      return r;
    return mesh_.startDaemon(1);
  }
  // The backend, its ServiceEntry and `filter`.
  std::expected<void, std::string> writeService(const std::string& filter) {
    if (auto r = mesh_.startUpstreams({"frontend-service"}); !r) return r;
    mesh_.setVar("FRONTEND_SERVICE_PORT", std::to_string(mesh_.upstreamPort("frontend-service")));
    auto svc = renderTemplate(kService, mesh_.vars());
    if (!svc) return std::unexpected(svc.error());
    if (auto r = mesh_.writeConfig("frontend.yaml", *svc); !r) return r;
    return mesh_.writeConfig("ratelimit-filter.yaml", filter);
  }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

struct Tally {
  int ok = 0, limited = 0, other = 0;
  std::string firstOther;
};

// `count` requests for `target` on fresh connections.
Tally send(Mesh& m, const std::string& target, int count) {
  Tally t;
  for (int i = 0; i < count; ++i) {
    auto r = m.get("frontend.test", target);
    if (r && r->status == 200) {
      ++t.ok;
    } else if (r && r->status == 429 && r->header("x-envoy-ratelimited").value_or("") == "true") {
      ++t.limited;
    } else {
      if (!t.other) t.firstOther = r ? r->summary() : r.error();
      ++t.other;
    }
  }
  return t;
}

class GlobalRateLimitTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(redis_.start()); }
  TempDir redisDir_;
  RedisServer redis_{redisDir_.path() / "redis"};
};

TEST_F(GlobalRateLimitTest, TwoProxiesSharingRedisAdmitTheSeedsLimitOnceBetweenThem) {
  Proxy a, b;
  ASSERT_OK(a.start(envoyFilter(kApiAction), redis_.port()));
  ASSERT_OK(b.start(envoyFilter(kApiAction), redis_.port()));
  awayFromMinuteEnd();
  const std::string window = minuteWindow();
  // 60 requests through each, at the same time: the seed allows 100 a
  // minute for `header_match: api`, whichever proxy they pass.
  Tally ta, tb;
  std::thread ra([&] { ta = send(a.mesh_, "/api/items", 60); });
  std::thread rb([&] { tb = send(b.mesh_, "/api/items", 60); });
  ra.join();
  rb.join();
  ASSERT_EQ(minuteWindow(), window) << "the burst outlasted its window";
  EXPECT_EQ(ta.other + tb.other, 0) << ta.firstOther << tb.firstOther;
  EXPECT_EQ(ta.ok + tb.ok, 100) << "a: " << ta.ok << " b: " << tb.ok;
  EXPECT_EQ(ta.limited + tb.limited, 20);
  // Both proxies took part.
  EXPECT_GT(ta.ok, 0);
  EXPECT_GT(tb.ok, 0);
  // The counter is the ratelimit service's own key, with its window's TTL.
  const std::string key = "production_header_match_api_" + window;
  EXPECT_EQ(redis_.command({"GET", key}).value_or("?"), "120") << testing::PrintToString(redis_.keys("*"));
  const int64_t ttl = std::stoll(redis_.command({"TTL", key}).value_or("-9"));
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 60);
  // Other paths make no descriptor: never limited, never counted.
  EXPECT_EQ(send(a.mesh_, "/home", 5).ok, 5);
  EXPECT_EQ(redis_.keys("*").size(), 1u);
  EXPECT_EQ(a.mesh_.stat("ratelimit.ok") + b.mesh_.stat("ratelimit.ok"), 100);
  EXPECT_EQ(a.mesh_.stat("ratelimit.over_limit") + b.mesh_.stat("ratelimit.over_limit"), 20);
  EXPECT_EQ(a.mesh_.stat("ratelimit.error"), 0);
  const std::string prom = a.mesh_.prometheus() + b.mesh_.prometheus();
  EXPECT_NE(prom.find("response_flags=\"RL\""), std::string::npos);
}

TEST_F(GlobalRateLimitTest, EachRemoteAddressHasItsOwnCounter) {
  Proxy p;
  // The seed's 10 a second per address, made 10 a minute so the test's
  // requests fall in one window.
  ASSERT_OK(p.start(envoyFilter(kAddressAction), redis_.port(),
                    {{"unit: second", "unit: minute"}}, /*workers=*/1));
  awayFromMinuteEnd();
  const std::string window = minuteWindow();
  Tally local = send(p.mesh_, "/", 12);
  EXPECT_EQ(local.ok, 10) << local.firstOther;
  EXPECT_EQ(local.limited, 2);
  // Another client address (curl from 127.0.0.2) starts its own count.
  int otherOk = 0;
  for (int i = 0; i < 3; ++i) {
    CurlResult r = curl({"--interface", "127.0.0.2", "-H", "Host: frontend.test",
                         "http://127.0.0.1:" + std::to_string(p.mesh_.outboundPort()) + "/"});
    if (r.status == 200) ++otherOk;
  }
  EXPECT_EQ(otherOk, 3);
  ASSERT_EQ(minuteWindow(), window) << "the requests outlasted their window";
  EXPECT_EQ(redis_.command({"GET", "production_remote_address_127.0.0.1_" + window}).value_or("?"), "12");
  EXPECT_EQ(redis_.command({"GET", "production_remote_address_127.0.0.2_" + window}).value_or("?"), "3");
}

TEST_F(GlobalRateLimitTest, RedisGoneFailsOpenThenClosedAndCountingResumesWhenItReturns) {
  Proxy p;
  ASSERT_OK(p.start(envoyFilter(kApiAction), redis_.port(), {}, /*workers=*/1));
  EXPECT_EQ(send(p.mesh_, "/api/a", 3).ok, 3);
  ASSERT_EQ(redis_.keys("production_header_match_api_*").size(), 1u);
  redis_.stop();
  // failure_mode_deny unset: let through, counted, logged.
  Tally open = send(p.mesh_, "/api/a", 5);
  EXPECT_EQ(open.ok, 5) << open.firstOther;
  EXPECT_EQ(p.mesh_.stat("ratelimit.error"), 5);
  EXPECT_EQ(p.mesh_.stat("ratelimit.failure_mode_allowed"), 5);
  EXPECT_TRUE(eventually([&] { return p.mesh_.logs().find("rate limit: redis 127.0.0.1:") != std::string::npos; },
                         2000ms))
      << p.mesh_.logs();
  // failure_mode_deny: status_on_error (500), flag RLSE.
  ASSERT_OK(p.mesh_.applyConfig("ratelimit-filter.yaml", envoyFilter(kApiAction, /*deny=*/true)));
  for (int i = 0; i < 3; ++i) {
    auto r = p.mesh_.get("frontend.test", "/api/a");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 500) << r->summary();
  }
  EXPECT_NE(p.mesh_.prometheus().find("response_flags=\"RLSE\""), std::string::npos);
  // Back on the same port: within the reconnect back-off (at most 5 s)
  // requests are counted again.
  ASSERT_OK(redis_.start());
  EXPECT_TRUE(eventually([&] { return send(p.mesh_, "/api/a", 1).ok == 1; }, 8000ms)) << p.mesh_.logs();
  EXPECT_EQ(redis_.keys("production_header_match_api_*").size(), 1u);
  EXPECT_GT(p.mesh_.stat("ratelimit.redis_cx_connect_fail"), 0);
  EXPECT_TRUE(eventually([&] { return p.mesh_.logs().find("is back") != std::string::npos; }, 2000ms));
  // Every socket the failures made was closed: the daemon holds as many
  // descriptors as before Redis went (give or take a pooled connection).
  const auto fds = [&] {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(p.mesh_.daemon().pid()) + "/fd")) ++n;
    return n;
  };
  const size_t before = fds();
  redis_.stop();
  send(p.mesh_, "/api/a", 20);
  ASSERT_OK(redis_.start());
  EXPECT_TRUE(eventually([&] { return send(p.mesh_, "/api/a", 1).ok == 1 && fds() <= before + 2; }, 8000ms))
      << before << " fds before, " << fds() << " after";
}

// A stand-in for Redis that answers in order, as Redis does, but holds its
// first INCRBY's answer (999) for `firstDelay`: a reply that comes after
// the filter's timeout.
class LateRedis {
 public:
  explicit LateRedis(Millis firstDelay) : firstDelay_(firstDelay) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && ::listen(fd_, 8) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) == 0)
      port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~LateRedis() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  int incrs() const { return incrs_; }

 private:
  void serve() {
    pollfd p{fd_, POLLIN, 0};
    while (!stop_ && ::poll(&p, 1, 100) >= 0) {
      if (!(p.revents & POLLIN)) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      timeval tv{0, 100'000};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string buf;
      while (!stop_) {
        char tmp[4096];
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n == 0) break;
        if (n > 0) buf.append(tmp, size_t(n));
        // Whole commands: "*3\r\n$6\r\nINCRBY\r\n..." (three bulk strings each).
        for (;;) {
          size_t pos = 0;
          std::vector<std::string> parts;
          bool whole = buf.starts_with("*3\r\n");
          pos = 4;
          for (int i = 0; whole && i < 3; ++i) {
            size_t nl = buf.find("\r\n", pos);
            if (nl == std::string::npos || buf[pos] != '$') { whole = false; break; }
            const size_t len = std::stoul(buf.substr(pos + 1, nl - pos - 1));
            if (buf.size() < nl + 2 + len + 2) { whole = false; break; }
            parts.push_back(buf.substr(nl + 2, len));
            pos = nl + 2 + len + 2;
          }
          if (!whole) break;
          buf.erase(0, pos);
          std::string reply = ":1\r\n";
          if (parts[0] == "INCRBY" && incrs_++ == 0) {
            std::this_thread::sleep_for(firstDelay_);
            reply = ":999\r\n";
          }
          ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        }
      }
      ::close(c);
    }
  }
  Millis firstDelay_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> incrs_{0};
  std::thread thread_;
};

TEST(GlobalRateLimit, AnAnswerAfterTheTimeoutIsDroppedNotGivenToTheNextRequest) {
  LateRedis late(250ms);
  Proxy p;
  ASSERT_OK(p.start(envoyFilter(kApiAction, false, "200ms"), late.port(), {}, /*workers=*/1));
  // Two requests on one keep-alive connection: the first times out (let
  // through), the second's own count is 1. The first's late 999 must not
  // be taken for the second's.
  auto conn = HttpConnection::connect(p.mesh_.outboundPort());
  ASSERT_OK(conn);
  const Request req{.method = "GET", .target = "/api/a", .headers = {{"Host", "frontend.test"}}};
  auto r1 = conn->send(req);
  ASSERT_OK(r1);
  EXPECT_EQ(r1->status, 200) << r1->summary();
  auto r2 = conn->send(req);
  ASSERT_OK(r2);
  EXPECT_EQ(r2->status, 200) << r2->summary();
  EXPECT_EQ(late.incrs(), 2);
  EXPECT_EQ(p.mesh_.stat("ratelimit.failure_mode_allowed"), 1);
  EXPECT_EQ(p.mesh_.stat("ratelimit.ok"), 1);
  // A client that leaves while its call is late: the answer finds nobody.
  conn->close();
  auto conn2 = HttpConnection::connect(p.mesh_.outboundPort());
  ASSERT_OK(conn2);
  EXPECT_EQ(conn2->send(req).value_or(Response{}).status, 200);
  EXPECT_TRUE(p.mesh_.daemon().running());
}

// Without --redis, the filter asks the rate limit service its
// rate_limit_service names: a gRPC server of the test's own
// (tests/integration/rls_peer.py, python3-grpcio) that allows 3 requests
// per descriptor.
TEST(GlobalRateLimit, WithoutRedisTheRateLimitServiceDecides) {
  TempDir tmp;
  const uint16_t rlsPort = freePort();
  auto rls = Process::start({"/usr/bin/python3", (repoRoot() / "tests/integration/rls_peer.py").string(), "--port",
                             std::to_string(rlsPort), "--limit", "3"},
                            tmp.path() / "rls.log");
  ASSERT_OK(rls);
  ASSERT_TRUE(rls->waitForLog("listening on", 10000ms)) << rls->logText();
  Proxy p;
  ASSERT_OK(p.startWithService(envoyFilter(kApiAction + "\n        - actions: " + kAddressAction, false, "2s"),
                               rlsPort));
  Tally t = send(p.mesh_, "/api/items", 5);
  EXPECT_EQ(t.ok, 3) << t.firstOther << p.mesh_.logs();
  EXPECT_EQ(t.limited, 2);
  // The service saw the domain and both descriptors of each request.
  EXPECT_NE(rls->logText().find("request domain=production descriptors=header_match=api;remote_address=127.0.0.1 -> 1"),
            std::string::npos)
      << rls->logText();
  EXPECT_EQ(p.mesh_.stat("ratelimit.ok"), 3);
  EXPECT_EQ(p.mesh_.stat("ratelimit.over_limit"), 2);
  // The service gone: let through (failure_mode_deny unset), counted.
  rls->stop();
  Tally down = send(p.mesh_, "/api/items", 2);
  EXPECT_EQ(down.ok, 2) << down.firstOther;
  EXPECT_EQ(p.mesh_.stat("ratelimit.failure_mode_allowed"), 2);
  EXPECT_TRUE(eventually([&] { return p.mesh_.logs().find("rate limit service 127.0.0.1:") != std::string::npos; },
                         2000ms))
      << p.mesh_.logs();
}

TEST(GlobalRateLimit, ARateLimitServiceThatNeverAnswersCostsOnlyTheTimeout) {
  SilentListener silent;
  Proxy p;
  ASSERT_OK(p.startWithService(envoyFilter(kApiAction, false, "100ms"), silent.port()));
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = p.mesh_.get("frontend.test", "/api/slow");
    const int64_t ms = proxy::msSince(t0);
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_GE(ms, 90);
    EXPECT_LT(ms, 900);
  }
  EXPECT_EQ(p.mesh_.stat("ratelimit.failure_mode_allowed"), 3);
  EXPECT_TRUE(p.mesh_.daemon().running());
}

TEST(GlobalRateLimit, ARedisThatNeverAnswersCostsOnlyTheTimeout) {
  // A listener that never accepts: the connect neither succeeds nor fails.
  SilentListener silent;
  Proxy p;
  ASSERT_OK(p.start(envoyFilter(kApiAction, false, "100ms"), silent.port(), {}, /*workers=*/1));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = p.mesh_.get("frontend.test", "/api/slow");
  const int64_t ms = proxy::msSince(t0);
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_GE(ms, 90);
  EXPECT_LT(ms, 900);
  EXPECT_EQ(p.mesh_.stat("ratelimit.failure_mode_allowed"), 1);
}

}  // namespace
}  // namespace sluice::itest
