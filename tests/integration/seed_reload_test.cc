// Failure paths and live reconfiguration: dead endpoints, a bad config
// reload, and weights rewritten under load.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <thread>

#include "mesh.h"

namespace sluice::itest {
namespace {

const std::string kReviews = "reviews:9080";

std::string weightedVs(int v1, int v2) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata:\n"
         "  name: reviews\n"
         "spec:\n"
         "  hosts:\n"
         "  - reviews\n"
         "  http:\n"
         "  - route:\n"
         "    - destination:\n"
         "        host: reviews\n"
         "        subset: v1\n"
         "      weight: " + std::to_string(v1) + "\n"
         "    - destination:\n"
         "        host: reviews\n"
         "        subset: v2\n"
         "      weight: " + std::to_string(v2) + "\n";
}

std::string allToSubsetVs(const std::string& subset) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata:\n"
         "  name: reviews\n"
         "spec:\n"
         "  hosts:\n"
         "  - reviews\n"
         "  http:\n"
         "  - route:\n"
         "    - destination:\n"
         "        host: reviews\n"
         "        subset: " + subset + "\n";
}

// Polls `pred` every 20 ms until it holds or `timeout` passes.
template <typename Pred>
bool eventually(Pred pred, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

class Reload : public ::testing::Test {
 protected:
  void startReviews(const std::string& vsSeed) {
    ASSERT_OK(mesh_.startUpstreams({"reviews-v1", "reviews-v2", "reviews-v3"}));
    ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
    ASSERT_OK(mesh_.addSeed("defining-subsets.yaml"));
    ASSERT_OK(mesh_.addSeed(vsSeed));
  }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(Reload, DeadEndpointsGive503Quickly) {
  ASSERT_NO_FATAL_FAILURE(startReviews("basic-http-routing.yaml"));
  // Two endpoints on ports nothing listens on.
  mesh_.setVar("DEAD1_PORT", std::to_string(freePort()));
  mesh_.setVar("DEAD2_PORT", std::to_string(freePort()));
  auto ratings = renderTemplate(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: default
spec:
  hosts:
  - ratings.default.svc.cluster.local
  addresses:
  - 127.10.0.20
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${DEAD1_PORT}
  - address: 127.0.0.1
    ports:
      http: ${DEAD2_PORT}
)",
                                mesh_.vars());
  ASSERT_OK(ratings);
  ASSERT_OK(mesh_.writeConfig("ratings.yaml", *ratings));
  ASSERT_OK(mesh_.startDaemon());

  for (int i = 0; i < 5; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto r = mesh_.get("ratings:9080", "/ratings/1");
    auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start);
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 503) << r->summary();
    EXPECT_LT(took, 1000ms) << "503 took " << took.count() << " ms";
  }
  auto cr = curl({"-H", "Host: ratings", "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + "/"});
  EXPECT_EQ(cr.exitCode, 0) << cr.stderrText;
  EXPECT_EQ(cr.status, 503);
  // A dead service does not disturb a live one.
  EXPECT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2") << mesh_.logs();
}

TEST_F(Reload, InvalidConfigKeepsServingTheLastGoodOne) {
  ASSERT_NO_FATAL_FAILURE(startReviews("basic-http-routing.yaml"));
  ASSERT_OK(mesh_.startDaemon());
  ASSERT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2") << mesh_.logs();
  const int64_t v0 = mesh_.configVersion();
  ASSERT_GE(v0, 0) << "no integer \"version\" in /config_dump";
  EXPECT_EQ(mesh_.lastError(), "");

  // Would send everything to v1, but its regex does not compile. Applying
  // the valid rule alone would show up as v1 traffic.
  ASSERT_OK(mesh_.writeConfig("basic-http-routing.yaml", R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        x-user-group:
          regex: "(unclosed"
    route:
    - destination:
        host: reviews
        subset: v3
  - route:
    - destination:
        host: reviews
        subset: v1
)"));
  ASSERT_TRUE(eventually([&] { return !mesh_.lastError().empty(); }, 3000ms))
      << "last_error never reported the bad file\n" << mesh_.logs();
  const std::string err = mesh_.lastError();
  EXPECT_NE(err.find("basic-http-routing.yaml"), std::string::npos) << "last_error lacks the file: " << err;
  EXPECT_EQ(mesh_.configVersion(), v0) << "a rejected config must not bump the version";
  ASSERT_TRUE(mesh_.daemon().running()) << mesh_.logs();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2") << "request " << i;
  }
  EXPECT_EQ(mesh_.counter("reviews-v1"), 0);

  // A plain YAML syntax error in a new file is rejected the same way.
  ASSERT_OK(mesh_.writeConfig("zz-broken.yaml", "kind: VirtualService\nspec: [unclosed\n"));
  ASSERT_TRUE(eventually([&] { return mesh_.lastError().find("zz-broken.yaml") != std::string::npos; }, 3000ms))
      << "last_error: " << mesh_.lastError();
  EXPECT_EQ(mesh_.configVersion(), v0);
  EXPECT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2");

  // Fixing both files is a successful reload: new version, error cleared.
  ASSERT_EQ(::unlink((mesh_.configDir() / "zz-broken.yaml").c_str()), 0);
  ASSERT_OK(mesh_.writeConfig("basic-http-routing.yaml", allToSubsetVs("v3")));
  ASSERT_TRUE(eventually([&] { return mesh_.configVersion() > v0; }, 3000ms)) << mesh_.logs();
  EXPECT_EQ(mesh_.lastError(), "");
  EXPECT_TRUE(eventually([&] { return mesh_.servedBy(kReviews, "/") == "reviews-v3"; }, 2000ms));
}

// Config isolation: the unit is the file. An invalid file keeps the version
// of it that last loaded (or stays out if none did) while every other file's
// changes apply; /config_dump and last_error name it.
TEST_F(Reload, AnInvalidFileDoesNotHoldBackTheOthers) {
  ASSERT_NO_FATAL_FAILURE(startReviews("basic-http-routing.yaml"));
  ASSERT_OK(mesh_.startDaemon());
  ASSERT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2") << mesh_.logs();
  const int64_t v0 = mesh_.configVersion();

  // A new file that never loaded stays out; the VirtualService's change in
  // its own file still applies.
  ASSERT_OK(mesh_.writeConfig("zz-broken.yaml", "kind: VirtualService\nspec: [unclosed\n"));
  ASSERT_TRUE(eventually([&] { return mesh_.lastError().find("zz-broken.yaml") != std::string::npos; }, 3000ms));
  ASSERT_OK(mesh_.writeConfig("basic-http-routing.yaml", allToSubsetVs("v3")));
  ASSERT_TRUE(eventually([&] { return mesh_.configVersion() > v0; }, 3000ms)) << mesh_.logs();
  EXPECT_TRUE(eventually([&] { return mesh_.servedBy(kReviews, "/") == "reviews-v3"; }, 2000ms));
  EXPECT_NE(mesh_.lastError().find("zz-broken.yaml"), std::string::npos) << mesh_.lastError();
  auto dump = mesh_.configDump();
  ASSERT_OK(dump);
  ASSERT_EQ((*dump)["rejected_files"].size(), 1u) << dump->dump();
  EXPECT_NE((*dump)["rejected_files"][0]["file"].get<std::string>().find("zz-broken.yaml"), std::string::npos);
  EXPECT_EQ((*dump)["rejected_files"][0]["serving"], "none");

  // The VirtualService's file turns invalid: its last good version (all to
  // v3) keeps serving, while a change in another file (weights through a
  // second VirtualService for another host) applies.
  const int64_t v1 = mesh_.configVersion();
  ASSERT_OK(mesh_.writeConfig("basic-http-routing.yaml", allToSubsetVs("v1") + "  bogus: field\n"));
  ASSERT_TRUE(eventually([&] { return mesh_.lastError().find("basic-http-routing.yaml") != std::string::npos; },
                         3000ms))
      << mesh_.lastError();
  EXPECT_EQ(mesh_.configVersion(), v1) << "nothing valid changed: no new version";
  ASSERT_OK(mesh_.writeConfig("other.yaml", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-tls-off
spec:
  host: reviews.other.svc.cluster.local
)"));
  ASSERT_TRUE(eventually([&] { return mesh_.configVersion() > v1; }, 3000ms)) << mesh_.logs();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v3") << "request " << i;
  EXPECT_EQ(mesh_.counter("reviews-v1"), 0);
  dump = mesh_.configDump();
  ASSERT_OK(dump);
  std::map<std::string, std::string> rejected;
  for (const auto& r : (*dump)["rejected_files"]) {
    rejected[fs::path(r["file"].get<std::string>()).filename().string()] = r["serving"].get<std::string>();
  }
  EXPECT_EQ(rejected["basic-http-routing.yaml"], "last_good") << dump->dump();
  EXPECT_EQ(rejected["zz-broken.yaml"], "none");

  // Fixed: everything applies, nothing is rejected.
  ASSERT_EQ(::unlink((mesh_.configDir() / "zz-broken.yaml").c_str()), 0);
  ASSERT_OK(mesh_.writeConfig("basic-http-routing.yaml", allToSubsetVs("v1")));
  ASSERT_TRUE(eventually([&] { return mesh_.servedBy(kReviews, "/") == "reviews-v1"; }, 3000ms));
  EXPECT_TRUE(eventually([&] { return mesh_.lastError().empty(); }, 2000ms)) << mesh_.lastError();
  dump = mesh_.configDump();
  ASSERT_OK(dump);
  EXPECT_TRUE((*dump)["rejected_files"].empty());
}

// Keep-alive clients hammer the proxy while the weights are rewritten 20
// times, 50 ms apart, by write-then-rename, then 5 more times each awaited.
// No request may fail, and the final weights (v1 0, v2 100) take effect.
TEST_F(Reload, WeightRewritesUnderLoadLoseNoRequest) {
  ASSERT_NO_FATAL_FAILURE(startReviews("weighted-routing.yaml"));
  ASSERT_OK(mesh_.startDaemon());
  const int64_t v0 = mesh_.configVersion();
  ASSERT_GE(v0, 0);

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, reconnects{0};
  std::mutex mu;
  std::vector<std::string> failures;
  auto client = [&](int id) {
    auto conn = HttpConnection::connect(mesh_.outboundPort(), 3000ms);
    while (!stop.load()) {
      if (!conn || !conn->isOpen()) {
        reconnects++;
        conn = HttpConnection::connect(mesh_.outboundPort(), 3000ms);
        if (!conn) {
          failed++;
          std::lock_guard l(mu);
          failures.push_back("client " + std::to_string(id) + " connect: " + conn.error());
          std::this_thread::sleep_for(10ms);
          continue;
        }
      }
      auto r = conn->send({.target = "/load", .headers = {{"Host", kReviews}}});
      if (r && r->status == 200) {
        ok++;
        continue;
      }
      failed++;
      std::lock_guard l(mu);
      if (failures.size() < 20) {
        failures.push_back("client " + std::to_string(id) + ": " + (r ? r->summary() : r.error()));
      }
    }
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) clients.emplace_back(client, i);

  std::this_thread::sleep_for(200ms);
  for (int i = 1; i <= 20; ++i) {
    auto w = mesh_.writeConfig("weighted-routing.yaml", weightedVs(100 - 5 * i, 5 * i));
    if (!w) ADD_FAILURE() << w.error();
    std::this_thread::sleep_for(50ms);
  }
  // The watcher may coalesce that burst into one or two reloads; make sure
  // several snapshot swaps really happen under load by waiting for each of
  // five more rewrites to be applied before the next.
  const int weights[] = {70, 20, 60, 10, 0};  // v1's share; the last one is final
  for (int v1 : weights) {
    const int64_t before = mesh_.configVersion();
    auto w = mesh_.writeConfig("weighted-routing.yaml", weightedVs(v1, 100 - v1));
    if (!w) ADD_FAILURE() << w.error();
    // Generous: with four clients and the daemon sharing two busy cores, a
    // reload once took over 3 s to show (CI); what this test guards is
    // that no request is lost while snapshots swap.
    EXPECT_TRUE(eventually([&] { return mesh_.configVersion() > before; }, 10000ms))
        << "rewrite to v1=" << v1 << " never applied (version " << before << ")";
  }
  // The last rewrite (v1 0 / v2 100) takes effect: 50 requests in a row to v2.
  const bool converged = eventually(
      [&] {
        for (int i = 0; i < 50; ++i) {
          if (mesh_.servedBy(kReviews, "/check") != "reviews-v2") return false;
        }
        return true;
      },
      3000ms);
  std::this_thread::sleep_for(200ms);
  stop = true;
  for (auto& t : clients) t.join();

  EXPECT_EQ(failed.load(), 0) << ::testing::PrintToString(failures) << "\n" << mesh_.logs();
  EXPECT_GT(ok.load(), 200) << "the load loop barely ran";
  EXPECT_TRUE(converged) << "final weights v1 0 / v2 100 not in effect; version " << mesh_.configVersion();
  EXPECT_GE(mesh_.configVersion(), v0 + 6);
  EXPECT_EQ(mesh_.lastError(), "");
  EXPECT_TRUE(mesh_.daemon().running());
  std::cerr << "[reload-under-load] ok=" << ok.load() << " failed=" << failed.load()
            << " reconnects=" << reconnects.load() << " version " << v0 << " -> " << mesh_.configVersion() << "\n";
}

// SIGTERM is a clean shutdown (exit 0), not a crash.
TEST_F(Reload, SigtermExitsCleanly) {
  ASSERT_NO_FATAL_FAILURE(startReviews("basic-http-routing.yaml"));
  ASSERT_OK(mesh_.startDaemon());
  ASSERT_EQ(mesh_.servedBy(kReviews, "/"), "reviews-v2");
  int status = mesh_.daemon().stop(5000ms);
  EXPECT_TRUE(WIFEXITED(status)) << "sluiced did not exit on SIGTERM within 5 s (status " << status << ")";
  if (WIFEXITED(status)) {
    EXPECT_EQ(WEXITSTATUS(status), 0) << mesh_.logs();
  }
}

}  // namespace
}  // namespace sluice::itest
