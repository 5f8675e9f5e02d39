#include "http/h2.h"

#include <gtest/gtest.h>

namespace sluice::http {
namespace {

TEST(H2RequestHead, BuildsTheHttp1FormOfARequest) {
  Limits limits;
  H2RequestHead h(limits);
  for (auto [n, v] : {std::pair{":method", "POST"}, {":scheme", "http"}, {":path", "/a?b"},
                      {":authority", "svc:80"}, {"cookie", "a=1"}, {"x-y", "z"}, {"cookie", "b=2"},
                      {"content-length", "12"}, {"expect", "100-continue"}}) {
    ASSERT_TRUE(h.add(n, v));
  }
  RequestHead head;
  ASSERT_TRUE(h.build(false, head));
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.target, "/a?b");
  EXPECT_EQ(head.host, "svc:80");
  ASSERT_EQ(head.headers.size(), 5u);
  EXPECT_EQ(head.headers[0].name, "host");
  EXPECT_EQ(head.headers[0].value, "svc:80");
  EXPECT_EQ(head.headers[1].name, "cookie");
  EXPECT_EQ(head.headers[1].value, "a=1; b=2");
  EXPECT_EQ(head.headers[2].name, "x-y");
  EXPECT_EQ(head.framing.kind, Framing::Kind::ContentLength);
  EXPECT_EQ(head.framing.length, 12u);
  EXPECT_TRUE(head.expectContinue);
}

TEST(H2RequestHead, FramingHostFallbackAndMissingPseudoHeaders) {
  Limits limits;
  {
    H2RequestHead h(limits);
    h.add(":method", "GET");
    h.add(":path", "/");
    h.add("host", "fromhost");
    RequestHead head;
    ASSERT_TRUE(h.build(true, head));
    EXPECT_EQ(head.host, "fromhost") << "no :authority: the host field";
    EXPECT_EQ(head.framing.kind, Framing::Kind::None);
    ASSERT_TRUE(h.build(false, head));
    EXPECT_EQ(head.framing.kind, Framing::Kind::Chunked) << "a body without a length";
  }
  {
    H2RequestHead h(limits);
    h.add(":method", "GET");
    h.add(":authority", "a");
    RequestHead head;
    EXPECT_FALSE(h.build(true, head)) << "no :path";
  }
  {
    H2RequestHead h(limits);
    h.add(":method", "GET");
    h.add(":path", "/");
    h.add(":authority", "a");
    h.add("content-length", "");
    RequestHead head;
    EXPECT_FALSE(h.build(false, head)) << "an empty content-length";
  }
}

TEST(H2RequestHead, ListsOverTheLimitsOverflow) {
  Limits limits;
  limits.maxHeadBytes = 100;
  limits.maxHeaders = 3;
  H2RequestHead bytes(limits);
  EXPECT_TRUE(bytes.add(":method", "GET"));
  EXPECT_FALSE(bytes.add("x-big", std::string(100, 'z')));
  EXPECT_TRUE(bytes.overflow());
  EXPECT_FALSE(bytes.add("x", "y")) << "dropped from then on";
  H2RequestHead count(limits);
  int accepted = 0;
  for (int i = 0; i < 10; ++i) accepted += count.add("x", "y");
  EXPECT_EQ(accepted, 7) << "maxHeaders plus the four pseudo-header fields";
  EXPECT_TRUE(count.overflow());
}

}  // namespace
}  // namespace sluice::http
