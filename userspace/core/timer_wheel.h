// A hashed timing wheel: O(1) schedule and cancel, intrusive timers.
//
// A worker has thousands of armed timers (connect, idle, route timeouts,
// later fault delays) and almost all are cancelled before they fire, so
// cancel must be cheap and nothing may allocate per timer. Timers longer
// than one revolution wait in their slot for more revolutions.
#pragma once

#include <cstdint>
#include <vector>

#include "core/clock.h"

namespace sluice::core {

class TimerWheel;

class Timer {
 public:
  Timer() = default;
  virtual ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  bool armed() const { return wheel_ != nullptr; }
  void cancel();

 protected:
  virtual void onTimer() = 0;

 private:
  friend class TimerWheel;
  TimerWheel* wheel_ = nullptr;
  Timer* prev_ = nullptr;
  Timer* next_ = nullptr;
  uint64_t deadlineNs_ = 0;
};

// A timer that calls a member function of its owner.
template <class Owner, void (Owner::*Fn)()>
class MemberTimer final : public Timer {
 public:
  explicit MemberTimer(Owner* o) : owner_(o) {}

 private:
  void onTimer() override { (owner_->*Fn)(); }
  Owner* owner_;
};

class TimerWheel {
 public:
  // tickNs: resolution; slots: a power of two.
  TimerWheel(const Clock& clock, uint64_t tickNs = 1'000'000, size_t slots = 4096);
  ~TimerWheel();

  // (Re)arms t to fire after `afterNs`.
  void schedule(Timer& t, uint64_t afterNs);
  // Fires every timer whose deadline has passed. Returns how many fired.
  size_t advance();
  // Nanoseconds until the next tick that may hold a due timer (capped at
  // `cap`); 0 when something is already due.
  uint64_t nextTimeoutNs(uint64_t cap) const;
  size_t size() const { return count_; }
  const Clock& clock() const { return clock_; }

 private:
  friend class Timer;
  void unlink(Timer& t);
  void link(Timer& t);

  const Clock& clock_;
  uint64_t tickNs_;
  size_t mask_;
  std::vector<Timer*> slots_;  // heads of intrusive lists
  uint64_t currentTick_;       // last tick processed
  size_t count_ = 0;
};

}  // namespace sluice::core
