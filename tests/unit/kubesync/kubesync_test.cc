// sluice-kube-sync's parts without a server: the files the Mirror keeps
// (atomic, only what changed, removals, retries after a failed write, what a
// restart finds), the document an object becomes, API URLs and watch lines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../config/test_util.h"
#include "kubesync/api_client.h"
#include "kubesync/mirror.h"
#include "kubesync/reflector.h"

namespace sluice::kubesync {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

using config::testing::TempDir;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(KubeSyncMirror, WritesOnlyWhatChangedAndRemovesWhatWent) {
  TempDir d;
  Mirror m(d.path(), 0ms, 0ms);
  ASSERT_TRUE(m.scan());
  m.put("services/shop/a.json", "A1");
  m.put("services/shop/b.json", "B1");
  m.put("pods/shop/p.json", "P1");
  ASSERT_TRUE(m.flush());
  EXPECT_EQ(read(fs::path(d.path()) / "services/shop/a.json"), "A1");
  EXPECT_EQ(m.counters().written, 3u);
  // The same content again: nothing to write.
  m.put("services/shop/a.json", "A1");
  ASSERT_TRUE(m.flush());
  EXPECT_EQ(m.counters().written, 3u);
  // A later change of one file wins over an earlier one in the same batch.
  m.put("services/shop/a.json", "A2");
  m.put("services/shop/a.json", "A3");
  // A list that no longer has b: it goes; other kinds stay.
  m.replaceUnder("services", {{"services/shop/a.json", "A3"}});
  ASSERT_TRUE(m.flush());
  EXPECT_EQ(read(fs::path(d.path()) / "services/shop/a.json"), "A3");
  EXPECT_FALSE(fs::exists(fs::path(d.path()) / "services/shop/b.json"));
  EXPECT_TRUE(fs::exists(fs::path(d.path()) / "pods/shop/p.json"));
  EXPECT_EQ(m.counters().removed, 1u);
  // No temporary is left behind.
  EXPECT_FALSE(fs::exists(fs::path(d.path()) / "services/shop/.sluice-kube-sync.tmp"));
}

TEST(KubeSyncMirror, ARestartTakesInTheFilesAlreadyThere) {
  TempDir d;
  {
    Mirror m(d.path(), 0ms, 0ms);
    ASSERT_TRUE(m.scan());
    m.put("services/shop/a.json", "A1");
    m.put("services/shop/b.json", "B1");
    ASSERT_TRUE(m.flush());
  }
  // A temporary from a sync killed mid-write, and a ConfigMap's ..data folder.
  std::ofstream(fs::path(d.path()) / "services/shop/.sluice-kube-sync.tmp") << "half";
  fs::create_directories(fs::path(d.path()) / "..2026_12_08/x");
  std::ofstream(fs::path(d.path()) / "..2026_12_08/x/c.json") << "{}";
  Mirror m(d.path(), 0ms, 0ms);
  ASSERT_TRUE(m.scan());
  EXPECT_FALSE(fs::exists(fs::path(d.path()) / "services/shop/.sluice-kube-sync.tmp"));
  // Unchanged: not written again. Gone from the new list: removed.
  m.replaceUnder("services", {{"services/shop/a.json", "A1"}});
  ASSERT_TRUE(m.flush());
  EXPECT_EQ(m.counters().written, 0u);
  EXPECT_EQ(m.counters().removed, 1u);
  EXPECT_FALSE(fs::exists(fs::path(d.path()) / "services/shop/b.json"));
  EXPECT_TRUE(fs::exists(fs::path(d.path()) / "..2026_12_08/x/c.json"));
}

TEST(KubeSyncMirror, AFailedWriteIsTriedAgain) {
  TempDir d;
  Mirror m(d.path(), 0ms, 0ms);
  ASSERT_TRUE(m.scan());
  // A file where the kind's folder should be: the write cannot happen.
  std::ofstream(fs::path(d.path()) / "pods") << "in the way";
  m.put("pods/shop/p.json", "P1");
  EXPECT_FALSE(m.flush());
  EXPECT_EQ(m.counters().failures, 1u);
  fs::remove(fs::path(d.path()) / "pods");
  // Queued again: the next batch writes it, with no new put.
  EXPECT_TRUE(m.flush());
  EXPECT_EQ(read(fs::path(d.path()) / "pods/shop/p.json"), "P1");
  // And a removal of it is not lost either.
  m.remove("pods/shop/p.json");
  EXPECT_TRUE(m.flush());
  EXPECT_FALSE(fs::exists(fs::path(d.path()) / "pods/shop/p.json"));
}

TEST(KubeSyncMirror, TheWriterHoldsABurstUntilItPauses) {
  TempDir d;
  Mirror m(d.path(), 300ms, 5000ms);
  ASSERT_TRUE(m.scan());
  std::atomic<bool> stop{false};
  std::thread writer([&] { m.run(stop); });
  for (int i = 0; i < 20; ++i) {
    m.put("services/shop/s" + std::to_string(i) + ".json", "x");
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(900ms);
  stop = true;
  writer.join();
  EXPECT_EQ(m.counters().written, 20u);
  EXPECT_EQ(m.counters().batches, 1u);  // changes 5 ms apart, 300 ms quiet: one batch
}

Kind kindNamed(const std::string& dir) {
  for (const Kind& k : mirroredKinds("v1"))
    if (k.dir == dir) return k;
  ADD_FAILURE() << dir;
  return {};
}

TEST(KubeSyncRender, TrimsToWhatSluicedReads) {
  json pod = {{"metadata",
               {{"name", "p1"},
                {"namespace", "shop"},
                {"uid", "x"},
                {"labels", {{"app", "web"}}},
                {"annotations", {{"a", "b"}}},
                {"managedFields", json::array()}}},
              {"spec", {{"nodeName", "n1"}, {"containers", json::array({{{"name", "c"}}})}}},
              {"status", {{"phase", "Running"}, {"podIP", "127.18.0.1"}, {"conditions", json::array()}}}};
  auto f = render(kindNamed("pods"), pod);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->first, "pods/shop/p1.json");
  json out = json::parse(f->second);
  EXPECT_EQ(out, json::parse(R"({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p1", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "podIP": "127.18.0.1"}})"));

  json svc = {{"metadata",
               {{"name", "web"},
                {"namespace", "shop"},
                {"annotations",
                 {{"kubectl.kubernetes.io/last-applied-configuration", "{}"}, {"networking.istio.io/exportTo", "."}}}}},
              {"spec", {{"clusterIP", "127.10.0.9"}}},
              {"status", {{"loadBalancer", json::object()}}}};
  out = json::parse(render(kindNamed("services"), svc)->second);
  EXPECT_EQ(out["metadata"]["annotations"], json({{"networking.istio.io/exportTo", "."}}));
  EXPECT_FALSE(out.contains("status"));
  EXPECT_EQ(out["spec"]["clusterIP"], "127.10.0.9");

  // Names that would not make a safe file name are not written.
  for (const char* bad : {"../x", ".hidden", "", "A", "a/b"}) {
    json o = {{"metadata", {{"name", bad}, {"namespace", "shop"}}}};
    EXPECT_FALSE(render(kindNamed("services"), o)) << bad;
  }
  EXPECT_FALSE(render(kindNamed("services"), json{{"metadata", {{"name", std::string(251, 'a')}, {"namespace", "s"}}}}));
}

TEST(KubeSyncKinds, PathsForAllNamespacesOrOne) {
  EXPECT_EQ(kindNamed("services").path(""), "/api/v1/services");
  EXPECT_EQ(kindNamed("endpointslices").path("shop"), "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices");
  EXPECT_EQ(kindNamed("envoyfilters").path(""), "/apis/networking.istio.io/v1alpha3/envoyfilters");
  EXPECT_EQ(kindNamed("virtualservices").path(""), "/apis/networking.istio.io/v1/virtualservices");
}

TEST(KubeSyncApiServer, ParsesUrls) {
  auto a = ApiServer::parse("http://127.0.0.1:8001");
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->tls);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8001);
  auto b = ApiServer::parse("https://[fd00::1]:6443/");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->tls);
  EXPECT_EQ(b->host, "fd00::1");
  EXPECT_EQ(b->url(), "https://[fd00::1]:6443");
  auto c = ApiServer::parse("https://kubernetes.default.svc");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->port, 443);
  for (const char* bad : {"ftp://x", "http://", "http://h:0", "http://h:70000", "http://h/api", "h:80"})
    EXPECT_FALSE(ApiServer::parse(bad)) << bad;
  // https with no CA to check the server against is refused up front.
  ApiClient noCa(*c);
  EXPECT_NE(noCa.setupError().find("CA file"), std::string::npos);
}

TEST(KubeSyncLines, SplitsAcrossReadsAndBoundsALine) {
  LineSplitter s(16);
  std::vector<std::string> lines;
  auto on = [&](std::string_view l) { lines.emplace_back(l); };
  EXPECT_TRUE(s.feed("{\"a\":1}\n{\"b\"", on));
  EXPECT_TRUE(s.feed(":2}\n\n", on));
  EXPECT_EQ(lines, (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", ""}));
  EXPECT_FALSE(s.feed(std::string(40, 'x'), on));
}

}  // namespace
}  // namespace sluice::kubesync
