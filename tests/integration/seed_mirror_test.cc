// The seed's "Traffic Mirroring (Shadowing)" example: all of reviews to v1,
// every request mirrored to v2. The v2 endpoint here is a RecordingUpstream
// (what the mirror received is only visible at the mirror: the proxy throws
// its answer away), and it can be made slow to show the mirror is
// fire-and-forget.
#include <gtest/gtest.h>

#include <set>

#include "mesh.h"
#include "recording_upstream.h"

namespace sluice::itest {
namespace {

const std::string kReviews = "reviews:9080";

class SeedMirror : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v2 = RecordingUpstream::start("reviews-v2");
    ASSERT_OK(v2);
    v2_ = std::move(*v2);
    mesh_.setVar(portVar("reviews-v2"), std::to_string(v2_->port()));
    ASSERT_OK(mesh_.startUpstreams({"reviews-v1", "reviews-v3"}));
    ASSERT_OK(mesh_.addServiceTemplate("reviews.yaml"));
    ASSERT_OK(mesh_.addSeed("defining-subsets.yaml"));
    ASSERT_OK(mesh_.addSeed("traffic-mirroring.yaml"));
    ASSERT_OK(mesh_.startDaemon());
  }
  void TearDown() override {
    // Stop the daemon before the mirror target, so no mirror is cut short
    // by the target going away first.
    mesh_.daemon().stop(1000ms);
  }
  std::string out() { return "\n" + mesh_.logs(); }

  // Declared before mesh_ so it outlives the daemon.
  std::unique_ptr<RecordingUpstream> v2_;
  TempDir tmp_;
  Mesh mesh_{tmp_};
};

TEST_F(SeedMirror, EveryRequestIsMirroredToV2) {
  constexpr int kRequests = 50;
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  for (int i = 0; i < kRequests; ++i) {
    auto r = conn->send({.target = "/reviews/" + std::to_string(i) + "?page=" + std::to_string(i),
                         .headers = {{"Host", kReviews}, {"x-user", "u" + std::to_string(i)}}});
    ASSERT_OK(r);
    ASSERT_EQ(r->status, 200) << r->summary() << out();
    // The client only ever sees the primary's answer.
    EXPECT_EQ(upstreamName(*r), "reviews-v1");
    EXPECT_EQ(r->json()["headers"]["host"], kReviews) << "the primary keeps the original Host";
  }
  ASSERT_TRUE(v2_->waitForCount(kRequests, 3000ms)) << "mirror received " << v2_->count() << out();
  EXPECT_EQ(mesh_.counter("reviews-v1"), kRequests);
  EXPECT_EQ(mesh_.counter("reviews-v3"), 0);

  auto seen = v2_->requests();
  ASSERT_EQ(seen.size(), size_t(kRequests));
  std::set<std::string> targets;
  for (const auto& m : seen) {
    EXPECT_EQ(m.method, "GET");
    // As Envoy does: "-shadow" appended to the host, before the port.
    EXPECT_EQ(m.header("host"), "reviews-shadow:9080");
    targets.insert(m.target);
    auto user = m.header("x-user");
    ASSERT_TRUE(user) << "the mirror lost a request header";
    EXPECT_EQ(m.target, "/reviews/" + user->substr(1) + "?page=" + user->substr(1)) << "headers of another request";
  }
  EXPECT_EQ(targets.size(), size_t(kRequests)) << "a request was mirrored twice or not at all";
  EXPECT_EQ(mesh_.stat("shadow_rq_total"), kRequests);

  // A Host without a port, and a request with a body.
  v2_->clear();
  auto post = httpRequest(mesh_.outboundPort(), {.method = "POST",
                                                 .target = "/reviews",
                                                 .headers = {{"Host", "reviews"}},
                                                 .body = std::string(10000, 'r')});
  ASSERT_OK(post);
  ASSERT_EQ(post->status, 200) << post->summary();
  EXPECT_EQ(upstreamName(*post), "reviews-v1");
  EXPECT_EQ(post->json()["body_bytes"], 10000);
  ASSERT_TRUE(v2_->waitForCount(1, 3000ms)) << out();
  auto m = v2_->requests().at(0);
  EXPECT_EQ(m.method, "POST");
  EXPECT_EQ(m.header("host"), "reviews-shadow");
  EXPECT_EQ(m.bodyBytes, 10000u) << "the mirror got a different body";
}

// The primary's latency does not depend on the mirror's: 200 sequential
// requests with the mirror answering at once, then 200 with it taking 2 s
// per request. p99 (the third slowest of 200) may grow by at most 20 ms.
TEST_F(SeedMirror, SlowMirrorDoesNotSlowThePrimary) {
  constexpr int kRequests = 200;
  auto conn = HttpConnection::connect(mesh_.outboundPort());
  ASSERT_OK(conn);
  auto run = [&](std::vector<int64_t>& ms) {
    for (int i = 0; i < kRequests; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto r = conn->send({.target = "/reviews/" + std::to_string(i), .headers = {{"Host", kReviews}}});
      ms.push_back(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count());
      ASSERT_OK(r);
      ASSERT_EQ(r->status, 200) << r->summary() << out();
      ASSERT_EQ(upstreamName(*r), "reviews-v1");
    }
  };
  // Warm-up: connections to both subsets exist before anything is measured.
  for (int i = 0; i < 20; ++i) ASSERT_EQ(mesh_.servedBy(kReviews, "/warm"), "reviews-v1");
  ASSERT_TRUE(v2_->waitForCount(20, 3000ms)) << out();

  std::vector<int64_t> fast, slow;
  ASSERT_NO_FATAL_FAILURE(run(fast));
  ASSERT_TRUE(v2_->waitForCount(20 + kRequests, 3000ms)) << "mirror received " << v2_->count();
  v2_->clear();
  v2_->setDelay(2000ms);
  const auto slowStart = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(run(slow));
  const auto slowEnd = std::chrono::steady_clock::now();
  // The mirrors really were in flight, and slow, while the primary ran.
  size_t duringRun = 0;
  for (const auto& m : v2_->requests()) duringRun += m.receivedAt <= slowEnd ? 1 : 0;
  v2_->setDelay(0ms);

  const int64_t fastP99 = quantile(fast, 0.99), slowP99 = quantile(slow, 0.99);
  const int64_t runMs = std::chrono::duration_cast<Millis>(slowEnd - slowStart).count();
  RecordProperty("fast_p99_us", std::to_string(fastP99));
  RecordProperty("slow_p99_us", std::to_string(slowP99));
  EXPECT_LE(slowP99, fastP99 + 20000) << "p99 with a fast mirror " << fastP99 << " us, with a 2 s mirror "
                                      << slowP99 << " us";
  EXPECT_LT(runMs, 2000) << "200 requests took as long as one mirrored answer: the primary waited";
  EXPECT_GE(duringRun, 20u) << "the mirror was hardly reached during the slow run";
  EXPECT_EQ(mesh_.counter("reviews-v1"), 20 + 2 * kRequests);
}

// The mirror tests' verdicts rest on RecordingUpstream: it must see every
// request with its headers and body size, keep connections alive, and hold
// its answers for the delay set.
TEST(RecordingUpstreamSelf, RecordsAndDelays) {
  auto up = RecordingUpstream::start("rec", 150ms);
  ASSERT_OK(up);
  auto conn = HttpConnection::connect((*up)->port());
  ASSERT_OK(conn);
  const auto start = std::chrono::steady_clock::now();
  auto r = conn->send({.method = "POST", .target = "/a?b=1", .headers = {{"Host", "svc-shadow:80"}, {"X-One", "1"}},
                       .body = std::string(5000, 'x')});
  const int64_t ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start).count();
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(upstreamName(*r), "rec");
  EXPECT_GE(ms, 145);
  (*up)->setDelay(0ms);
  ASSERT_OK(conn->sendRaw("PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"));
  auto r2 = conn->readResponse("PUT");
  ASSERT_OK(r2);
  EXPECT_EQ(r2->status, 200);
  auto seen = (*up)->requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/a?b=1");
  EXPECT_EQ(seen[0].header("host"), "svc-shadow:80");
  EXPECT_EQ(seen[0].header("x-one"), "1");
  EXPECT_EQ(seen[0].bodyBytes, 5000u);
  EXPECT_EQ(seen[1].method, "PUT");
  EXPECT_EQ(seen[1].bodyBytes, 7u);
  (*up)->clear();
  EXPECT_EQ((*up)->count(), 0u);
}

}  // namespace
}  // namespace sluice::itest
