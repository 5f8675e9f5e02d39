#include "core/timer_wheel.h"

namespace sluice::core {

Timer::~Timer() { cancel(); }

void Timer::cancel() {
  if (wheel_) wheel_->unlink(*this);
}

TimerWheel::TimerWheel(const Clock& clock, uint64_t tickNs, size_t slots)
    : clock_(clock), tickNs_(tickNs), mask_(slots - 1), slots_(slots, nullptr),
      currentTick_(clock.nowNs() / tickNs) {}

TimerWheel::~TimerWheel() {
  for (Timer*& head : slots_) {
    while (head) unlink(*head);
  }
}

void TimerWheel::link(Timer& t) {
  Timer*& head = slots_[(t.deadlineNs_ / tickNs_) & mask_];
  t.prev_ = nullptr;
  t.next_ = head;
  if (head) head->prev_ = &t;
  head = &t;
  t.wheel_ = this;
  ++count_;
}

void TimerWheel::unlink(Timer& t) {
  if (t.prev_) {
    t.prev_->next_ = t.next_;
  } else {
    slots_[(t.deadlineNs_ / tickNs_) & mask_] = t.next_;
  }
  if (t.next_) t.next_->prev_ = t.prev_;
  t.prev_ = t.next_ = nullptr;
  t.wheel_ = nullptr;
  --count_;
}

void TimerWheel::schedule(Timer& t, uint64_t afterNs) {
  if (t.wheel_) t.wheel_->unlink(t);
  // Round the deadline up to a tick boundary: then every timer of the
  // current revolution in a slot advance() walks is due. An unrounded
  // deadline in the middle of the tick advance() has just reached would be
  // passed over and wait a whole revolution.
  uint64_t tick = (clock_.nowNs() + afterNs + tickNs_ - 1) / tickNs_;
  // Never place a timer in a tick already processed: it would wait a full
  // revolution.
  if (tick <= currentTick_) tick = currentTick_ + 1;
  t.deadlineNs_ = tick * tickNs_;
  link(t);
}

size_t TimerWheel::advance() {
  uint64_t now = clock_.nowNs();
  uint64_t nowTick = now / tickNs_;
  size_t fired = 0;
  // Walk at most one revolution: later ticks map onto the same slots.
  uint64_t last = nowTick;
  if (last - currentTick_ > mask_ + 1) currentTick_ = last - (mask_ + 1);
  while (currentTick_ < last && count_ > 0) {
    ++currentTick_;
    Timer* t = slots_[currentTick_ & mask_];
    while (t) {
      Timer* next = t->next_;
      if (t->deadlineNs_ <= now) {
        unlink(*t);
        ++fired;
        t->onTimer();  // may re-arm or destroy other timers
        // Restart the slot scan: the callback may have unlinked `next`.
        next = slots_[currentTick_ & mask_];
      }
      t = next;
      // Timers left in the slot belong to a later revolution; skip them by
      // scanning forward only over due ones.
      while (t && t->deadlineNs_ > now) t = t->next_;
    }
  }
  currentTick_ = last;
  return fired;
}

uint64_t TimerWheel::nextTimeoutNs(uint64_t cap) const {
  if (count_ == 0) return cap;
  // Scan forward tick by tick up to `cap`; cheap because cap is small (the
  // event loop caps it at tens of milliseconds).
  uint64_t now = clock_.nowNs();
  // The scan sees one revolution; a timer further out shares its slot with
  // nearer ticks, so never sleep past the end of that revolution.
  uint64_t revolutionNs = (mask_ + 1) * tickNs_;
  if (cap > revolutionNs) cap = revolutionNs;
  uint64_t ticks = cap / tickNs_ + 1;
  for (uint64_t i = 1; i <= ticks && i <= mask_ + 1; ++i) {
    for (Timer* t = slots_[(currentTick_ + i) & mask_]; t; t = t->next_) {
      if (t->deadlineNs_ <= (currentTick_ + i + 1) * tickNs_) {
        uint64_t d = t->deadlineNs_ > now ? t->deadlineNs_ - now : 0;
        return d < cap ? d : cap;
      }
    }
  }
  return cap;
}

}  // namespace sluice::core
