// Go's time.ParseDuration grammar, which is what Istio's YAML durations use:
// a sequence of decimal numbers, each with an optional fraction and a unit
// (ns, us, µs, ms, s, m, h). Negative durations are rejected: no Istio field
// accepts them.
#include <cstdint>
#include <limits>

#include "istio/duration.h"

namespace sluice::istio {

namespace {

constexpr uint64_t kMaxNs = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

uint64_t unitNanos(std::string_view u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xC2\xB5s" /* U+00B5 */ || u == "\xCE\xBCs" /* U+03BC */) return 1000;
  if (u == "ms") return 1000000;
  if (u == "s") return 1000000000ULL;
  if (u == "m") return 60ULL * 1000000000ULL;
  if (u == "h") return 3600ULL * 1000000000ULL;
  return 0;
}

bool isDigit(char ch) { return ch >= '0' && ch <= '9'; }

}  // namespace

std::expected<std::chrono::nanoseconds, std::string> parseDuration(std::string_view s) {
  if (s.empty()) return std::unexpected("empty duration");
  if (s.front() == '-') return std::unexpected("negative durations are not allowed");
  if (s.front() == '+') s.remove_prefix(1);
  if (s == "0") return std::chrono::nanoseconds(0);
  if (s.empty()) return std::unexpected("missing number");

  uint64_t total = 0;
  while (!s.empty()) {
    uint64_t whole = 0;
    bool digits = false, overflow = false;
    size_t i = 0;
    for (; i < s.size() && isDigit(s[i]); ++i) {
      digits = true;
      if (whole > (kMaxNs - 9) / 10) overflow = true;
      else whole = whole * 10 + static_cast<uint64_t>(s[i] - '0');
    }
    uint64_t frac = 0, scale = 1;
    if (i < s.size() && s[i] == '.') {
      ++i;
      for (; i < s.size() && isDigit(s[i]); ++i) {
        digits = true;
        // Digits beyond 1e18 of scale cannot change the result at ns resolution.
        if (scale < 1000000000000000000ULL) {
          frac = frac * 10 + static_cast<uint64_t>(s[i] - '0');
          scale *= 10;
        }
      }
    }
    if (!digits) return std::unexpected("expected a number");
    if (overflow) return std::unexpected("duration out of range");
    size_t u = i;
    while (u < s.size() && !isDigit(s[u]) && s[u] != '.') ++u;
    std::string_view unit = s.substr(i, u - i);
    if (unit.empty()) return std::unexpected("missing unit (one of ns, us, ms, s, m, h)");
    uint64_t mult = unitNanos(unit);
    if (mult == 0) return std::unexpected("unknown unit \"" + std::string(unit) + "\"");
    if (whole > kMaxNs / mult) return std::unexpected("duration out of range");
    uint64_t v = whole * mult;
    // frac/scale < 1, so frac * (mult/scale) stays below mult; long double keeps ns exactness here.
    v += static_cast<uint64_t>(static_cast<long double>(frac) * static_cast<long double>(mult) /
                               static_cast<long double>(scale));
    if (v > kMaxNs - total) return std::unexpected("duration out of range");
    total += v;
    s.remove_prefix(u);
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(total));
}

}  // namespace sluice::istio
