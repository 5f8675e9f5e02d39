// loadBalancer.warmupDurationSecs: an endpoint added to a running cluster
// starts with a small share of traffic that grows to its full share over the
// window; without warmup it takes its share at once.
#include <gtest/gtest.h>

#include <thread>

#include "mesh.h"

namespace sluice::itest {
namespace {

using namespace std::chrono_literals;

std::string config(bool withC, bool warmup) {
  std::string y = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pool}
spec:
  hosts: [pool.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${A_PORT}}}
  - {address: 127.0.0.1, ports: {http: ${B_PORT}}}
)";
  if (withC) y += "  - {address: 127.0.0.1, ports: {http: ${C_PORT}}}\n";
  y += R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool}
spec:
  host: pool
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN)";
  y += warmup ? ", warmupDurationSecs: 2s}\n" : "}\n";
  return y;
}

class Warmup : public ::testing::Test {
 protected:
  void start(bool warmup) {
    warmup_ = warmup;
    ASSERT_OK(mesh_.startUpstreams({"a", "b", "c"}));
    ASSERT_OK(write(false));
    ASSERT_OK(mesh_.startDaemon(1));
    for (int i = 0; i < 10; ++i) ASSERT_EQ(mesh_.get("pool:8080")->status, 200);
  }
  std::expected<void, std::string> write(bool withC) {
    auto text = renderTemplate(config(withC, warmup_), mesh_.vars());
    if (!text) return std::unexpected(text.error());
    return mesh_.writeConfig("pool.yaml", *text);
  }
  void addC() {
    auto text = renderTemplate(config(true, warmup_), mesh_.vars());
    ASSERT_TRUE(text) << text.error();
    ASSERT_OK(mesh_.applyConfig("pool.yaml", *text));
  }
  int64_t cShareOf(int n) {
    int64_t before = mesh_.counter("c");
    for (int i = 0; i < n; ++i) (void)mesh_.get("pool:8080");
    return mesh_.counter("c") - before;
  }
  TempDir tmp_;
  Mesh mesh_{tmp_};
  bool warmup_ = false;
};

TEST_F(Warmup, AddedEndpointRampsUpOverTheWindow) {
  ASSERT_NO_FATAL_FAILURE(start(true));
  ASSERT_NO_FATAL_FAILURE(addC());
  int64_t early = cShareOf(90);  // within ~0.3 s of 2 s: a few percent of 30
  EXPECT_LE(early, 15) << "a new endpoint got its full share at once";
  std::this_thread::sleep_for(2200ms);
  int64_t late = cShareOf(90);
  EXPECT_GE(late, 22) << "still held back after the window";
  EXPECT_GT(late, early);
}

TEST_F(Warmup, WithoutWarmupTheNewEndpointTakesItsShareAtOnce) {
  ASSERT_NO_FATAL_FAILURE(start(false));
  ASSERT_NO_FATAL_FAILURE(addC());
  EXPECT_GE(cShareOf(90), 25);
}

}  // namespace
}  // namespace sluice::itest
