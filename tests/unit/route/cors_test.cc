#include "route/cors.h"

#include <gtest/gtest.h>

#include <chrono>

#include "builders.h"

namespace sluice::route {
namespace {

using namespace testing;  // NOLINT: the builders
using Kind = CorsPolicy::Decision::Kind;

CorsPolicy compiled(const config::CorsPolicy& spec) {
  auto p = CorsPolicy::compile(spec);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error());
  return p ? *p : CorsPolicy{};
}

// Header storage the views in `list` point into.
struct RequestHeaders {
  std::vector<std::pair<std::string, std::string>> store;
  http::HeaderMap list;
  RequestHeaders(std::initializer_list<std::pair<std::string, std::string>> hs) : store(hs) {
    for (const auto& [n, v] : store) list.add(n, v);
  }
};

// The fields as HTTP/1.1 lines, in order.
std::string text(const http::HeaderMap& m) {
  std::string out;
  m.appendHttp1(out);
  return out;
}

config::CorsPolicy fullPolicy() {
  config::CorsPolicy c;
  c.allowOrigins = {exact("https://app.example.com"), prefix("https://dev."), regex(R"(https://[a-z]+\.corp\.io)")};
  c.allowMethods = {"GET", "POST"};
  c.allowHeaders = {"x-token", "content-type"};
  c.exposeHeaders = {"x-trace", "x-req"};
  c.maxAge = std::chrono::hours(24);
  c.allowCredentials = true;
  return c;
}

TEST(Cors, NoOriginIsNotCors) {
  auto p = compiled(fullPolicy());
  RequestHeaders h{{"host", "api"}, {"x-token", "1"}};
  auto d = p.evaluate("GET", h.list);
  EXPECT_EQ(d.kind, Kind::NotCors);
  EXPECT_FALSE(d.originAllowed);
  EXPECT_EQ(text(d.responseHeaders), "");
  // OPTIONS with a request method but no Origin is not a preflight either.
  RequestHeaders pre{{"access-control-request-method", "POST"}};
  EXPECT_EQ(p.evaluate("OPTIONS", pre.list).kind, Kind::NotCors);
}

TEST(Cors, AllowedOriginsEchoTheOriginForEachMatchKind) {
  config::CorsPolicy spec = fullPolicy();
  spec.allowCredentials.reset();
  spec.exposeHeaders.clear();
  auto p = compiled(spec);
  for (std::string origin : {"https://app.example.com", "https://dev.anything", "https://team.corp.io"}) {
    RequestHeaders h{{"Origin", origin}};
    auto d = p.evaluate("GET", h.list);
    EXPECT_EQ(d.kind, Kind::Forward) << origin;
    EXPECT_TRUE(d.originAllowed) << origin;
    EXPECT_EQ(text(d.responseHeaders), "access-control-allow-origin: " + origin + "\r\n");
  }
}

TEST(Cors, DisallowedOriginsForwardWithoutHeaders) {
  auto p = compiled(fullPolicy());
  // exact is whole-string, regex is a full match, prefix is case-sensitive.
  for (std::string origin : {"https://app.example.com.evil", "https://team.corp.io.evil", "https://DEV.x",
                             "http://app.example.com"}) {
    RequestHeaders h{{"origin", origin}};
    auto d = p.evaluate("GET", h.list);
    EXPECT_EQ(d.kind, Kind::Forward) << origin;
    EXPECT_FALSE(d.originAllowed) << origin;
    EXPECT_EQ(text(d.responseHeaders), "") << origin;
  }
}

TEST(Cors, ActualRequestCarriesCredentialsAndExposeHeaders) {
  auto p = compiled(fullPolicy());
  RequestHeaders h{{"origin", "https://app.example.com"}};
  auto d = p.evaluate("POST", h.list);
  EXPECT_EQ(d.kind, Kind::Forward);
  EXPECT_EQ(text(d.responseHeaders),
            "access-control-allow-origin: https://app.example.com\r\n"
            "access-control-allow-credentials: true\r\n"
            "access-control-expose-headers: x-trace,x-req\r\n");
}

TEST(Cors, AllowedPreflightIsAnsweredWithPolicyHeaders) {
  auto p = compiled(fullPolicy());
  RequestHeaders h{{"origin", "https://dev.web"}, {"access-control-request-method", "POST"}};
  auto d = p.evaluate("OPTIONS", h.list);
  EXPECT_EQ(d.kind, Kind::Preflight);
  EXPECT_TRUE(d.originAllowed);
  EXPECT_EQ(text(d.responseHeaders),
            "access-control-allow-origin: https://dev.web\r\n"
            "access-control-allow-credentials: true\r\n"
            "access-control-allow-methods: GET,POST\r\n"
            "access-control-allow-headers: x-token,content-type\r\n"
            "access-control-max-age: 86400\r\n");
}

TEST(Cors, PreflightOmitsEmptyListsAndUnsetFields) {
  config::CorsPolicy spec;
  spec.allowOrigins = {exact("https://a")};
  spec.allowMethods = {"PUT"};
  spec.allowCredentials = false;
  auto p = compiled(spec);
  RequestHeaders h{{"origin", "https://a"}, {"access-control-request-method", "PUT"}};
  auto d = p.evaluate("OPTIONS", h.list);
  EXPECT_EQ(d.kind, Kind::Preflight);
  EXPECT_EQ(text(d.responseHeaders),
            "access-control-allow-origin: https://a\r\n"
            "access-control-allow-methods: PUT\r\n");
}

TEST(Cors, OptionsWithoutRequestMethodIsAnActualRequest) {
  auto p = compiled(fullPolicy());
  RequestHeaders empty{{"origin", "https://app.example.com"}, {"access-control-request-method", ""}};
  auto d = p.evaluate("OPTIONS", empty.list);
  EXPECT_EQ(d.kind, Kind::Forward);
  EXPECT_NE(text(d.responseHeaders).find("access-control-expose-headers"), std::string::npos);
  EXPECT_EQ(text(d.responseHeaders).find("access-control-allow-methods"), std::string::npos);
  // A GET carrying Access-Control-Request-Method is still not a preflight.
  RequestHeaders get{{"origin", "https://app.example.com"}, {"access-control-request-method", "GET"}};
  EXPECT_EQ(p.evaluate("GET", get.list).kind, Kind::Forward);
}

TEST(Cors, UnmatchedPreflightForwardsByDefaultAndUnderForward) {
  RequestHeaders h{{"origin", "https://evil"}, {"access-control-request-method", "GET"}};
  for (std::string mode : {"", "FORWARD"}) {
    config::CorsPolicy spec = fullPolicy();
    spec.unmatchedPreflights = mode;
    auto d = compiled(spec).evaluate("OPTIONS", h.list);
    EXPECT_EQ(d.kind, Kind::Forward) << mode;
    EXPECT_FALSE(d.originAllowed);
    EXPECT_EQ(text(d.responseHeaders), "");
  }
}

TEST(Cors, UnmatchedPreflightUnderIgnoreIsAnsweredBare) {
  config::CorsPolicy spec = fullPolicy();
  spec.unmatchedPreflights = "IGNORE";
  auto p = compiled(spec);
  RequestHeaders h{{"origin", "https://evil"}, {"access-control-request-method", "GET"}};
  auto d = p.evaluate("OPTIONS", h.list);
  EXPECT_EQ(d.kind, Kind::PreflightBare);
  EXPECT_FALSE(d.originAllowed);
  EXPECT_EQ(text(d.responseHeaders), "");
  // IGNORE changes nothing for an allowed origin.
  RequestHeaders ok{{"origin", "https://app.example.com"}, {"access-control-request-method", "GET"}};
  EXPECT_EQ(p.evaluate("OPTIONS", ok.list).kind, Kind::Preflight);
}

TEST(Cors, HeaderNamesAreCaseInsensitive) {
  auto p = compiled(fullPolicy());
  RequestHeaders h{{"ORIGIN", "https://app.example.com"}, {"Access-Control-Request-METHOD", "POST"}};
  auto d = p.evaluate("OPTIONS", h.list);
  EXPECT_EQ(d.kind, Kind::Preflight);
  EXPECT_TRUE(text(d.responseHeaders).starts_with("access-control-allow-origin: https://app.example.com\r\n"));
}

TEST(Cors, NoAllowOriginsAllowsNothing) {
  config::CorsPolicy spec = fullPolicy();
  spec.allowOrigins.clear();
  RequestHeaders h{{"origin", "https://app.example.com"}};
  auto d = compiled(spec).evaluate("GET", h.list);
  EXPECT_EQ(d.kind, Kind::Forward);
  EXPECT_FALSE(d.originAllowed);
}

TEST(Cors, MaxAgeIsWholeSeconds) {
  config::CorsPolicy spec;
  spec.allowOrigins = {prefix("")};
  spec.maxAge = std::chrono::milliseconds(1500);
  RequestHeaders h{{"origin", "https://x"}, {"access-control-request-method", "GET"}};
  EXPECT_EQ(text(compiled(spec).evaluate("OPTIONS", h.list).responseHeaders),
            "access-control-allow-origin: https://x\r\naccess-control-max-age: 1\r\n");
}

TEST(Cors, CompileRejectsBadRegexAndUnknownMode) {
  config::CorsPolicy bad;
  bad.allowOrigins = {regex("(")};
  auto p = CorsPolicy::compile(bad);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("allowOrigins[0]"), std::string::npos) << p.error();

  config::CorsPolicy mode;
  mode.unmatchedPreflights = "DROP";
  EXPECT_FALSE(CorsPolicy::compile(mode).has_value());
}

}  // namespace
}  // namespace sluice::route
