// sluice-kube-sync against a stand-in API server (fake_apiserver.py) that
// replays recorded lists and watch streams: what it writes into the config
// directory, what it asks the server and when (list once, watch from the
// list's or the last bookmark's resourceVersion, list again only after 410
// Gone), and that sluiced routes over the result.
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <thread>

#include "../common/test_pki.h"
#include "config/kube_registry.h"
#include "config/loader.h"
#include "mesh.h"

namespace sluice::itest {
namespace {

using nlohmann::json;

json service(const std::string& name, const std::string& ip, const std::string& rv) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"resourceVersion", rv},
            {"uid", "u-" + name},
            {"managedFields", json::array({{{"manager", "kubectl"}}})},
            {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", "{\"big\": true}"}}}}},
          {"spec", {{"clusterIP", ip}, {"ports", json::array({{{"name", "http"}, {"port", 9080}}})}}},
          {"status", {{"loadBalancer", json::object()}}}};
}

json slice(const std::string& name, const std::string& pod, const std::string& ip, const std::string& rv) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"resourceVersion", rv},
            {"labels", {{"kubernetes.io/service-name", "reviews"}}}}},
          {"addressType", "IPv4"},
          {"ports", json::array({{{"name", "http"}, {"port", 9080}, {"protocol", "TCP"}}})},
          {"endpoints", json::array({{{"addresses", json::array({ip})},
                                      {"conditions", {{"ready", true}}},
                                      {"targetRef", {{"kind", "Pod"}, {"name", pod}, {"namespace", "default"}}}}})}};
}

json pod(const std::string& name, const std::string& version, const std::string& ip) {
  return {{"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"app", "reviews"}, {"version", version}}}}},
          {"spec", {{"nodeName", "node-a"}, {"containers", json::array({{{"name", "app"}, {"image", "x"}}})}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}, {"podIPs", json::array({{{"ip", ip}}})}}}};
}

json list(const std::string& kind, const std::string& rv, json items, const std::string& cont = "") {
  json meta = {{"resourceVersion", rv}};
  if (!cont.empty()) meta["continue"] = cont;
  // As the API returns them: the items of a typed list name no kind.
  for (json& i : items) {
    i.erase("apiVersion");
    i.erase("kind");
  }
  return {{"apiVersion", "v1"}, {"kind", kind}, {"metadata", meta}, {"items", items}};
}

json event(const std::string& type, json object) { return {{"type", type}, {"object", std::move(object)}}; }

json bookmark(const std::string& kind, const std::string& rv) {
  return event("BOOKMARK", {{"kind", kind}, {"metadata", {{"resourceVersion", rv}}}});
}

const std::string kServices = "/api/v1/services";
const std::string kSlices = "/apis/discovery.k8s.io/v1/endpointslices";
const std::string kPods = "/api/v1/pods";
const std::string kVirtualServices = "/apis/networking.istio.io/v1/virtualservices";

json scenario() {
  json s;
  // Services: list, then a watch that changes one, deletes one, bookmarks
  // and ends (a server timeout): the next watch resumes from the bookmark.
  s[kServices]["list"] = json::array(
      {list("ServiceList", "100", json::array({service("reviews", "127.10.7.1", "90"), service("gone", "127.10.7.2", "91")}))});
  s[kServices]["watch"] = json::array(
      {{{"events", json::array({event("MODIFIED", service("reviews", "127.10.7.3", "101")),
                                event("DELETED", service("gone", "127.10.7.2", "102")), bookmark("Service", "150")})},
        {"then", "close"}},
       {{"events", json::array()}, {"then", "hold"}}});
  // EndpointSlices: a watch adds a slice, then says 410 Gone; the list that
  // follows no longer has the first slice, which must go.
  s[kSlices]["list"] = json::array({list("EndpointSliceList", "200", json::array({slice("reviews-a", "p1", "127.18.7.1", "190")})),
                                    list("EndpointSliceList", "300", json::array({slice("reviews-b", "p2", "127.18.7.2", "250")}))});
  s[kSlices]["watch"] = json::array(
      {{{"events", json::array({event("ADDED", slice("reviews-b", "p2", "127.18.7.2", "201")),
                                event("ERROR", {{"kind", "Status"}, {"code", 410}, {"reason", "Expired"},
                                                {"message", "too old resource version: 200 (250)"}})})},
        {"then", "hold"}},
       {{"events", json::array()}, {"then", "hold"}}});
  // Pods: two pages.
  s[kPods]["list"] = json::array({list("PodList", "400", json::array({pod("p1", "v1", "127.18.7.1")}), "page2")});
  s[kPods]["pages"]["page2"] = list("PodList", "400", json::array({pod("p2", "v2", "127.18.7.2")}));
  s[kPods]["watch"] = json::array({{{"events", json::array()}, {"then", "hold"}}});
  json vs = {{"metadata", {{"name", "reviews"}, {"namespace", "default"}}},
             {"spec",
              {{"hosts", json::array({"reviews"})},
               {"http", json::array({{{"route", json::array({{{"destination", {{"host", "reviews"}}}}})}}})}}}};
  s[kVirtualServices]["list"] = json::array({list("VirtualServiceList", "500", json::array({vs}))});
  s[kVirtualServices]["watch"] = json::array({{{"events", json::array()}, {"then", "hold"}}});
  // Every other kind: not served (404), like a cluster without those CRDs.
  return s;
}

class KubeSync : public ::testing::Test {
 protected:
  // Starts the stand-in server (with `serverArgs`, e.g. TLS), then the sync
  // against it at `scheme`.
  void start(const json& sc, const std::vector<std::string>& serverArgs = {},
             const std::vector<std::string>& syncArgs = {}, const std::string& scheme = "http") {
    ASSERT_TRUE(writeText(tmp_.path() / "scenario.json", sc.dump()));
    std::vector<std::string> argv = {"/usr/bin/python3", (repoRoot() / "tests/integration/fake_apiserver.py").string(),
                                     "--scenario", (tmp_.path() / "scenario.json").string(), "--log", log_.string()};
    argv.insert(argv.end(), serverArgs.begin(), serverArgs.end());
    auto server = Process::start(argv, tmp_.path() / "apiserver.log");
    ASSERT_TRUE(server) << server.error();
    server_ = std::move(*server);
    ASSERT_TRUE(server_.waitForLog("listening on ", 10000ms)) << server_.logText();
    std::smatch m;
    const std::string text = server_.logText();
    ASSERT_TRUE(std::regex_search(text, m, std::regex("listening on (\\d+)")));
    port_ = m[1].str();
    std::vector<std::string> sargv = {binaryPath("sluice-kube-sync").string(), "--api-server",
                                      scheme + "://127.0.0.1:" + port_, "--out", out_.string(), "--quiet-ms", "20"};
    sargv.insert(sargv.end(), syncArgs.begin(), syncArgs.end());
    auto sync = Process::start(sargv, tmp_.path() / "sync.log");
    ASSERT_TRUE(sync) << sync.error();
    sync_ = std::move(*sync);
  }
  static bool writeText(const fs::path& p, const std::string& text) { return writeFile(p, text).has_value(); }
  bool exists(const std::string& rel) { return fs::exists(out_ / rel); }
  // Polls until `done` holds (10 s at most).
  bool eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 200; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return done();
  }
  std::vector<std::string> requests(const std::string& path) {
    std::vector<std::string> out;
    std::string text = readFile(log_).value_or("");
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      std::string line = text.substr(start, nl - start);
      if (line.starts_with(path + "?")) out.push_back(line);
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    return out;
  }
  std::string out() { return "\nsync log:\n" + sync_.logText() + "\napiserver log:\n" + server_.logText(); }

  TempDir tmp_;
  fs::path out_ = tmp_.path() / "config";
  fs::path log_ = tmp_.path() / "requests.log";
  Process server_, sync_;
  std::string port_;  // the stand-in server's
};

TEST_F(KubeSync, MirrorsListsAndWatchesResumesFromBookmarksAndRelistsOnGone) {
  ASSERT_NO_FATAL_FAILURE(start(scenario()));
  ASSERT_TRUE(eventually([&] {
    return exists("services/default/reviews.json") && !exists("services/default/gone.json") &&
           exists("endpointslices/default/reviews-b.json") && !exists("endpointslices/default/reviews-a.json") &&
           exists("pods/default/p1.json") && exists("pods/default/p2.json") &&
           exists("virtualservices/default/reviews.json") && requests(kServices).size() >= 3 &&
           requests(kSlices).size() >= 4;
  })) << out();

  // Services: one list; the watch from the list's version; after the server
  // ended it, the next from the bookmark's, with no list in between.
  auto svc = requests(kServices);
  ASSERT_GE(svc.size(), 3u) << out();
  EXPECT_EQ(svc[0].find("watch=1"), std::string::npos) << svc[0];
  EXPECT_NE(svc[1].find("watch=1"), std::string::npos) << svc[1];
  EXPECT_NE(svc[1].find("resourceVersion=100"), std::string::npos) << svc[1];
  EXPECT_NE(svc[1].find("allowWatchBookmarks=true"), std::string::npos) << svc[1];
  EXPECT_NE(svc[2].find("resourceVersion=150"), std::string::npos) << svc[2];
  for (size_t i = 1; i < svc.size(); ++i) EXPECT_NE(svc[i].find("watch=1"), std::string::npos) << svc[i];
  // EndpointSlices: list, watch (410), list again, watch from the new list.
  auto sl = requests(kSlices);
  ASSERT_GE(sl.size(), 4u) << out();
  EXPECT_EQ(sl[2].find("watch=1"), std::string::npos) << sl[2];
  EXPECT_NE(sl[3].find("resourceVersion=300"), std::string::npos) << sl[3];
  // Pods: both pages, finished pods filtered out by the server.
  auto pods = requests(kPods);
  ASSERT_GE(pods.size(), 2u) << out();
  EXPECT_NE(pods[0].find("fieldSelector=status.phase%21%3DSucceeded"), std::string::npos) << pods[0];
  EXPECT_NE(pods[1].find("continue=page2"), std::string::npos) << pods[1];

  // The files are what sluiced reads, trimmed: no managedFields, no
  // last-applied copy, no container specs.
  auto reviews = readFile(out_ / "services/default/reviews.json");
  ASSERT_TRUE(reviews);
  EXPECT_NE(reviews->find("127.10.7.3"), std::string::npos) << *reviews;  // the MODIFIED version
  EXPECT_EQ(reviews->find("managedFields"), std::string::npos) << *reviews;
  EXPECT_EQ(reviews->find("last-applied"), std::string::npos) << *reviews;
  auto p1 = readFile(out_ / "pods/default/p1.json");
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->find("containers"), std::string::npos) << *p1;
  EXPECT_NE(p1->find("\"kind\": \"Pod\""), std::string::npos) << *p1;

  auto loaded = config::loadDirectory(out_.string());
  ASSERT_TRUE(loaded.has_value()) << loaded.error()[0].str();
  EXPECT_EQ(loaded->resources.kubeServices.size(), 1u);
  EXPECT_EQ(loaded->resources.endpointSlices.size(), 1u);
  EXPECT_EQ(loaded->resources.pods.size(), 2u);
  EXPECT_EQ(loaded->resources.virtualServices.size(), 1u);
  std::vector<std::string> warnings;
  auto services = config::kubernetesServices(loaded->resources, warnings);
  ASSERT_EQ(services.size(), 1u);
  ASSERT_EQ(services[0].endpoints.size(), 1u);
  EXPECT_EQ(services[0].endpoints[0].address, "127.18.7.2");
  EXPECT_EQ(services[0].endpoints[0].labels.at("version"), "v2");

  // Kinds the server does not serve are said once, not retried in a loop.
  const std::string log = sync_.logText();
  EXPECT_NE(log.find("envoyfilters: not served by this API server"), std::string::npos) << out();
  EXPECT_LE(requests("/apis/networking.istio.io/v1alpha3/envoyfilters").size(), 1u) << out();

  // SIGTERM: a prompt, clean exit.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(sync_.stop(5000ms), 0) << out();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

// In-cluster shape: https with the service account's CA and token; a server
// whose certificate the CA did not sign is refused, and nothing is written.
TEST_F(KubeSync, HttpsWithTokenAndCertificateCheck) {
  using sluice::testing::CertOptions;
  using sluice::testing::TestCert;
  TestCert ca(CertOptions{.commonName = "cluster-ca", .ca = true});
  TestCert leaf(CertOptions{.commonName = "kube-apiserver", .subjectAltNames = {"IP:127.0.0.1"}}, &ca);
  TestCert otherCa(CertOptions{.commonName = "other-ca", .ca = true});
  leaf.write(tmp_.path() / "server");
  TestCert::writeFile(tmp_.path() / "ca.crt", ca.certPem());
  TestCert::writeFile(tmp_.path() / "other-ca.crt", otherCa.certPem());
  TestCert::writeFile(tmp_.path() / "token", "s3cret-token\n");

  json sc;
  sc[kServices]["list"] = json::array({list("ServiceList", "100", json::array({service("reviews", "127.10.7.1", "90")}))});
  sc[kServices]["watch"] = json::array({{{"events", json::array()}, {"then", "hold"}}});
  ASSERT_NO_FATAL_FAILURE(start(sc,
                                {"--token", "s3cret-token", "--cert", (tmp_.path() / "server/tls.crt").string(), "--key",
                                 (tmp_.path() / "server/tls.key").string()},
                                {"--kinds", "services", "--ca-file", (tmp_.path() / "ca.crt").string(), "--token-file",
                                 (tmp_.path() / "token").string()},
                                "https"));
  ASSERT_TRUE(eventually([&] { return exists("services/default/reviews.json"); })) << out();
  EXPECT_EQ(sync_.stop(5000ms), 0) << out();

  // The wrong CA: the handshake fails, the reason is logged, nothing lands.
  fs::remove_all(out_);
  std::vector<std::string> sargv = {binaryPath("sluice-kube-sync").string(),
                                    "--api-server",
                                    "https://127.0.0.1:" + port_,
                                    "--out",
                                    out_.string(),
                                    "--kinds",
                                    "services",
                                    "--ca-file",
                                    (tmp_.path() / "other-ca.crt").string(),
                                    "--token-file",
                                    (tmp_.path() / "token").string()};
  auto bad = Process::start(sargv, tmp_.path() / "sync-bad.log");
  ASSERT_TRUE(bad) << bad.error();
  EXPECT_TRUE(bad->waitForLog("certificate not trusted", 10000ms)) << bad->logText();
  EXPECT_FALSE(exists("services/default/reviews.json"));
  EXPECT_EQ(bad->stop(5000ms), 0);
}

// The whole path: API objects -> sync -> files -> sluiced routing to real
// upstreams; then a burst of watch events becomes one reload.
TEST_F(KubeSync, SluicedRoutesOverWhatTheSyncWrites) {
  TempDir meshDir;
  Mesh mesh(meshDir);
  const std::string octet = std::to_string(101 + ::getpid() % 150);
  const std::string v1 = "127.18." + octet + ".1", v2 = "127.18." + octet + ".2";
  ASSERT_OK(mesh.startUpstreamsAt({{"reviews-v1", v1 + ":9080"}, {"reviews-v2", v2 + ":9080"}}));
  out_ = mesh.configDir() / "kube";

  json sc;
  sc[kServices]["list"] = json::array({list("ServiceList", "100", json::array({service("reviews", "127.10." + octet + ".1", "90")}))});
  sc[kServices]["watch"] = json::array({{{"events", json::array()}, {"then", "hold"}}});
  sc[kSlices]["list"] = json::array({list("EndpointSliceList", "200", json::array({slice("reviews-a", "p1", v1, "190")}))});
  // 30 events in a burst: the slice flips between the two pods, ending on v2.
  json burst = json::array();
  for (int i = 0; i < 30; ++i) {
    const bool last = i == 29;
    burst.push_back(event("MODIFIED", slice("reviews-a", last || i % 2 ? "p2" : "p1", last || i % 2 ? v2 : v1,
                                           std::to_string(300 + i))));
  }
  sc[kSlices]["watch"] = json::array({{{"events", burst}, {"then", "hold"}}});
  sc[kPods]["list"] = json::array({list("PodList", "400", json::array({pod("p1", "v1", v1), pod("p2", "v2", v2)}))});
  sc[kPods]["watch"] = json::array({{{"events", json::array()}, {"then", "hold"}}});

  // sluiced first, on an empty directory, as when both containers start.
  ASSERT_OK(mesh.startDaemon());
  const int64_t before = mesh.configVersion();
  ASSERT_NO_FATAL_FAILURE(start(sc, {}, {"--kinds", "services,endpointslices,pods"}));
  ASSERT_TRUE(eventually([&] { return mesh.servedBy("reviews:9080") == "reviews-v2"; }))
      << mesh.servedBy("reviews:9080") << out() << mesh.logs();
  // The list (3 kinds) and the 30-event burst: a handful of reloads, not 30.
  std::this_thread::sleep_for(500ms);
  const int64_t reloads = mesh.configVersion() - before;
  printf("sluiced reloads for 3 lists + a 30-event burst: %ld\n", static_cast<long>(reloads));
  // Room for the three lists landing apart on a loaded machine; 30 would be
  // one per event.
  EXPECT_LE(reloads, 6) << out();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(mesh.servedBy("reviews:9080"), "reviews-v2");
}

}  // namespace
}  // namespace sluice::itest
