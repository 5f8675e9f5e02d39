#include "http/header_map.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice::http {
namespace {

std::string lines(const HeaderMap& m) {
  std::string out;
  m.appendHttp1(out);
  return out;
}

TEST(HeaderMap, LookupIsCaseInsensitiveAndFindsTheFirst) {
  HeaderMap m{{"Host", "a"}, {"X-Tag", "one"}, {"x-tag", "two"}};
  ASSERT_NE(m.find("HOST"), nullptr);
  EXPECT_EQ(m.get("host"), "a");
  EXPECT_EQ(m.get("X-TAG"), "one");
  EXPECT_EQ(m.get("absent"), "");
  EXPECT_FALSE(m.has("x-ta"));
  EXPECT_EQ(m.size(), 3u);
}

TEST(HeaderMap, RemoveSetAndAddKeepTheOrderOfTheRest) {
  HeaderMap m{{"A", "1"}, {"B", "2"}, {"a", "3"}, {"C", "4"}};
  EXPECT_EQ(m.remove("a"), 2u);
  EXPECT_EQ(m.remove("a"), 0u);
  m.set("c", "5");
  m.add("d", "6");
  EXPECT_EQ(lines(m), "B: 2\r\nc: 5\r\nd: 6\r\n");
  EXPECT_EQ(m.http1Size(), lines(m).size());
}

TEST(HeaderMap, CopiedValuesOutliveTheirSourceAndSurviveAMove) {
  HeaderMap m;
  {
    std::string made = "generated-" + std::to_string(42);
    m.addCopy("x-made", made);
  }
  for (int i = 0; i < 100; ++i) m.addCopy("x-n", std::to_string(i));  // grows the field list
  HeaderMap moved = std::move(m);
  EXPECT_EQ(moved.get("x-made"), "generated-42");
  EXPECT_EQ(moved.size(), 101u);
}

TEST(HeaderMap, TakesAndGivesBackTheParsersList) {
  std::vector<Header> parsed{{"Host", "a"}, {"Accept", "*/*"}};
  parsed.reserve(64);
  const Header* storage = parsed.data();
  HeaderMap m(std::move(parsed));
  EXPECT_EQ(m.get("accept"), "*/*");
  std::vector<Header> back = m.takeFields();
  EXPECT_EQ(back.data(), storage) << "the list's capacity is reused, not copied";
  EXPECT_EQ(back.size(), 2u);
}

}  // namespace
}  // namespace sluice::http
