#include <gtest/gtest.h>

#include "istio/duration.h"

namespace sluice::istio {
namespace {

using namespace std::chrono_literals;

std::chrono::nanoseconds ok(std::string_view s) {
  auto d = parseDuration(s);
  EXPECT_TRUE(d.has_value()) << s << ": " << (d ? "" : d.error());
  return d.value_or(std::chrono::nanoseconds(-1));
}

TEST(ParseDuration, GoUnits) {
  EXPECT_EQ(ok("30ms"), 30ms);
  EXPECT_EQ(ok("10s"), 10s);
  EXPECT_EQ(ok("5m"), 5min);
  EXPECT_EQ(ok("2h"), 2h);
  EXPECT_EQ(ok("250ns"), 250ns);
  EXPECT_EQ(ok("7us"), 7us);
  EXPECT_EQ(ok("7\xC2\xB5s"), 7us);  // micro sign
  EXPECT_EQ(ok("7\xCE\xBCs"), 7us);  // Greek mu
}

TEST(ParseDuration, DecimalsAndSequences) {
  EXPECT_EQ(ok("1.5s"), 1500ms);
  EXPECT_EQ(ok(".5s"), 500ms);
  EXPECT_EQ(ok("1.s"), 1s);
  EXPECT_EQ(ok("0.001s"), 1ms);
  EXPECT_EQ(ok("2h45m"), 2h + 45min);
  EXPECT_EQ(ok("1h2m3s4ms5us6ns"), 1h + 2min + 3s + 4ms + 5us + 6ns);
  EXPECT_EQ(ok("1500ms"), 1500ms);
  EXPECT_EQ(ok("+3s"), 3s);
}

TEST(ParseDuration, ZeroIsAllowed) {
  EXPECT_EQ(ok("0s"), 0s);
  EXPECT_EQ(ok("0"), 0s);
}

TEST(ParseDuration, Rejects) {
  for (std::string_view bad : {"", "-1s", "10", "1.5", "s", "ms", ".s", "1x", "1 s", "1s ", "1d", "1sec",
                               "abc", "1..5s", "9999999999999999999h", "3000000h"}) {
    EXPECT_FALSE(parseDuration(bad).has_value()) << "accepted \"" << bad << "\"";
  }
  EXPECT_EQ(parseDuration("-1s").error(), "negative durations are not allowed");
}

}  // namespace
}  // namespace sluice::istio
