// Checks the harness itself against sluice-upstream alone (no daemon): if
// these fail, the seed tests' verdicts about sluiced mean nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <yaml-cpp/yaml.h>

#include "harness.h"
#include "mesh.h"

namespace sluice::itest {
namespace {

class UpstreamOnly : public ::testing::Test {
 protected:
  void SetUp() override {
    mesh_ = std::make_unique<Mesh>(tmp_);
    ASSERT_OK(mesh_->startUpstreams({"alpha"}));
    port_ = mesh_->upstreamPort("alpha");
  }
  TempDir tmp_;
  std::unique_ptr<Mesh> mesh_;
  uint16_t port_ = 0;
};

TEST_F(UpstreamOnly, KeepAliveConnectionCarriesSeveralRequests) {
  auto conn = HttpConnection::connect(port_);
  ASSERT_OK(conn);
  for (int i = 1; i <= 3; ++i) {
    auto r = conn->send({.target = "/hello/" + std::to_string(i) + "?a=b",
                         .headers = {{"X-Test-Header", "Value" + std::to_string(i)}}});
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("X-UPSTREAM-NAME"), "alpha");  // case-insensitive lookup
    auto j = r->json();
    ASSERT_FALSE(j.is_discarded()) << r->body;
    EXPECT_EQ(j["name"], "alpha");
    EXPECT_EQ(j["method"], "GET");
    EXPECT_EQ(j["path"], "/hello/" + std::to_string(i));
    EXPECT_NE(j["query"].dump().find("a"), std::string::npos) << j["query"].dump();
    EXPECT_EQ(j["headers"]["x-test-header"], "Value" + std::to_string(i));
    EXPECT_EQ(j["request_number"], i);
    EXPECT_TRUE(conn->isOpen());
  }
  EXPECT_EQ(mesh_->counter("alpha"), 3);
  mesh_->resetCounters();
  EXPECT_EQ(mesh_->counter("alpha"), 0);
}

TEST_F(UpstreamOnly, PostBodyIsCounted) {
  std::string body(12345, 'x');
  auto r = httpRequest(port_, {.method = "POST", .target = "/upload", .body = body});
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->json()["body_bytes"], 12345);
  EXPECT_EQ(r->json()["method"], "POST");
}

TEST_F(UpstreamOnly, ChunkedResponsesAreReassembled) {
  auto conn = HttpConnection::connect(port_);
  ASSERT_OK(conn);
  auto r = conn->send({.target = "/c?chunked=1"});
  ASSERT_OK(r);
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  EXPECT_FALSE(r->json().is_discarded()) << r->body;
  EXPECT_EQ(r->json()["name"], "alpha");
  // The connection is still usable after a chunked body.
  auto again = conn->send({.target = "/after"});
  ASSERT_OK(again);
  EXPECT_EQ(again->json()["path"], "/after");
}

TEST_F(UpstreamOnly, StatusAndSizeControls) {
  auto r = httpRequest(port_, {.target = "/x?status=503"});
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 503);
  auto big = httpRequest(port_, {.target = "/x", .headers = {{"x-upstream-size", "100000"}}});
  ASSERT_OK(big);
  EXPECT_EQ(big->status, 200);
  EXPECT_EQ(big->body.size(), 100000u);
}

TEST_F(UpstreamOnly, CloseBeforeIsATransportError) {
  auto r = httpRequest(port_, {.target = "/x?close=before"});
  EXPECT_FALSE(r) << "expected no response, got " << r->summary();
}

TEST_F(UpstreamOnly, ReadTimeoutIsBounded) {
  auto start = std::chrono::steady_clock::now();
  auto r = httpRequest(port_, {.target = "/slow?delay=1500ms"}, 200ms);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("timeout"), std::string::npos) << r.error();
  EXPECT_LT(took, 1000ms);
}

TEST_F(UpstreamOnly, CurlSeesWhatTheClientSees) {
  auto c = curl({"-H", "x-user-group: beta", "http://127.0.0.1:" + std::to_string(port_) + "/c?q=1"});
  ASSERT_EQ(c.exitCode, 0) << c.stderrText;
  EXPECT_EQ(c.status, 200);
  EXPECT_EQ(c.header("x-upstream-name"), "alpha");
  EXPECT_EQ(c.json()["headers"]["x-user-group"], "beta");
  auto teapot = curl({"http://127.0.0.1:" + std::to_string(port_) + "/c?status=418"});
  EXPECT_EQ(teapot.exitCode, 0) << teapot.stderrText;
  EXPECT_EQ(teapot.status, 418);
}

TEST_F(UpstreamOnly, StopEndsOnlyTheChild) {
  Process* p = mesh_->upstream("alpha");
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->running());
  int status = p->stop(2000ms);
  EXPECT_FALSE(p->running());
  EXPECT_TRUE(WIFEXITED(status) || WIFSIGNALED(status));
  EXPECT_FALSE(httpRequest(port_, {.target = "/"}, 500ms)) << "upstream still answers after stop";
}

TEST(Harness, WaitForHttpGivesUpOnADeadPort) {
  uint16_t port = freePort();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(waitForHttp("http://127.0.0.1:" + std::to_string(port) + "/ready", 300ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
}

TEST(Harness, ExecFailureIsReported) {
  TempDir tmp;
  auto p = Process::start({"/nonexistent/binary"}, tmp.path() / "log");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().find("No such file"), std::string::npos) << p.error();
}

TEST(Harness, TemplatesFillPortsAndRejectUnknownVariables) {
  EXPECT_EQ(portVar("reviews-v1"), "REVIEWS_V1_PORT");
  EXPECT_EQ(portVar("frontend-service"), "FRONTEND_SERVICE_PORT");
  auto ok = renderTemplate("http: ${A_PORT} x ${B_PORT}", {{"A_PORT", "1"}, {"B_PORT", "22"}});
  ASSERT_OK(ok);
  EXPECT_EQ(*ok, "http: 1 x 22");
  EXPECT_FALSE(renderTemplate("http: ${MISSING}", {}));
}

// The seed files are YAML the daemon can read, and the service templates name
// only ports the tests provide.
TEST(SeedFiles, ParseAsIstioResources) {
  const std::map<std::string, std::string> kinds = {
      {"basic-http-routing.yaml", "VirtualService"}, {"header-based-routing.yaml", "VirtualService"},
      {"uri-matching.yaml", "VirtualService"},       {"defining-subsets.yaml", "DestinationRule"},
      {"weighted-routing.yaml", "VirtualService"},   {"load-balancing-policies.yaml", "DestinationRule"},
      {"consistent-hashing.yaml", "DestinationRule"}, {"connection-pool-settings.yaml", "DestinationRule"},
      {"circuit-breaking.yaml", "DestinationRule"},
  };
  for (const auto& [file, kind] : kinds) {
    auto text = seedFile(file);
    ASSERT_OK(text);
    auto docs = YAML::LoadAll(*text);
    ASSERT_EQ(docs.size(), 1u) << file;
    EXPECT_EQ(docs[0]["kind"].as<std::string>(), kind) << file;
    EXPECT_EQ(docs[0]["apiVersion"].as<std::string>(), "networking.istio.io/v1") << file;
  }
  auto uri = YAML::Load(*seedFile("uri-matching.yaml"));
  EXPECT_FALSE(uri["spec"]["gateways"]) << "uri-matching.yaml must be mesh traffic (no gateways)";

  std::map<std::string, std::string> vars;
  for (const char* n : {"reviews-v1", "reviews-v2", "reviews-v3", "users-service-v2", "legacy-api",
                        "health-checker", "cdn-service", "frontend-service", "user-service-1",
                        "user-service-2", "user-service-3"}) {
    vars[portVar(n)] = "4242";
  }
  for (const char* file : {"services/reviews.yaml", "services/api.yaml", "services/user-service.yaml"}) {
    auto text = seedFile(file);
    ASSERT_OK(text);
    auto rendered = renderTemplate(*text, vars);
    ASSERT_OK(rendered);
    for (const auto& doc : YAML::LoadAll(*rendered)) {
      const std::string kind = doc["kind"].as<std::string>();
      EXPECT_TRUE(kind == "ServiceEntry" || kind == "WorkloadEntry") << file << ": " << kind;
      for (const auto& a : doc["spec"]["addresses"]) {
        EXPECT_EQ(a.as<std::string>().rfind("127.", 0), 0u) << "non-loopback address in " << file;
      }
    }
  }
}

}  // namespace
}  // namespace sluice::itest
