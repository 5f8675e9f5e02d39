#include "upstream_server/controls.h"

#include <gtest/gtest.h>

#include <string>

#include "upstream_server/response.h"

namespace sluice::upstream_server {
namespace {

using namespace std::chrono_literals;

http::RequestHead headWith(std::vector<http::Header> headers) {
  http::RequestHead h;
  h.method = "GET";
  h.target = "/";
  h.headers = std::move(headers);
  return h;
}

TEST(SplitTarget, OriginAndAbsoluteForms) {
  auto a = splitTarget("/p/q?x=1&y");
  EXPECT_EQ(a.path, "/p/q");
  EXPECT_EQ(a.query, "x=1&y");
  auto b = splitTarget("http://reviews:9080/r?z=2");
  EXPECT_EQ(b.path, "/r");
  EXPECT_EQ(b.query, "z=2");
  EXPECT_EQ(splitTarget("http://reviews:9080").path, "/");
  EXPECT_EQ(splitTarget("http://h?q=1").query, "q=1");
  EXPECT_EQ(splitTarget("*").path, "/");
  EXPECT_EQ(splitTarget("/a?b").query, "b");
}

TEST(ParseControls, QueryControls) {
  auto c = parseControls(headWith({}), "status=418&delay=20ms&close=after&size=7&fail_first=3&chunked=1&other=z");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->status, 418);
  EXPECT_EQ(c->delay, 20ms);
  EXPECT_EQ(c->close, CloseMode::After);
  EXPECT_EQ(c->size, 7u);
  EXPECT_EQ(c->failFirst, 3u);
  EXPECT_TRUE(c->chunked);
}

TEST(ParseControls, HeaderBeatsQuery) {
  auto c = parseControls(headWith({{"X-Upstream-Status", "503"}, {"x-upstream-close", "BEFORE"}}),
                         "status=404&close=after");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->status, 503);
  EXPECT_EQ(c->close, CloseMode::Before);
}

TEST(ParseControls, DefaultsWhenAbsent) {
  auto c = parseControls(headWith({{"x-upstream-name", "ignored"}, {"accept", "*/*"}}), "a=b");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->status, 0);
  EXPECT_EQ(c->delay, 0ns);
  EXPECT_EQ(c->close, CloseMode::None);
  EXPECT_FALSE(c->size);
  EXPECT_FALSE(c->failFirst);
  EXPECT_FALSE(c->chunked);
}

TEST(ParseControls, RejectsBadValues) {
  for (const char* q : {"status=99", "status=600", "status=2x", "delay=1", "delay=10m", "close=now",
                        "size=-1", "fail_first=x", "chunked=maybe"}) {
    EXPECT_FALSE(parseControls(headWith({}), q).has_value()) << q;
  }
}

TEST(ParseControls, ResponseHeaders) {
  auto c = parseControls(headWith({{"x-upstream-response-header", "x-a: 1"},
                                   {"x-upstream-response-header", "Cache-Control:no-store"}}),
                         "");
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ(c->extraHeaders.size(), 2u);
  EXPECT_EQ(c->extraHeaders[0].first, "x-a");
  EXPECT_EQ(c->extraHeaders[0].second, "1");
  EXPECT_EQ(c->extraHeaders[1].first, "Cache-Control");
  EXPECT_EQ(c->extraHeaders[1].second, "no-store");
  EXPECT_FALSE(parseControls(headWith({{"x-upstream-response-header", "bad name: v"}}), "").has_value());
  EXPECT_FALSE(parseControls(headWith({{"x-upstream-response-header", ": v"}}), "").has_value());
}

TEST(AppendJsonString, EscapesControlQuotesAndHighBytes) {
  std::string out;
  appendJsonString(out, std::string_view("a\"b\\c\n\x01\xff", 8));
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\u0001\\u00ff\"");
}

TEST(AppendHead, Http10KeepAliveAndExtras) {
  std::vector<std::pair<std::string_view, std::string_view>> extra{{"x-k", "v"}};
  std::string out;
  HeadSpec spec;
  spec.status = 503;
  spec.contentType = "text/plain";
  spec.contentLength = 0;
  spec.http10 = true;
  spec.upstreamName = "n";
  spec.extraHeaders = &extra;
  appendHead(out, spec);
  EXPECT_EQ(out,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nx-upstream-name: n\r\n"
            "content-length: 0\r\nconnection: keep-alive\r\nx-k: v\r\n\r\n");
}

}  // namespace
}  // namespace sluice::upstream_server
