// Requests queued for an upstream connection (DestinationRule maxConnections
// reached, within http1MaxPendingRequests) wait in the worker's pool until
// they are woken; nothing polls. Once the connection frees they run over
// that same keep-alive connection one after another, each sent as soon as
// the previous response is in. The upstream is a RecordingUpstream: it
// counts the connections it accepted and the most open at once, and stamps
// each request's arrival.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "proxy_fixture.h"
#include "recording_upstream.h"

namespace sluice::itest::proxy {
namespace {

constexpr int kQueued = 1000;

constexpr std::string_view kPoolConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${SLOW_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow, namespace: default}
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1000}
)";

// Nanoseconds all threads of `pid` have spent on a CPU (each
// /proc/PID/task/TID/schedstat), or -1.
int64_t cpuNs(pid_t pid) {
  std::error_code ec;
  int64_t total = 0;
  int threads = 0;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "schedstat");
    int64_t ns = 0;
    if (in >> ns) {
      total += ns;
      ++threads;
    }
  }
  return threads > 0 ? total : -1;
}

TEST(ConnPool, QueuedRequestsAreWokenAndShareTheOneConnection) {
  // 1,000 client sockets here and as many accepted ones in the daemon,
  // which inherits the limit.
  rlimit fds{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &fds), 0);
  if (fds.rlim_cur < 4096 && fds.rlim_max >= 4096) {
    fds.rlim_cur = 4096;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &fds), 0);
  }
  if (fds.rlim_cur < 4096) GTEST_SKIP() << "needs 4096 descriptors, RLIMIT_NOFILE allows " << fds.rlim_cur;

  auto up = RecordingUpstream::start("slow", 3000ms);  // the first answer holds the connection 3 s
  ASSERT_OK(up);
  TempDir tmp;
  Mesh mesh(tmp);
  mesh.setVar("SLOW_PORT", std::to_string((*up)->port()));
  auto cfg = renderTemplate(kPoolConfig, mesh.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh.writeConfig("slow.yaml", *cfg));
  ASSERT_OK(mesh.startDaemon(2));

  auto first = RawConn::connect(mesh.outboundPort(), 10000ms);
  ASSERT_OK(first);
  ASSERT_OK(first->send("GET /first HTTP/1.1\r\nHost: slow:9080\r\n\r\n"));
  ASSERT_TRUE((*up)->waitForCount(1, 2000ms));
  (*up)->setDelay(0ms);

  std::vector<RawConn> queued;
  for (int i = 0; i < kQueued; ++i) {
    auto c = RawConn::connect(mesh.outboundPort(), 10000ms);
    ASSERT_OK(c);
    ASSERT_OK(c->send("GET /q" + std::to_string(i) + " HTTP/1.1\r\nHost: slow:9080\r\n\r\n"));
    queued.push_back(std::move(*c));
  }
  // Every queued request counted one connection overflow as it started to wait.
  ASSERT_TRUE(eventually([&] { return mesh.stat("upstream_cx_overflow") >= kQueued; }, 2000ms))
      << "queued: " << mesh.stat("upstream_cx_overflow") << mesh.logs();
  ASSERT_EQ((*up)->count(), 1u) << "nothing but the first request may reach the upstream yet";

  // While they wait, the daemon does next to nothing (it used to look again
  // every millisecond for each of them).
  const pid_t pid = mesh.daemon().pid();
  const int64_t cpu0 = cpuNs(pid);
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1000ms);
  const int64_t cpu1 = cpuNs(pid);
  const int64_t wallNs =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - wall0).count();
  ASSERT_GE(cpu0, 0);
  std::printf("[ pool     ] daemon CPU while %d requests wait: %.2f%% of a core\n", kQueued,
              100.0 * double(cpu1 - cpu0) / double(wallNs));
  EXPECT_LT(double(cpu1 - cpu0) / double(wallNs), 0.02)
      << "the daemon used " << (cpu1 - cpu0) / 1000 << " us of CPU in " << wallNs / 1000 << " us of waiting";

  auto r = first->readResponse();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  for (int i = 0; i < kQueued; ++i) {
    auto q = queued[size_t(i)].readResponse();
    ASSERT_OK(q);
    ASSERT_EQ(q->status, 200) << "request " << i;
    EXPECT_EQ(q->header("x-request-target").value_or(""), "/q" + std::to_string(i));
  }

  // One keep-alive connection at a time, a handful in all (a worker that has
  // no more waiters gives the slot to the other worker's).
  EXPECT_EQ((*up)->peakConnections(), 1u) << "two upstream connections at once despite maxConnections: 1";
  EXPECT_LE((*up)->connectionsAccepted(), 4u) << "queued requests opened connections of their own";

  // Each request went out as soon as the previous answer was in: the gap
  // between two arrivals on the same connection is the answer's round trip
  // through the daemon plus the next dispatch.
  std::vector<RecordedRequest> seen = (*up)->requests();
  ASSERT_EQ(seen.size(), size_t(kQueued) + 1);
  std::vector<double> gapsUs;
  for (size_t i = 2; i < seen.size(); ++i) {
    if (seen[i].connection != seen[i - 1].connection) continue;  // the other worker's first request
    gapsUs.push_back(
        std::chrono::duration<double, std::micro>(seen[i].receivedAt - seen[i - 1].receivedAt).count());
  }
  ASSERT_GE(gapsUs.size(), size_t(kQueued) - 4);
  std::sort(gapsUs.begin(), gapsUs.end());
  const double median = gapsUs[gapsUs.size() / 2];
  const double p99 = gapsUs[gapsUs.size() * 99 / 100];
  RecordProperty("dispatch_gap_median_us", int(median));
  RecordProperty("dispatch_gap_p99_us", int(p99));
  std::printf("[ pool     ] %d queued requests: dispatch gap median %.0f us, p99 %.0f us, max %.0f us; "
              "%zu upstream connection(s)\n",
              kQueued, median, p99, gapsUs.back(), (*up)->connectionsAccepted());
  EXPECT_LT(median, 1000.0);
  EXPECT_LT(p99, 1000.0) << "a queued request waited for more than a millisecond after the connection freed";
}

// A mirror honours its cluster's connectTimeout like the primary: to an
// endpoint whose listener never accepts (backlog full, SYNs dropped) it
// gives up after 150 ms, not after the 10 s default.
TEST(ConnPool, AMirrorToASilentHostGivesUpAtItsConnectTimeout) {
  SilentListener silent;
  auto up = RecordingUpstream::start("primary");
  ASSERT_OK(up);
  TempDir tmp;
  Mesh mesh(tmp);
  mesh.setVar("PRIMARY_PORT", std::to_string((*up)->port()));
  mesh.setVar("SILENT_PORT", std::to_string(silent.port()));
  auto cfg = renderTemplate(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app, namespace: default}
spec:
  hosts: [app.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${PRIMARY_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: silent, namespace: default}
spec:
  hosts: [silent.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${SILENT_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: silent, namespace: default}
spec:
  host: silent
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 150ms}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app]
  http:
  - route: [{destination: {host: app}}]
    mirror: {host: silent}
    mirrorPercentage: {value: 100}
)",
                            mesh.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh.writeConfig("mirror.yaml", *cfg));
  ASSERT_OK(mesh.startDaemon(1));
  auto r = mesh.get("app:9080", "/mirrored");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  const auto sent = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return mesh.stat("shadow_rq_failed") == 1; }, 2000ms))
      << "the mirror did not give up; shadow_rq_failed " << mesh.stat("shadow_rq_failed");
  EXPECT_LT(msSince(sent), 1500) << "the mirror waited far past its 150 ms connectTimeout";
}

}  // namespace
}  // namespace sluice::itest::proxy
