#include "core/timer_wheel.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace sluice::core {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMs = 1'000'000;

// A timer that runs a callback; the test owns the fire log.
class FnTimer final : public Timer {
 public:
  explicit FnTimer(std::function<void()> fn) : fn_(std::move(fn)) {}

 private:
  void onTimer() override { fn_(); }
  std::function<void()> fn_;
};

class TimerWheelTest : public ::testing::Test {
 protected:
  // Advances the fake clock in 1 ms steps (the way a busy loop would see
  // time pass) and calls advance() at every step.
  void stepTo(uint64_t offsetNs, uint64_t stepNs = kMs) {
    while (clock_.nowNs() < start_ + offsetNs) {
      uint64_t next = std::min(clock_.nowNs() + stepNs, start_ + offsetNs);
      clock_.set(next);
      wheel_.advance();
    }
  }
  FakeClock clock_;
  uint64_t start_ = clock_.nowNs();
  TimerWheel wheel_{clock_, kMs, 4096};
  std::vector<std::string> fired_;
};

TEST_F(TimerWheelTest, FiresAtItsDeadlineAndNotBefore) {
  FnTimer t([&] { fired_.push_back("t"); });
  wheel_.schedule(t, 10 * kMs);
  EXPECT_TRUE(t.armed());
  EXPECT_EQ(wheel_.size(), 1u);
  stepTo(9 * kMs);
  EXPECT_TRUE(fired_.empty());
  stepTo(10 * kMs);
  EXPECT_EQ(fired_, std::vector<std::string>{"t"});
  EXPECT_FALSE(t.armed());
  EXPECT_EQ(wheel_.size(), 0u);
  stepTo(100 * kMs);
  EXPECT_EQ(fired_.size(), 1u) << "a one-shot timer fired twice";
}

// The loop wakes for unrelated I/O between a deadline's tick start and the
// deadline itself. A timer of that tick must still fire on a later advance,
// not one revolution (4 s here) later.
TEST_F(TimerWheelTest, WakeInsideTheDeadlineTickDoesNotSkipTheTimer) {
  clock_.advance(300us);  // mid-tick, as real clocks are
  FnTimer t([&] { fired_.push_back("t"); });
  wheel_.schedule(t, 5 * kMs);  // deadline 5.3 ms after start
  clock_.set(start_ + 5 * kMs + 100'000);  // 5.1 ms: same tick, not yet due
  wheel_.advance();
  stepTo(7 * kMs);
  EXPECT_EQ(fired_.size(), 1u) << "timer due at 5.3 ms had not fired at 7 ms";
}

// The retry back-off case: a sub-millisecond timer armed while the wheel's
// last processed tick is behind the clock (completions are handled before
// advance() runs), then a wake a few microseconds later.
TEST_F(TimerWheelTest, SubTickTimerArmedBeforeAdvanceFiresOnTheNextTick) {
  clock_.set(start_ + 1 * kMs + 200'000);  // 1.2 ms, advance() not yet called
  FnTimer t([&] { fired_.push_back("t"); });
  wheel_.schedule(t, 100'000);  // 0.1 ms
  clock_.set(start_ + 1 * kMs + 250'000);
  wheel_.advance();
  stepTo(3 * kMs);
  EXPECT_EQ(fired_.size(), 1u) << "0.1 ms timer had not fired 1.8 ms later";
}

TEST_F(TimerWheelTest, CancelledTimerNeverFires) {
  FnTimer a([&] { fired_.push_back("a"); });
  FnTimer b([&] { fired_.push_back("b"); });
  wheel_.schedule(a, 5 * kMs);
  wheel_.schedule(b, 5 * kMs);
  a.cancel();
  EXPECT_FALSE(a.armed());
  EXPECT_EQ(wheel_.size(), 1u);
  a.cancel();  // idempotent
  EXPECT_EQ(wheel_.size(), 1u);
  stepTo(20 * kMs);
  EXPECT_EQ(fired_, std::vector<std::string>{"b"});
}

TEST_F(TimerWheelTest, DestroyedTimerLeavesTheWheel) {
  {
    FnTimer a([&] { fired_.push_back("a"); });
    wheel_.schedule(a, 5 * kMs);
    EXPECT_EQ(wheel_.size(), 1u);
  }
  EXPECT_EQ(wheel_.size(), 0u);
  stepTo(10 * kMs);
  EXPECT_TRUE(fired_.empty());
}

TEST_F(TimerWheelTest, RescheduleMovesTheDeadline) {
  FnTimer t([&] { fired_.push_back("t"); });
  wheel_.schedule(t, 5 * kMs);
  stepTo(3 * kMs);
  wheel_.schedule(t, 10 * kMs);  // now due at 13 ms
  EXPECT_EQ(wheel_.size(), 1u);
  stepTo(12 * kMs);
  EXPECT_TRUE(fired_.empty());
  stepTo(13 * kMs);
  EXPECT_EQ(fired_.size(), 1u);
}

TEST_F(TimerWheelTest, FiresInDeadlineOrderWhenAdvancedInOneJump) {
  FnTimer a([&] { fired_.push_back("30"); });
  FnTimer b([&] { fired_.push_back("10"); });
  FnTimer c([&] { fired_.push_back("20"); });
  wheel_.schedule(a, 30 * kMs);
  wheel_.schedule(b, 10 * kMs);
  wheel_.schedule(c, 20 * kMs);
  clock_.advance(40ms);
  EXPECT_EQ(wheel_.advance(), 3u);
  EXPECT_EQ(fired_, (std::vector<std::string>{"10", "20", "30"}));
}

// An 8-slot wheel: a 20 ms timer shares its slot with ticks 4 and 12 and
// must sit out those revolutions.
TEST(TimerWheelSmall, LongTimerWaitsForItsRevolution) {
  FakeClock clock;
  const uint64_t start = clock.nowNs();
  TimerWheel wheel(clock, kMs, 8);
  int fired = 0;
  uint64_t firedAt = 0;
  FnTimer t([&] {
    ++fired;
    firedAt = clock.nowNs() - start;
  });
  wheel.schedule(t, 20 * kMs);
  for (int i = 0; i < 40; ++i) {
    clock.advance(1ms);
    wheel.advance();
  }
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(firedAt, 20 * kMs);
}

TEST(TimerWheelSmall, JumpLongerThanARevolutionFiresEverythingDue) {
  FakeClock clock;
  TimerWheel wheel(clock, kMs, 8);
  int fired = 0;
  FnTimer a([&] { ++fired; });
  FnTimer b([&] { ++fired; });
  FnTimer later([&] { ++fired; });
  wheel.schedule(a, 3 * kMs);
  wheel.schedule(b, 50 * kMs);
  wheel.schedule(later, 500 * kMs);
  clock.advance(100ms);
  EXPECT_EQ(wheel.advance(), 2u);
  EXPECT_EQ(fired, 2);
  EXPECT_TRUE(later.armed());
  clock.advance(400ms);
  EXPECT_EQ(wheel.advance(), 1u);
  EXPECT_EQ(fired, 3);
}

TEST_F(TimerWheelTest, CallbackMayReArmItself) {
  int n = 0;
  FnTimer* self = nullptr;
  FnTimer t([&] {
    ++n;
    wheel_.schedule(*self, 5 * kMs);
  });
  self = &t;
  wheel_.schedule(t, 5 * kMs);
  stepTo(50 * kMs);
  EXPECT_EQ(n, 10);
  EXPECT_TRUE(t.armed());
}

TEST_F(TimerWheelTest, ZeroDelayReArmDoesNotSpinInsideOneAdvance) {
  int n = 0;
  FnTimer* self = nullptr;
  FnTimer t([&] {
    ++n;
    wheel_.schedule(*self, 0);
  });
  self = &t;
  wheel_.schedule(t, 1 * kMs);
  clock_.advance(1ms);
  EXPECT_EQ(wheel_.advance(), 1u);
  EXPECT_EQ(n, 1);
  clock_.advance(1ms);
  EXPECT_EQ(wheel_.advance(), 1u);
  EXPECT_EQ(n, 2);
}

TEST_F(TimerWheelTest, CallbackMayCancelAnotherDueTimer) {
  FnTimer* victim = nullptr;
  FnTimer a([&] {
    fired_.push_back("a");
    victim->cancel();
  });
  FnTimer b([&] { fired_.push_back("b"); });
  victim = &b;
  wheel_.schedule(b, 5 * kMs);
  wheel_.schedule(a, 5 * kMs);  // same tick; linked at the head, runs first
  stepTo(10 * kMs);
  EXPECT_EQ(fired_, std::vector<std::string>{"a"});
  EXPECT_EQ(wheel_.size(), 0u);
}

TEST_F(TimerWheelTest, NextTimeoutNs) {
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 50 * kMs) << "empty wheel";
  FnTimer far([] {});
  wheel_.schedule(far, 200 * kMs);
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 50 * kMs) << "capped";
  FnTimer near([] {});
  wheel_.schedule(near, 10 * kMs);
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 10 * kMs);
  clock_.advance(4ms);
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 6 * kMs);
  clock_.advance(7ms);  // overdue, advance() not yet called
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 0u);
  wheel_.advance();
  EXPECT_EQ(wheel_.nextTimeoutNs(50 * kMs), 50 * kMs);
}

// Sleeping for nextTimeoutNs must never carry the loop past a deadline, even
// when the cap is longer than one revolution of the wheel.
TEST(TimerWheelSmall, NextTimeoutNeverOvershootsADeadline) {
  FakeClock clock;
  TimerWheel wheel(clock, kMs, 8);
  int fired = 0;
  FnTimer t([&] { ++fired; });
  wheel.schedule(t, 20 * kMs);
  uint64_t slept = 0;
  for (int i = 0; i < 100 && fired == 0; ++i) {
    uint64_t d = wheel.nextTimeoutNs(50 * kMs);
    EXPECT_LE(slept + d, 20 * kMs) << "would sleep past the deadline";
    clock.advance(std::chrono::nanoseconds(d));
    slept += d;
    wheel.advance();
  }
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(slept, 20 * kMs);
}

}  // namespace
}  // namespace sluice::core
