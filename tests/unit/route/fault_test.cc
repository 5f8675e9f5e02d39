#include "route/fault.h"

#include <gtest/gtest.h>

#include <chrono>

namespace sluice::route {
namespace {

using namespace std::chrono_literals;

constexpr int kRolls = 20'000;

config::HTTPFaultInjection delayOnly(std::optional<double> percentage, std::optional<int32_t> percent = {},
                                     config::Duration d = 2s) {
  config::HTTPFaultInjection f;
  f.delay.emplace();
  f.delay->fixedDelay = d;
  if (percentage) f.delay->percentage = config::Percent{*percentage};
  f.delay->percent = percent;
  return f;
}

config::HTTPFaultInjection abortOnly(std::optional<double> percentage, uint32_t http = 503,
                                     std::string grpc = "") {
  config::HTTPFaultInjection f;
  f.abort.emplace();
  f.abort->httpStatus = http;
  f.abort->grpcStatus = std::move(grpc);
  if (percentage) f.abort->percentage = config::Percent{*percentage};
  return f;
}

struct Counts {
  int delayed = 0;
  int aborted = 0;
  int both = 0;
};

Counts rollMany(const FaultPolicy& p, int n, uint64_t seed) {
  core::Rng rng(seed);
  Counts c;
  for (int i = 0; i < n; ++i) {
    auto d = p.roll(rng);
    c.delayed += d.delayNs != 0;
    c.aborted += d.abortStatus != 0;
    c.both += d.delayNs != 0 && d.abortStatus != 0;
  }
  return c;
}

TEST(Fault, HalfOfRequestsAreDelayedWithinOnePointFivePercent) {
  auto p = FaultPolicy::compile(delayOnly(50.0));
  ASSERT_TRUE(p.hasDelay());
  EXPECT_FALSE(p.hasAbort());
  auto c = rollMany(p, kRolls, 7);
  double share = 100.0 * c.delayed / kRolls;
  EXPECT_NEAR(share, 50.0, 1.5);
  EXPECT_EQ(c.aborted, 0);
  core::Rng rng(1);
  for (int i = 0; i < 100; ++i) {
    auto d = p.roll(rng);
    EXPECT_TRUE(d.delayNs == 0 || d.delayNs == 2'000'000'000ull) << d.delayNs;
  }
}

TEST(Fault, TenPercentAbortWithinOnePercent) {
  auto p = FaultPolicy::compile(abortOnly(10.0, 503));
  ASSERT_TRUE(p.hasAbort());
  EXPECT_FALSE(p.hasDelay());
  core::Rng rng(11);
  int aborted = 0;
  for (int i = 0; i < kRolls; ++i) {
    auto d = p.roll(rng);
    if (d.abortStatus == 0) continue;
    ++aborted;
    EXPECT_EQ(d.abortStatus, 503);
    EXPECT_EQ(d.grpcStatus, -1);
    EXPECT_EQ(d.delayNs, 0u);
  }
  EXPECT_NEAR(100.0 * aborted / kRolls, 10.0, 1.0);
}

TEST(Fault, TenthOfAPercentKeepsItsPrecision) {
  // 0.1% must not round to 0 or 1%: over 1M rolls expect 1000 +- ~4 sigma.
  auto p = FaultPolicy::compile(delayOnly(0.1));
  ASSERT_TRUE(p.hasDelay());
  auto c = rollMany(p, 1'000'000, 3);
  EXPECT_GT(c.delayed, 870);
  EXPECT_LT(c.delayed, 1130);
  // And 0.0001% (one in a million) is still a live fault.
  EXPECT_TRUE(FaultPolicy::compile(abortOnly(0.0001)).hasAbort());
}

TEST(Fault, AbsentPercentageNeverFires) {
  auto delay = FaultPolicy::compile(delayOnly(std::nullopt));
  auto abort = FaultPolicy::compile(abortOnly(std::nullopt));
  EXPECT_FALSE(delay.hasDelay());
  EXPECT_FALSE(abort.hasAbort());
  auto c1 = rollMany(delay, 5000, 5);
  auto c2 = rollMany(abort, 5000, 5);
  EXPECT_EQ(c1.delayed, 0);
  EXPECT_EQ(c2.aborted, 0);
}

TEST(Fault, HundredPercentAlwaysFiresAndZeroNever) {
  auto always = rollMany(FaultPolicy::compile(abortOnly(100.0, 418)), 2000, 9);
  EXPECT_EQ(always.aborted, 2000);
  auto never = rollMany(FaultPolicy::compile(abortOnly(0.0)), 2000, 9);
  EXPECT_EQ(never.aborted, 0);
}

TEST(Fault, DeprecatedIntegerPercent) {
  auto p = FaultPolicy::compile(delayOnly(std::nullopt, 25));
  ASSERT_TRUE(p.hasDelay());
  auto c = rollMany(p, kRolls, 21);
  EXPECT_NEAR(100.0 * c.delayed / kRolls, 25.0, 1.5);
  // `percentage` wins over the deprecated field.
  auto both = rollMany(FaultPolicy::compile(delayOnly(0.0, 100)), 2000, 21);
  EXPECT_EQ(both.delayed, 0);
}

TEST(Fault, DelayWithoutDurationIsNoDelay) {
  config::HTTPFaultInjection f = delayOnly(100.0);
  f.delay->fixedDelay.reset();
  EXPECT_FALSE(FaultPolicy::compile(f).hasDelay());
}

TEST(Fault, DelayAndAbortRollIndependently) {
  config::HTTPFaultInjection f = delayOnly(50.0);
  f.abort = abortOnly(50.0).abort;
  auto c = rollMany(FaultPolicy::compile(f), kRolls, 13);
  EXPECT_NEAR(100.0 * c.delayed / kRolls, 50.0, 1.5);
  EXPECT_NEAR(100.0 * c.aborted / kRolls, 50.0, 1.5);
  // Independent: both fire on about a quarter, not half (shared roll) or zero.
  EXPECT_NEAR(100.0 * c.both / kRolls, 25.0, 1.5);
}

TEST(Fault, GrpcAbortAnswers200WithGrpcStatus) {
  auto p = FaultPolicy::compile(abortOnly(100.0, 0, "UNAVAILABLE"));
  ASSERT_TRUE(p.hasAbort());
  core::Rng rng(1);
  auto d = p.roll(rng);
  EXPECT_EQ(d.abortStatus, 200);
  EXPECT_EQ(d.grpcStatus, 14);

  auto numeric = FaultPolicy::compile(abortOnly(100.0, 0, "8")).roll(rng);
  EXPECT_EQ(numeric.grpcStatus, 8);
  // "OK" is code 0, still an abort (the status is what the client sees).
  auto ok = FaultPolicy::compile(abortOnly(100.0, 0, "OK")).roll(rng);
  EXPECT_EQ(ok.abortStatus, 200);
  EXPECT_EQ(ok.grpcStatus, 0);
  EXPECT_FALSE(FaultPolicy::compile(abortOnly(100.0, 0, "NOT_A_CODE")).hasAbort());
}

TEST(Fault, GrpcStatusCodeMapsAllSeventeenNames) {
  const char* names[] = {"OK",
                         "CANCELLED",
                         "UNKNOWN",
                         "INVALID_ARGUMENT",
                         "DEADLINE_EXCEEDED",
                         "NOT_FOUND",
                         "ALREADY_EXISTS",
                         "PERMISSION_DENIED",
                         "RESOURCE_EXHAUSTED",
                         "FAILED_PRECONDITION",
                         "ABORTED",
                         "OUT_OF_RANGE",
                         "UNIMPLEMENTED",
                         "INTERNAL",
                         "UNAVAILABLE",
                         "DATA_LOSS",
                         "UNAUTHENTICATED"};
  for (int i = 0; i < 17; ++i) {
    EXPECT_EQ(grpcStatusCode(names[i]), i) << names[i];
    EXPECT_EQ(grpcStatusCode(std::to_string(i)), i);
  }
  EXPECT_EQ(grpcStatusCode("unavailable"), 14);
  EXPECT_EQ(grpcStatusCode("17"), -1);
  EXPECT_EQ(grpcStatusCode("-1"), -1);
  EXPECT_EQ(grpcStatusCode(""), -1);
  EXPECT_EQ(grpcStatusCode("UNAVAILABLEX"), -1);
  EXPECT_EQ(grpcStatusCode("123"), -1);
}

}  // namespace
}  // namespace sluice::route
