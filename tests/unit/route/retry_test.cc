#include "route/retry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace sluice::route {
namespace {

using namespace std::chrono_literals;
using Headers = http::HeaderMap;

constexpr uint64_t kMs = 1'000'000;

config::HTTPRetry retries(int32_t attempts, std::string retryOn) {
  config::HTTPRetry r;
  r.attempts = attempts;
  r.retryOn = std::move(retryOn);
  return r;
}

RetryPolicy compiled(const config::HTTPRetry& spec, bool idempotentOnly = false) {
  auto p = RetryPolicy::compile(spec, idempotentOnly);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error());
  return p ? *p : RetryPolicy{};
}

// One outcome of a first attempt, named for the decision tables.
struct Outcome {
  std::string name;
  bool isResponse;
  int status;
  AttemptFailure failure;
  bool bytesSent;
  std::string grpcStatus = {};  // a gRPC trailers-only answer's grpc-status
};

const std::vector<Outcome>& outcomes() {
  static const std::vector<Outcome> all = {
      {"200", true, 200, {}, true},
      {"404", true, 404, {}, true},
      {"409", true, 409, {}, true},
      {"429", true, 429, {}, true},
      {"500", true, 500, {}, true},
      {"501", true, 501, {}, true},
      {"502", true, 502, {}, true},
      {"503", true, 503, {}, true},
      {"504", true, 504, {}, true},
      {"599", true, 599, {}, true},
      {"connect", false, 0, AttemptFailure::ConnectFailure, false},
      {"resetBefore", false, 0, AttemptFailure::ResetBeforeRequest, false},
      {"reset", false, 0, AttemptFailure::Reset, true},
      {"perTry", false, 0, AttemptFailure::PerTryTimeout, true},
      {"refused", false, 0, AttemptFailure::RefusedStream, true},
      {"grpc1", true, 200, {}, true, "1"},
      {"grpc4", true, 200, {}, true, "4"},
      {"grpc8", true, 200, {}, true, "8"},
      {"grpc13", true, 200, {}, true, "13"},
      {"grpc14", true, 200, {}, true, "14"},
      {"grpc5", true, 200, {}, true, "5"},
  };
  return all;
}

RetryDecision firstAttempt(const RetryPolicy& p, const Outcome& o, std::string_view method = "GET",
                           const Headers& requestHeaders = {}) {
  core::FakeClock clock;
  core::Rng rng(1);
  RetryState s(p, method, requestHeaders, clock, rng);
  Headers response;
  if (!o.grpcStatus.empty()) response.add("grpc-status", o.grpcStatus);
  return o.isResponse ? s.onResponse(o.status, response) : s.onFailure(o.failure, o.bytesSent);
}

struct TokenCase {
  std::string retryOn;
  std::set<std::string> retried;  // outcomes that retry; all others must not
};

TEST(RetryState, EachTokenRetriesExactlyItsOutcomes) {
  const std::vector<TokenCase> table = {
      {"5xx", {"500", "501", "502", "503", "504", "599", "connect", "resetBefore", "reset", "perTry", "refused"}},
      {"gateway-error", {"502", "503", "504", "connect", "resetBefore", "reset", "perTry", "refused"}},
      {"reset", {"connect", "resetBefore", "reset", "perTry", "refused"}},
      // A refused stream was not processed: it never started.
      {"reset-before-request", {"connect", "resetBefore", "refused"}},
      {"connect-failure", {"connect"}},
      {"retriable-4xx", {"409"}},
      // HTTP/2 REFUSED_STREAM.
      {"refused-stream", {"refused"}},
      // No codes in the policy and none in the request: nothing matches.
      {"retriable-status-codes", {}},
      {"retriable-headers", {}},
      // gRPC: grpc-status in the response head (a trailers-only answer).
      {"cancelled", {"grpc1"}},
      {"deadline-exceeded", {"grpc4"}},
      {"internal", {"grpc13"}},
      {"resource-exhausted", {"grpc8"}},
      {"unavailable", {"grpc14"}},
      {"envoy-ratelimited", {}},
      {"503", {"503"}},
      {"404,429", {"404", "429"}},
      {"retriable-status-codes,409", {"409"}},
      {"connect-failure,retriable-4xx", {"connect", "409"}},
  };
  for (const TokenCase& tc : table) {
    RetryPolicy p = compiled(retries(2, tc.retryOn));
    for (const Outcome& o : outcomes()) {
      RetryDecision want = tc.retried.count(o.name) ? RetryDecision::Retry : RetryDecision::NoRetry;
      EXPECT_EQ(firstAttempt(p, o), want) << "retryOn=" << tc.retryOn << " outcome=" << o.name;
    }
  }
}

TEST(RetryState, ResetBeforeRequestLooksAtWhetherAnyRequestByteLeft) {
  // Envoy keys the token on "the upstream request never started", so a reset
  // or timeout that struck before the first byte was written qualifies too.
  RetryPolicy p = compiled(retries(2, "reset-before-request"));
  for (AttemptFailure f : {AttemptFailure::Reset, AttemptFailure::PerTryTimeout}) {
    EXPECT_EQ(firstAttempt(p, {"", false, 0, f, false}), RetryDecision::Retry) << int(f);
    EXPECT_EQ(firstAttempt(p, {"", false, 0, f, true}), RetryDecision::NoRetry) << int(f);
  }
}

TEST(RetryState, IstioDefaultRetriesConnectFailureRefusedStreamUnavailableCancelledAnd503) {
  RetryPolicy p = RetryPolicy::istioDefault();
  for (const Outcome& o : outcomes()) {
    bool want = o.name == "connect" || o.name == "503" || o.name == "refused" || o.name == "grpc14" ||
                o.name == "grpc1";
    EXPECT_EQ(firstAttempt(p, o), want ? RetryDecision::Retry : RetryDecision::NoRetry) << o.name;
  }
}

TEST(RetryPolicy, IstioDefault) {
  RetryPolicy p = RetryPolicy::istioDefault();
  EXPECT_EQ(p.numRetries, 2u);
  EXPECT_EQ(p.retryOn, uint32_t(RetryPolicy::kConnectFailure | RetryPolicy::kRefusedStream |
                                RetryPolicy::kGrpcUnavailable | RetryPolicy::kGrpcCancelled |
                                RetryPolicy::kRetriableStatusCodes));
  EXPECT_EQ(p.retriableStatusCodes, std::vector<uint16_t>{503});
  EXPECT_TRUE(p.ignorePreviousHosts);
  EXPECT_EQ(p.backoffBaseNs, 25 * kMs);
  EXPECT_EQ(p.backoffMaxNs, 250 * kMs);
  EXPECT_EQ(p.perTryTimeoutNs, 0u);
  EXPECT_FALSE(p.idempotentOnly);
  EXPECT_TRUE(p.enabled());
}

TEST(RetryPolicy, AbsentSpecIsTheDefaultCarryingIdempotentOnly) {
  auto p = RetryPolicy::compile(std::nullopt, true);
  ASSERT_TRUE(p.has_value());
  RetryPolicy d = RetryPolicy::istioDefault();
  EXPECT_EQ(p->numRetries, d.numRetries);
  EXPECT_EQ(p->retryOn, d.retryOn);
  EXPECT_EQ(p->retriableStatusCodes, d.retriableStatusCodes);
  EXPECT_TRUE(p->idempotentOnly);
  EXPECT_FALSE(RetryPolicy::compile(std::nullopt, false)->idempotentOnly);
}

TEST(RetryPolicy, EmptyRetryOnKeepsTheDefaultsTokensAndCodes) {
  RetryPolicy p = compiled(retries(5, ""));
  RetryPolicy d = RetryPolicy::istioDefault();
  EXPECT_EQ(p.numRetries, 5u);
  EXPECT_EQ(p.retryOn, d.retryOn);
  EXPECT_EQ(p.retriableStatusCodes, std::vector<uint16_t>{503});
}

TEST(RetryPolicy, NonEmptyRetryOnReplacesTokensAndCodes) {
  RetryPolicy p = compiled(retries(3, "5xx"));
  EXPECT_EQ(p.retryOn, uint32_t(RetryPolicy::k5xx));
  EXPECT_TRUE(p.retriableStatusCodes.empty());
  // Istio replaces on any non-empty string, even one holding no token.
  RetryPolicy blank = compiled(retries(3, " , "));
  EXPECT_EQ(blank.retryOn, 0u);
  EXPECT_TRUE(blank.retriableStatusCodes.empty());
}

TEST(RetryPolicy, TokensToleratesWhitespaceAndCodesAddTheirToken) {
  RetryPolicy p = compiled(retries(2, " gateway-error ,\treset-before-request,429 , 503,429"));
  EXPECT_EQ(p.retryOn, uint32_t(RetryPolicy::kGatewayError | RetryPolicy::kResetBeforeRequest |
                                RetryPolicy::kRetriableStatusCodes));
  EXPECT_EQ(p.retriableStatusCodes, (std::vector<uint16_t>{429, 503}));

  RetryPolicy codesOnly = compiled(retries(2, "502"));
  EXPECT_EQ(codesOnly.retryOn, uint32_t(RetryPolicy::kRetriableStatusCodes));
  EXPECT_EQ(codesOnly.retriableStatusCodes, std::vector<uint16_t>{502});
}

TEST(RetryPolicy, EveryKnownTokenCompilesToItsBit) {
  const std::vector<std::pair<std::string, uint32_t>> bits = {
      {"5xx", RetryPolicy::k5xx},
      {"gateway-error", RetryPolicy::kGatewayError},
      {"reset", RetryPolicy::kReset},
      {"reset-before-request", RetryPolicy::kResetBeforeRequest},
      {"connect-failure", RetryPolicy::kConnectFailure},
      {"retriable-4xx", RetryPolicy::kRetriable4xx},
      {"refused-stream", RetryPolicy::kRefusedStream},
      {"retriable-status-codes", RetryPolicy::kRetriableStatusCodes},
      {"retriable-headers", RetryPolicy::kRetriableHeaders},
      {"cancelled", RetryPolicy::kGrpcCancelled},
      {"deadline-exceeded", RetryPolicy::kGrpcDeadlineExceeded},
      {"internal", RetryPolicy::kGrpcInternal},
      {"resource-exhausted", RetryPolicy::kGrpcResourceExhausted},
      {"unavailable", RetryPolicy::kGrpcUnavailable},
      // Valid for Istio and the loader; inert here.
      {"envoy-ratelimited", 0},
      {"http3-post-connect-failure", 0},
  };
  for (const auto& [tok, bit] : bits) EXPECT_EQ(compiled(retries(1, tok)).retryOn, bit) << tok;
}

TEST(RetryPolicy, UnknownTokensAreErrors) {
  for (std::string bad : {"5xx,bogus", "retriable_4xx", "5XX", "600", "99", "50x", "connect-failure;reset"}) {
    auto p = RetryPolicy::compile(retries(2, bad), false);
    ASSERT_FALSE(p.has_value()) << bad;
    EXPECT_NE(p.error().find("not a valid retryOn policy"), std::string::npos) << p.error();
  }
  auto p = RetryPolicy::compile(retries(2, "5xx, bogus ,reset"), false);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("\"bogus\""), std::string::npos) << p.error();
  // A typo is reported even when attempts switch retries off.
  EXPECT_FALSE(RetryPolicy::compile(retries(0, "bogus"), false).has_value());
}

TEST(RetryPolicy, AttemptsZeroDisablesRetries) {
  RetryPolicy p = compiled(retries(0, "5xx,connect-failure"));
  EXPECT_EQ(p.numRetries, 0u);
  EXPECT_FALSE(p.enabled());
  for (const Outcome& o : outcomes()) EXPECT_EQ(firstAttempt(p, o), RetryDecision::NoRetry) << o.name;
}

TEST(RetryPolicy, TimeoutsBackoffAndHostFields) {
  config::HTTPRetry r = retries(3, "5xx");
  r.perTryTimeout = 2s;
  r.backoff = 100ms;
  r.retryRemoteLocalities = true;
  RetryPolicy p = compiled(r);
  EXPECT_EQ(p.perTryTimeoutNs, 2'000 * kMs);
  EXPECT_EQ(p.backoffBaseNs, 100 * kMs);
  EXPECT_EQ(p.backoffMaxNs, 1'000 * kMs);
  EXPECT_TRUE(p.ignorePreviousHosts);  // absent: Istio's previous-hosts predicate

  r.retryIgnorePreviousHosts = false;
  EXPECT_FALSE(compiled(r).ignorePreviousHosts);
  r.retryIgnorePreviousHosts = true;
  EXPECT_TRUE(compiled(r).ignorePreviousHosts);

  // Envoy rounds a base below 1 ms up to 1 ms.
  r.backoff = 200us;
  EXPECT_EQ(compiled(r).backoffBaseNs, 1 * kMs);
  EXPECT_EQ(compiled(r).backoffMaxNs, 10 * kMs);

  config::HTTPRetry plain = retries(3, "5xx");
  EXPECT_EQ(compiled(plain).perTryTimeoutNs, 0u);
  EXPECT_EQ(compiled(plain).backoffBaseNs, 25 * kMs);
  EXPECT_EQ(compiled(plain).backoffMaxNs, 250 * kMs);
}

TEST(RetryState, LimitExceededAfterTheLastAttempt) {
  RetryPolicy p = compiled(retries(2, "5xx"));
  core::FakeClock clock;
  core::Rng rng(7);
  RetryState s(p, "GET", {}, clock, rng);
  EXPECT_EQ(s.attempt(), 1u);
  EXPECT_EQ(s.onResponse(503, {}), RetryDecision::Retry);
  s.backoffNs();
  EXPECT_EQ(s.attempt(), 2u);
  EXPECT_EQ(s.onFailure(AttemptFailure::Reset, true), RetryDecision::Retry);
  s.backoffNs();
  EXPECT_EQ(s.attempt(), 3u);
  EXPECT_EQ(s.retriesMade(), 2u);
  EXPECT_EQ(s.onResponse(500, {}), RetryDecision::LimitExceeded);
  EXPECT_EQ(s.onFailure(AttemptFailure::ConnectFailure, false), RetryDecision::LimitExceeded);
  // Not retriable stays NoRetry, limit or not.
  EXPECT_EQ(s.onResponse(200, {}), RetryDecision::NoRetry);
  EXPECT_EQ(s.attempt(), 3u);
}

TEST(RetryState, OneAttemptAllowsExactlyOneRetry) {
  RetryPolicy p = compiled(retries(1, "connect-failure"));
  core::FakeClock clock;
  core::Rng rng(7);
  RetryState s(p, "GET", {}, clock, rng);
  EXPECT_EQ(s.onFailure(AttemptFailure::ConnectFailure, false), RetryDecision::Retry);
  s.backoffNs();
  EXPECT_EQ(s.onFailure(AttemptFailure::ConnectFailure, false), RetryDecision::LimitExceeded);
}

TEST(RetryState, AGrantedRetryNotYetStartedCountsAgainstTheLimit) {
  RetryPolicy p = compiled(retries(1, "5xx"));
  core::FakeClock clock;
  core::Rng rng(7);
  RetryState s(p, "GET", {}, clock, rng);
  EXPECT_EQ(s.onResponse(503, {}), RetryDecision::Retry);
  EXPECT_EQ(s.onResponse(503, {}), RetryDecision::LimitExceeded);
  s.backoffNs();
  EXPECT_EQ(s.attempt(), 2u);
  // Asking for a delay without a granted retry does not count one.
  s.backoffNs();
  EXPECT_EQ(s.attempt(), 2u);
}

TEST(RetryState, IdempotentOnlyRetriesANonIdempotentRequestOnlyBeforeItsBytesLeft) {
  RetryPolicy guarded = compiled(retries(2, "5xx,reset,connect-failure"), /*idempotentOnly=*/true);
  RetryPolicy open = compiled(retries(2, "5xx,reset,connect-failure"), /*idempotentOnly=*/false);
  struct Case {
    std::string name;
    bool isResponse;
    AttemptFailure failure;
    bool bytesSent;
    bool retriedWhenGuarded;  // for a non-idempotent method
  };
  const std::vector<Case> cases = {
      {"connect", false, AttemptFailure::ConnectFailure, false, true},
      {"resetBefore", false, AttemptFailure::ResetBeforeRequest, false, true},
      {"reset, nothing sent", false, AttemptFailure::Reset, false, true},
      {"reset after bytes", false, AttemptFailure::Reset, true, false},
      {"perTry after bytes", false, AttemptFailure::PerTryTimeout, true, false},
      {"503 response", true, {}, true, false},
  };
  auto run = [](const RetryPolicy& p, std::string_view method, const Case& c) {
    core::FakeClock clock;
    core::Rng rng(3);
    RetryState s(p, method, {}, clock, rng);
    return c.isResponse ? s.onResponse(503, {}) : s.onFailure(c.failure, c.bytesSent);
  };
  for (const Case& c : cases) {
    for (std::string_view m : {"POST", "PATCH", "CONNECT", "get"}) {
      EXPECT_EQ(run(guarded, m, c), c.retriedWhenGuarded ? RetryDecision::Retry : RetryDecision::NoRetry)
          << m << " " << c.name;
      EXPECT_EQ(run(open, m, c), RetryDecision::Retry) << m << " " << c.name << " (no guard)";
    }
    for (std::string_view m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
      EXPECT_EQ(run(guarded, m, c), RetryDecision::Retry) << m << " " << c.name;
  }
}

TEST(RetryState, RetriableHeaderNamesComeFromTheRequest) {
  RetryPolicy p = compiled(retries(2, "retriable-headers"));
  core::FakeClock clock;
  core::Rng rng(1);
  Headers req = {{"Host", "a"}, {"X-Envoy-Retriable-Header-Names", " X-Retry-Me , x-other,"}};
  auto decide = [&](const Headers& resp, const Headers& request) {
    RetryState s(p, "GET", request, clock, rng);
    return s.onResponse(200, resp);
  };
  EXPECT_EQ(decide({{"x-retry-me", "1"}}, req), RetryDecision::Retry);
  EXPECT_EQ(decide({{"content-type", "text/plain"}, {"X-OTHER", ""}}, req), RetryDecision::Retry);
  EXPECT_EQ(decide({{"x-retry-me-not", "1"}}, req), RetryDecision::NoRetry);
  EXPECT_EQ(decide({}, req), RetryDecision::NoRetry);
  // Without the request header nothing is retriable by header.
  EXPECT_EQ(decide({{"x-retry-me", "1"}}, {{"Host", "a"}}), RetryDecision::NoRetry);
  // Two header lines both count.
  Headers two = {{"x-envoy-retriable-header-names", "a"}, {"x-envoy-retriable-header-names", "b"}};
  EXPECT_EQ(decide({{"B", "1"}}, two), RetryDecision::Retry);

  // The names do nothing unless the policy has retriable-headers.
  RetryPolicy other = compiled(retries(2, "5xx"));
  RetryState s(other, "GET", req, clock, rng);
  EXPECT_EQ(s.onResponse(200, {{"x-retry-me", "1"}}), RetryDecision::NoRetry);
}

TEST(RetryState, RetriableStatusCodesFromTheRequestAddToThePolicys) {
  core::FakeClock clock;
  core::Rng rng(1);
  Headers req = {{"x-envoy-retriable-status-codes", "418, 429,abc,,"}};
  auto decide = [&](const RetryPolicy& p, int status) {
    RetryState s(p, "GET", req, clock, rng);
    return s.onResponse(status, {});
  };
  RetryPolicy p = compiled(retries(2, "retriable-status-codes"));
  EXPECT_EQ(decide(p, 418), RetryDecision::Retry);
  EXPECT_EQ(decide(p, 429), RetryDecision::Retry);
  EXPECT_EQ(decide(p, 500), RetryDecision::NoRetry);

  RetryPolicy d = RetryPolicy::istioDefault();
  EXPECT_EQ(decide(d, 503), RetryDecision::Retry);
  EXPECT_EQ(decide(d, 418), RetryDecision::Retry);
  EXPECT_EQ(decide(d, 502), RetryDecision::NoRetry);

  // Without the token the header is ignored.
  RetryPolicy noToken = compiled(retries(2, "connect-failure"));
  EXPECT_EQ(decide(noToken, 418), RetryDecision::NoRetry);
}

TEST(RetryState, AnUpstreamRateLimitVerdictIsNotRetried) {
  RetryPolicy p = compiled(retries(2, "5xx"));
  core::FakeClock clock;
  core::Rng rng(1);
  RetryState s(p, "GET", {}, clock, rng);
  EXPECT_EQ(s.onResponse(503, {{"X-Envoy-RateLimited", "true"}}), RetryDecision::NoRetry);
  EXPECT_EQ(s.onResponse(503, {}), RetryDecision::Retry);
}

// Draws `samples` full retry sequences and checks each retry's delay against
// its window [0, cap_i): never outside it, mean within 3% of cap_i / 2 (the
// standard error at 4000 samples is 0.46% of cap_i), and a maximum above
// 95% of cap_i, which a window that failed to double could not reach.
void checkBackoffWindows(const RetryPolicy& p, const std::vector<uint64_t>& caps) {
  constexpr int kSamples = 4000;
  core::FakeClock clock;
  core::Rng rng(0x5eed);
  std::vector<double> sum(caps.size(), 0);
  std::vector<uint64_t> maxSeen(caps.size(), 0);
  for (int n = 0; n < kSamples; ++n) {
    RetryState s(p, "GET", {}, clock, rng);
    for (size_t i = 0; i < caps.size(); ++i) {
      ASSERT_EQ(s.onFailure(AttemptFailure::ConnectFailure, false), RetryDecision::Retry);
      uint64_t d = s.backoffNs();
      ASSERT_GE(d, 1u) << "retry " << i;
      ASSERT_LT(d, caps[i]) << "retry " << i;
      sum[i] += double(d);
      maxSeen[i] = std::max(maxSeen[i], d);
    }
  }
  for (size_t i = 0; i < caps.size(); ++i) {
    double mean = sum[i] / kSamples;
    EXPECT_NEAR(mean, double(caps[i]) / 2, 0.03 * double(caps[i])) << "retry " << i;
    EXPECT_GT(double(maxSeen[i]), 0.95 * double(caps[i])) << "retry " << i;
  }
}

TEST(RetryState, BackoffWindowDoublesFrom25msAndClampsAt250ms) {
  RetryPolicy p = compiled(retries(7, "connect-failure"));
  checkBackoffWindows(p, {25 * kMs, 50 * kMs, 100 * kMs, 200 * kMs, 250 * kMs, 250 * kMs, 250 * kMs});
}

TEST(RetryState, BackoffWithA100msBaseClampsAt1s) {
  config::HTTPRetry r = retries(6, "connect-failure");
  r.backoff = 100ms;
  checkBackoffWindows(compiled(r), {100 * kMs, 200 * kMs, 400 * kMs, 800 * kMs, 1000 * kMs, 1000 * kMs});
}

TEST(RetryState, BackoffIsNeverZero) {
  // A one-nanosecond window can only draw 0; the floor turns it into 1.
  RetryPolicy p = compiled(retries(3, "5xx"));
  p.backoffBaseNs = 1;
  p.backoffMaxNs = 1;
  core::FakeClock clock;
  core::Rng rng(9);
  RetryState s(p, "GET", {}, clock, rng);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(s.onResponse(500, {}), RetryDecision::Retry);
    EXPECT_EQ(s.backoffNs(), 1u);
  }
}

TEST(RetryState, SameSeedSameDelays) {
  RetryPolicy p = compiled(retries(3, "5xx"));
  core::FakeClock clock;
  auto delays = [&](uint64_t seed) {
    core::Rng rng(seed);
    RetryState s(p, "GET", {}, clock, rng);
    std::vector<uint64_t> out;
    while (s.onResponse(503, {}) == RetryDecision::Retry) out.push_back(s.backoffNs());
    return out;
  };
  EXPECT_EQ(delays(42), delays(42));
  EXPECT_EQ(delays(42).size(), 3u);
  EXPECT_NE(delays(42), delays(43));
}

TEST(RetryState, PerTryDeadlineFollowsTheClock) {
  config::HTTPRetry r = retries(2, "5xx");
  r.perTryTimeout = 2s;
  RetryPolicy p = compiled(r);
  core::FakeClock clock;
  clock.set(5'000 * kMs);
  core::Rng rng(1);
  RetryState s(p, "GET", {}, clock, rng);
  EXPECT_EQ(s.beginAttempt(), 7'000 * kMs);
  clock.advance(150ms);
  EXPECT_EQ(s.beginAttempt(), 7'150 * kMs);

  RetryPolicy none = compiled(retries(2, "5xx"));
  RetryState t(none, "GET", {}, clock, rng);
  EXPECT_EQ(t.beginAttempt(), 0u);
}

}  // namespace
}  // namespace sluice::route
