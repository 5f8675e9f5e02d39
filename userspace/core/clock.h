// Time sources. Logic that tests must control takes a Clock& instead of
// reading a global clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace sluice::core {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds.
  virtual uint64_t nowNs() const = 0;
};

class SteadyClock final : public Clock {
 public:
  uint64_t nowNs() const override {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
  }
};

class FakeClock final : public Clock {
 public:
  uint64_t nowNs() const override { return now_; }
  void advance(std::chrono::nanoseconds d) { now_ += uint64_t(d.count()); }
  void set(uint64_t ns) { now_ = ns; }

 private:
  uint64_t now_ = 1'000'000'000ull;
};

// splitmix64: small, fast, good enough for load balancing and sampling.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n).
  uint64_t below(uint64_t n) { return n == 0 ? 0 : uint64_t((__uint128_t(next()) * n) >> 64); }

 private:
  uint64_t state_;
};

}  // namespace sluice::core
