// Kubernetes as the service registry: Istio's bookinfo VirtualServices and
// DestinationRules, as written, routed by a real sluiced over the Services,
// EndpointSlices and Pods of configs/kubernetes/bookinfo, to real upstreams
// listening at the fixture's pod addresses (127.18.100.x:9080, moved to a
// subnet of this run's own so that two runs never share a listener: the
// upstreams bind with SO_REUSEPORT). And an EndpointSlice change applied
// under load.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "mesh.h"

namespace sluice::itest {
namespace {

const std::string kReviews = "reviews:9080";

// This run's third octet for the fixture's 127.18.100.x pods and
// 127.10.100.x cluster IPs.
const std::string kOctet = std::to_string(101 + ::getpid() % 150);
std::string pod(int last) { return "127.18." + kOctet + "." + std::to_string(last); }

// The fixture's ready pods; .44 (reviews-v3's second replica) is not ready,
// and nothing listens there: a request routed to it would fail.
std::vector<std::pair<std::string, std::string>> pods() {
  return {{"productpage-v1", pod(11) + ":9080"}, {"details-v1", pod(21) + ":9080"},
          {"ratings-v1", pod(31) + ":9080"},     {"reviews-v1", pod(41) + ":9080"},
          {"reviews-v2", pod(42) + ":9080"},     {"reviews-v3", pod(43) + ":9080"}};
}

std::string replaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

std::string repoText(const std::string& rel) {
  auto t = readFile(repoRoot() / rel);
  EXPECT_TRUE(t.has_value()) << rel << ": " << (t ? "" : t.error());
  return replaceAll(replaceAll(t.value_or(""), "127.18.100.", "127.18." + kOctet + "."), "127.10.100.",
                    "127.10." + kOctet + ".");
}

std::string sample(const std::string& file) { return repoText("tests/data/istio_bookinfo/" + file); }

class Bookinfo : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(mesh_.startUpstreamsAt(pods()));
    for (const char* f : {"services.yaml", "endpointslices.yaml", "pods.json"})
      ASSERT_OK(mesh_.writeConfig(f, repoText(std::string("configs/kubernetes/bookinfo/") + f)));
    ASSERT_OK(mesh_.writeConfig("destination-rule-all.yaml", sample("destination-rule-all.yaml")));
    ASSERT_OK(mesh_.writeConfig("routing.yaml", sample("virtual-service-all-v1.yaml")));
    ASSERT_OK(mesh_.startDaemon());
  }
  // How many of `n` requests each upstream served ("status NNN"/"error: ..."
  // for the others).
  std::map<std::string, int> spread(int n, std::vector<Header> headers = {}) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) out[mesh_.servedBy(kReviews, "/reviews/0", headers)]++;
    return out;
  }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(Bookinfo, TheTaskPagesRoutingAsWritten) {
  // virtual-service-all-v1.yaml: every service to its v1 pods.
  for (const char* host : {"productpage:9080", "details:9080", "ratings:9080", "reviews:9080"}) {
    const std::string want = std::string(host).substr(0, std::string(host).find(':')) + "-v1";
    for (int i = 0; i < 10; ++i) ASSERT_EQ(mesh_.servedBy(host), want) << host << out();
  }
  // The cluster IP and the FQDN name the same service.
  EXPECT_EQ(mesh_.servedBy("127.10." + kOctet + ".4:9080"), "reviews-v1");
  EXPECT_EQ(mesh_.servedBy("reviews.default.svc.cluster.local:9080"), "reviews-v1");

  // virtual-service-reviews-50-v3.yaml: half to v1, half to v3 (the ready
  // v3 pod only). 400 requests: each side 200 +- 50 is over 5 sigma.
  ASSERT_OK(mesh_.applyConfig("routing.yaml", sample("virtual-service-reviews-50-v3.yaml")));
  auto s = spread(400);
  EXPECT_EQ(s["reviews-v1"] + s["reviews-v3"], 400) << ::testing::PrintToString(s) << out();
  EXPECT_GE(s["reviews-v1"], 150) << ::testing::PrintToString(s);
  EXPECT_GE(s["reviews-v3"], 150) << ::testing::PrintToString(s);

  // virtual-service-reviews-jason-v2-v3.yaml: jason sees v2, everyone else v3.
  ASSERT_OK(mesh_.applyConfig("routing.yaml", sample("virtual-service-reviews-jason-v2-v3.yaml")));
  EXPECT_EQ(spread(50, {{"end-user", "jason"}}), (std::map<std::string, int>{{"reviews-v2", 50}})) << out();
  EXPECT_EQ(spread(50, {{"end-user", "mallory"}}), (std::map<std::string, int>{{"reviews-v3", 50}})) << out();
  EXPECT_EQ(spread(50), (std::map<std::string, int>{{"reviews-v3", 50}})) << out();

  // virtual-service-reviews-80-20.yaml: 500 requests, v2 100 +- 40 (> 4 sigma).
  ASSERT_OK(mesh_.applyConfig("routing.yaml", sample("virtual-service-reviews-80-20.yaml")));
  s = spread(500);
  EXPECT_EQ(s["reviews-v1"] + s["reviews-v2"], 500) << ::testing::PrintToString(s) << out();
  EXPECT_GE(s["reviews-v2"], 60) << ::testing::PrintToString(s);
  EXPECT_LE(s["reviews-v2"], 140) << ::testing::PrintToString(s);

  // /config_dump shows what the registry built.
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  const auto& ks = (*dump)["resources"]["kubernetes_services"];
  ASSERT_EQ(ks.size(), 4u) << ks.dump();
  bool sawReviews = false;
  for (const auto& svc : ks) {
    if (svc["hosts"][0] != "reviews.default.svc.cluster.local") continue;
    sawReviews = true;
    EXPECT_EQ(svc["addresses"][0], "127.10." + kOctet + ".4");
    EXPECT_EQ(svc["endpoints"].size(), 3u) << svc.dump();
  }
  EXPECT_TRUE(sawReviews) << ks.dump();
}

// One reviews EndpointSlice with the given pods (name, address).
std::string reviewsSlice(const std::vector<std::pair<std::string, std::string>>& pods) {
  std::string y = R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  labels: {kubernetes.io/service-name: reviews}
  name: reviews-2vbn4
  namespace: default
addressType: IPv4
ports: [{name: http, port: 9080, protocol: TCP}]
endpoints:
)";
  for (const auto& [pod, addr] : pods)
    y += "- {addresses: [" + addr + "], conditions: {ready: true}, targetRef: {kind: Pod, name: " + pod + "}}\n";
  return y;
}

// A pod added to, then removed from, the reviews EndpointSlice while
// requests flow without pause: the change is live soon after the file lands
// and no request fails (a removed pod still answers while it terminates, as
// in Kubernetes).
TEST_F(Bookinfo, EndpointSliceChangesApplyUnderLoadWithoutFailures) {
  // reviews without a VirtualService: its service-wide cluster, every pod.
  ASSERT_OK(mesh_.applyConfig("routing.yaml", "# no VirtualService\n"));
  const std::string v1 = "reviews-v1-5896f547f5-prd8x", v2 = "reviews-v2-5d99885bc9-lx5vt";
  // The fixture's two reviews slices become one with v1 alone.
  ASSERT_OK(mesh_.writeConfig("endpointslices.yaml", ""));
  ASSERT_OK(mesh_.applyConfig("reviews-slice.yaml", reviewsSlice({{v1, pod(41)}})));
  ASSERT_EQ(mesh_.servedBy(kReviews), "reviews-v1") << out();

  struct Seen {
    std::chrono::steady_clock::time_point at;
    std::string by;
  };
  std::atomic<bool> stop{false};
  std::vector<Seen> seen;
  std::vector<std::string> failures;
  std::thread load([&] {
    // Joined before any assertion below can return from the test.
    auto conn = HttpConnection::connect(mesh_.outboundPort());
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      if (!conn || !conn->isOpen()) conn = HttpConnection::connect(mesh_.outboundPort());
      if (!conn) {
        failures.push_back("connect: " + conn.error());
        std::this_thread::sleep_for(5ms);
        continue;
      }
      auto r = conn->send({.target = "/", .headers = {{"Host", kReviews}}});
      if (!r) failures.push_back(r.error());
      else if (r->status != 200) failures.push_back(r->summary());
      else seen.push_back({std::chrono::steady_clock::now(), upstreamName(*r)});
    }
  });
  std::this_thread::sleep_for(300ms);
  const auto added = std::chrono::steady_clock::now();
  auto wroteAdd = mesh_.writeConfig("reviews-slice.yaml", reviewsSlice({{v1, pod(41)}, {v2, pod(42)}}));
  std::this_thread::sleep_for(1500ms);
  const auto removed = std::chrono::steady_clock::now();
  auto wroteRemove = mesh_.writeConfig("reviews-slice.yaml", reviewsSlice({{v2, pod(42)}}));
  std::this_thread::sleep_for(1500ms);
  stop = true;
  load.join();
  ASSERT_OK(wroteAdd);
  ASSERT_OK(wroteRemove);

  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << (failures.empty() ? "" : failures[0])
                                << out();
  int64_t v2After = -1, lastV1 = -1;
  size_t afterRemoval = 0;
  for (const Seen& s : seen) {
    if (s.by == "reviews-v2" && v2After < 0 && s.at > added)
      v2After = std::chrono::duration_cast<std::chrono::milliseconds>(s.at - added).count();
    if (s.at > removed) {
      ++afterRemoval;
      if (s.by == "reviews-v1") lastV1 = std::chrono::duration_cast<std::chrono::milliseconds>(s.at - removed).count();
    }
  }
  printf("EndpointSlice change live after: added pod %ld ms, removed pod %ld ms (%zu requests)\n",
         static_cast<long>(v2After), static_cast<long>(lastV1), seen.size());
  ASSERT_GE(v2After, 0) << "the added pod never served" << out();
  // The watcher waits 100 ms for quiet before reloading (about 100 ms is
  // what an idle machine shows; the target is 200 ms): the bound leaves
  // room for a loaded 2-core CI machine and ASan.
  EXPECT_LT(v2After, 1000) << out();
  EXPECT_LT(lastV1, 1000) << out();
  EXPECT_GT(afterRemoval, 0u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().by, "reviews-v2");
}

}  // namespace
}  // namespace sluice::itest
