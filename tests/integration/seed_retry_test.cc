// The seed's "Retries and Timeouts" and "Per-Route Timeout Strategy"
// examples, plus Istio's default retry policy, through a real sluiced in
// front of sluice-upstreams that fail on request (?fail_first=N answers the
// first N requests with 503; ?status, ?delay).
#include <gtest/gtest.h>

#include <thread>

#include "mesh.h"
#include "recording_upstream.h"

namespace sluice::itest {
namespace {

const std::string kReviews = "reviews:9080";

// A second endpoint of subset v2 (WorkloadEntry labelled version: v2), on the
// port given by ${REVIEWS_V2B_PORT}.
constexpr std::string_view kSecondV2 = R"(apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2b
  namespace: default
spec:
  address: 127.0.0.1
  labels:
    app: reviews
    version: v2
  ports:
    http: ${REVIEWS_V2B_PORT}
)";

class SeedRetry : public ::testing::Test {
 protected:
  // reviews-v1/v2/v3 (+ `extra`), the seed subsets, the reviews services,
  // `extraConfig` (rendered), then `seed` with `replacements`, then sluiced.
  void start(const std::string& seed, const std::vector<std::pair<std::string, std::string>>& replacements = {},
             const std::vector<std::string>& extra = {}, std::string_view extraConfig = {}) {
    std::vector<std::string> names = {"reviews-v1", "reviews-v2", "reviews-v3"};
    names.insert(names.end(), extra.begin(), extra.end());
    ASSERT_OK(mesh_.startUpstreams(names));
    ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
    ASSERT_OK(mesh_.addSeed("defining-subsets.yaml"));
    if (!extraConfig.empty()) {
      auto rendered = renderTemplate(extraConfig, mesh_.vars());
      ASSERT_OK(rendered);
      ASSERT_OK(mesh_.writeConfig("test-extra.yaml", *rendered));
    }
    ASSERT_OK(mesh_.addSeedVariant(seed, replacements));
    ASSERT_OK(mesh_.startDaemon());
  }
  std::expected<Response, std::string> send(const std::string& method, const std::string& host,
                                            const std::string& target) {
    return httpRequest(mesh_.outboundPort(),
                       {.method = method, .target = target, .headers = {{"Host", host}},
                        .body = method == "GET" || method == "DELETE" ? "" : "{\"rating\":5}"},
                       10000ms);
  }
  std::string attemptCount(const Response& r) {
    auto j = r.json();
    if (j.is_discarded() || !j["headers"].contains("x-envoy-attempt-count")) return "<none>";
    return j["headers"]["x-envoy-attempt-count"].get<std::string>();
  }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

// attempts: 3 means up to 4 tries. The upstream sees each one, the last
// carrying x-envoy-attempt-count: N+1; the client sees one answer.
TEST_F(SeedRetry, RetriesAndTimeoutsRetryUntilSuccess) {
  ASSERT_NO_FATAL_FAILURE(start("retries-and-timeouts.yaml"));
  for (int failures : {1, 2, 3}) {
    mesh_.resetCounters();
    auto r = send("GET", kReviews, "/reviews/1?fail_first=" + std::to_string(failures));
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 200) << "fail_first=" << failures << ": " << r->summary() << out();
    EXPECT_EQ(upstreamName(*r), "reviews-v2");
    EXPECT_EQ(attemptCount(*r), std::to_string(failures + 1)) << r->body;
    EXPECT_EQ(mesh_.counter("reviews-v2"), failures + 1);
  }
  EXPECT_EQ(mesh_.stat("upstream_rq_retry_success"), 3);

  // One failure more than the policy allows: the client gets the last 503.
  mesh_.resetCounters();
  auto r = send("GET", kReviews, "/reviews/1?fail_first=4");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 503) << r->summary();
  EXPECT_EQ(upstreamName(*r), "reviews-v2") << "the upstream's own 503 is passed on";
  EXPECT_EQ(mesh_.counter("reviews-v2"), 4);
  EXPECT_EQ(mesh_.stat("upstream_rq_retry_limit_exceeded"), 1);
  auto c = mesh_.counters();
  EXPECT_EQ(c["reviews-v1"] + c["reviews-v3"], 0);
}

// retryOn gateway-error,connect-failure,refused-stream,503,retriable-4xx:
// 409 (retriable-4xx) and 502/504 (gateway-error) are retried; 500 and 404
// are not.
TEST_F(SeedRetry, RetriesAndTimeoutsRetryOnlyWhatRetryOnLists) {
  ASSERT_NO_FATAL_FAILURE(start("retries-and-timeouts.yaml"));
  const std::vector<std::pair<int, int>> cases = {{409, 4}, {502, 4}, {504, 4}, {500, 1}, {404, 1}, {429, 1}};
  for (auto [status, tries] : cases) {
    mesh_.resetCounters();
    auto r = send("GET", kReviews, "/?status=" + std::to_string(status));
    ASSERT_OK(r);
    EXPECT_EQ(r->status, status) << r->summary();
    EXPECT_EQ(mesh_.counter("reviews-v2"), tries) << "status " << status;
  }
}

// A copy with perTryTimeout 300 ms and a second v2 endpoint that never
// answers in time: a try that lands there is abandoned after 300 ms and the
// retry goes to the other endpoint (retryIgnorePreviousHosts defaults to
// true), so every client request succeeds from reviews-v2.
TEST_F(SeedRetry, PerTryTimeoutMovesToAnotherEndpoint) {
  auto slow = RecordingUpstream::start("reviews-v2b", 60000ms);
  ASSERT_OK(slow);
  mesh_.setVar("REVIEWS_V2B_PORT", std::to_string((*slow)->port()));
  ASSERT_NO_FATAL_FAILURE(start("retries-and-timeouts.yaml", {{"perTryTimeout: 3s", "perTryTimeout: 300ms"}}, {},
                                kSecondV2));
  // Each try picks reviews-v2b about half the time (two endpoints, none
  // busy); all 16 missing it has probability ~2e-5.
  constexpr int kRequests = 16;
  int slowCount = 0;
  for (int i = 0; i < kRequests; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto r = send("GET", kReviews, "/reviews/" + std::to_string(i));
    const int64_t ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start).count();
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    EXPECT_EQ(upstreamName(*r), "reviews-v2");
    if (ms >= 290) {
      ++slowCount;
      EXPECT_LT(ms, 1500) << "a 300 ms per-try timeout and one retry took " << ms << " ms";
      EXPECT_EQ(attemptCount(*r), "2") << r->body;
    } else {
      EXPECT_EQ(attemptCount(*r), "1") << r->body;
    }
  }
  EXPECT_GT(slowCount, 0) << "no try ever went to the slow endpoint";
  EXPECT_EQ(mesh_.counter("reviews-v2"), kRequests);
  EXPECT_EQ(int((*slow)->count()), slowCount);
  for (const auto& rec : (*slow)->requests()) EXPECT_EQ(rec.header("x-envoy-attempt-count"), "1");
  EXPECT_EQ(mesh_.stat("upstream_rq_per_try_timeout"), slowCount);
}

// A 503 from one endpoint is retried on the other: the sick endpoint is tried
// at most once per request, so no request needs more than two tries.
TEST_F(SeedRetry, RetryGoesToAnotherEndpoint) {
  ASSERT_OK(mesh_.startUpstreams({"reviews-v2b"}, {"--status", "503"}));
  ASSERT_NO_FATAL_FAILURE(start("retries-and-timeouts.yaml", {}, {}, kSecondV2));
  constexpr int kRequests = 40;
  int extraTries = 0;
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  for (int i = 0; i < kRequests; ++i) {
    auto r = conn->send({.target = "/", .headers = {{"Host", kReviews}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    EXPECT_EQ(upstreamName(*r), "reviews-v2");
    const std::string n = attemptCount(*r);
    EXPECT_TRUE(n == "1" || n == "2") << "attempt " << n << ": a previous host was tried again";
    if (n == "2") ++extraTries;
  }
  EXPECT_GT(extraTries, 0) << "the sick endpoint was never picked";
  EXPECT_EQ(mesh_.counter("reviews-v2b"), extraTries);
  EXPECT_EQ(mesh_.counter("reviews-v2"), kRequests);
}

// A copy with timeout 500 ms: an upstream that takes 2 s gets the client a
// 504 after the route timeout (flag UT), and the timed-out request is not
// retried (the route timeout spans all tries).
TEST_F(SeedRetry, RouteTimeoutGives504) {
  ASSERT_NO_FATAL_FAILURE(start("retries-and-timeouts.yaml", {{"timeout: 10s", "timeout: 500ms"}}));
  const auto start = std::chrono::steady_clock::now();
  auto r = send("GET", kReviews, "/reviews/1?delay=2s");
  const int64_t ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start).count();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 504) << r->summary() << out();
  EXPECT_EQ(r->body, "upstream request timeout");
  EXPECT_GE(ms, 450) << "timed out early";
  EXPECT_LE(ms, 1000) << "a 500 ms route timeout took " << ms << " ms";
  std::this_thread::sleep_for(300ms);  // a wrong retry would arrive by now
  EXPECT_EQ(mesh_.counter("reviews-v2"), 1);
  const std::string prom = mesh_.prometheus();
  EXPECT_EQ(istioRequests(prom, {"response_code=\"504\"", "response_flags=\"UT\""}), 1) << prom.substr(0, 2000);

  // Within the timeout nothing changes.
  auto fast = send("GET", kReviews, "/reviews/1?delay=100ms");
  ASSERT_OK(fast);
  EXPECT_EQ(fast->status, 200) << fast->summary();
}

// No `retries` on the route: Istio's default policy, 2 retries on
// connect-failure, refused-stream, unavailable, cancelled and 503.
TEST_F(SeedRetry, IstioDefaultPolicyRetries503Twice) {
  ASSERT_NO_FATAL_FAILURE(start("basic-http-routing.yaml"));
  auto r = send("GET", kReviews, "/?fail_first=2");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->summary() << out();
  EXPECT_EQ(attemptCount(*r), "3") << r->body;
  EXPECT_EQ(mesh_.counter("reviews-v2"), 3);

  mesh_.resetCounters();
  auto fail = send("GET", kReviews, "/?fail_first=3");
  ASSERT_OK(fail);
  EXPECT_EQ(fail->status, 503) << fail->summary();
  EXPECT_EQ(mesh_.counter("reviews-v2"), 3);

  // 502 is not among the default's codes.
  mesh_.resetCounters();
  auto bad = send("GET", kReviews, "/?status=502");
  ASSERT_OK(bad);
  EXPECT_EQ(bad->status, 502) << bad->summary();
  EXPECT_EQ(mesh_.counter("reviews-v2"), 1);
}

// ---------------------------------------------------------------- per-route strategy

class SeedPerRoute : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(mesh_.startUpstreams({"api-service"}));
    ASSERT_OK(mesh_.addServiceTemplate("api-service.yaml"));
    ASSERT_OK(mesh_.addSeed("per-route-timeout-strategy.yaml"));
    ASSERT_OK(mesh_.startDaemon());
  }
  std::expected<Response, std::string> send(const std::string& method, const std::string& target) {
    return httpRequest(mesh_.outboundPort(),
                       {.method = method, .target = target, .headers = {{"Host", "api-service:8080"}},
                        .body = method == "POST" || method == "PUT" ? "{\"id\":1}" : ""},
                       10000ms);
  }
  std::string out() { return "\n" + mesh_.logs(); }
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(SeedPerRoute, ReadsAreRetried) {
  auto r = send("GET", "/items?fail_first=2");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200) << r->summary() << out();
  EXPECT_EQ(r->json()["headers"]["x-envoy-attempt-count"], "3") << r->body;
  EXPECT_EQ(mesh_.counter("api-service"), 3);

  // retryOn of the read rule has no retriable-4xx.
  mesh_.resetCounters();
  auto conflict = send("GET", "/items?status=409");
  ASSERT_OK(conflict);
  EXPECT_EQ(conflict->status, 409);
  EXPECT_EQ(mesh_.counter("api-service"), 1);
}

TEST_F(SeedPerRoute, WritesAreNotRetried) {
  for (std::string method : {"POST", "PUT", "DELETE"}) {
    mesh_.resetCounters();
    auto r = send(method, "/items/1?fail_first=1");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 503) << method << ": " << r->summary() << out();
    EXPECT_EQ(upstreamName(*r), "api-service") << method << ": the upstream's 503 goes back as it is";
    EXPECT_EQ(mesh_.counter("api-service"), 1) << method << " was retried";
  }
  // The same write succeeds when the upstream does.
  mesh_.resetCounters();
  auto ok = send("POST", "/items");
  ASSERT_OK(ok);
  EXPECT_EQ(ok->status, 200) << ok->summary();
  EXPECT_EQ(ok->json()["method"], "POST");
}

// Only GET, POST, PUT and DELETE have a rule: any other method finds no
// route (404, flag NR) and never reaches the service.
TEST_F(SeedPerRoute, OtherMethodsHaveNoRoute) {
  for (std::string method : {"PATCH", "HEAD", "OPTIONS"}) {
    auto r = send(method, "/items/1");
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 404) << method << ": " << r->summary();
  }
  EXPECT_EQ(mesh_.counter("api-service"), 0);
}

}  // namespace
}  // namespace sluice::itest
