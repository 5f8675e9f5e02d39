#include "route/match.h"

#include <gtest/gtest.h>

#include "builders.h"
#include "route/table.h"

namespace sluice::route {
namespace {

using namespace testing;  // NOLINT: the builders

std::shared_ptr<const CompiledMatch> compiled(const config::HTTPMatchRequest& m) {
  auto c = CompiledMatch::compile(m);
  EXPECT_TRUE(c.has_value()) << (c ? "" : c.error());
  return c ? *c : nullptr;
}

bool matches(const config::HTTPMatchRequest& m, Request& r) { return compiled(m)->matches(r.view()); }

TEST(CompiledMatch, EmptyBlockMatchesEverything) {
  Request r;
  EXPECT_TRUE(matches(config::HTTPMatchRequest{}, r));
}

TEST(CompiledMatch, UriExactIgnoresQueryString) {
  config::HTTPMatchRequest m;
  m.uri = exact("/productpage");
  Request r;
  r.path = "/productpage?u=normal";
  EXPECT_TRUE(matches(m, r));
  r.path = "/productpage/";
  EXPECT_FALSE(matches(m, r));
  r.path = "/Productpage";
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, UriPrefixIsARawStringPrefix) {
  config::HTTPMatchRequest m;
  m.uri = prefix("/api/v1");
  Request r;
  r.path = "/api/v1";
  EXPECT_TRUE(matches(m, r));
  r.path = "/api/v1beta/x";  // raw prefix, not path segments
  EXPECT_TRUE(matches(m, r));
  r.path = "/api/v2";
  EXPECT_FALSE(matches(m, r));
  r.path = "/API/v1";
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, UriRegexIsAFullMatchOnThePath) {
  config::HTTPMatchRequest m;
  m.uri = regex("/users/[0-9]+");
  Request r;
  r.path = "/users/42?x=1";
  EXPECT_TRUE(matches(m, r));
  r.path = "/users/42/extra";  // a partial match is not enough
  EXPECT_FALSE(matches(m, r));
  r.path = "/x/users/42";
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, IgnoreUriCaseAppliesToExactAndPrefix) {
  config::HTTPMatchRequest m;
  m.uri = exact("/Login");
  m.ignoreUriCase = true;
  Request r;
  r.path = "/LOGIN";
  EXPECT_TRUE(matches(m, r));
  r.path = "/login?next=/";
  EXPECT_TRUE(matches(m, r));
  r.path = "/logins";
  EXPECT_FALSE(matches(m, r));

  config::HTTPMatchRequest p;
  p.uri = prefix("/Static/");
  p.ignoreUriCase = true;
  r.path = "/sTaTiC/app.js";
  EXPECT_TRUE(matches(p, r));
  r.path = "/stat/app.js";
  EXPECT_FALSE(matches(p, r));
}

TEST(CompiledMatch, MethodSchemeAuthority) {
  config::HTTPMatchRequest m;
  m.method = exact("POST");
  Request r;
  EXPECT_FALSE(matches(m, r));
  r.method = "POST";
  EXPECT_TRUE(matches(m, r));

  config::HTTPMatchRequest s;
  s.scheme = exact("https");
  EXPECT_FALSE(matches(s, r));
  r.scheme = "https";
  EXPECT_TRUE(matches(s, r));

  config::HTTPMatchRequest a;
  a.authority = prefix("reviews");
  r.authority = "reviews.default:9080";
  EXPECT_TRUE(matches(a, r));
  a.authority = exact("reviews");  // the Host value as sent, port included
  EXPECT_FALSE(matches(a, r));
  a.authority = regex("reviews(\\.default)?:9080");
  EXPECT_TRUE(matches(a, r));
}

TEST(CompiledMatch, HeaderKinds) {
  config::HTTPMatchRequest m;
  m.headers["end-user"] = exact("jason");
  Request r;
  EXPECT_FALSE(matches(m, r));  // absent
  r.header("End-User", "jason");
  EXPECT_TRUE(matches(m, r));  // names are case-insensitive

  Request other;
  other.header("end-user", "Jason");
  EXPECT_FALSE(matches(m, other));  // values are not

  config::HTTPMatchRequest p;
  p.headers["user-agent"] = prefix("curl/");
  Request ua;
  ua.header("user-agent", "curl/8.0");
  EXPECT_TRUE(matches(p, ua));

  config::HTTPMatchRequest re;
  re.headers["cookie"] = regex(".*user=(jason|bob).*");
  Request c;
  c.header("cookie", "a=1; user=bob; z=2");
  EXPECT_TRUE(matches(re, c));
  Request c2;
  c2.header("cookie", "user=alice");
  EXPECT_FALSE(matches(re, c2));
}

TEST(CompiledMatch, HeaderPresence) {
  config::HTTPMatchRequest m;
  m.headers["x-canary"] = present();
  Request r;
  EXPECT_FALSE(matches(m, r));
  r.header("x-canary", "");
  EXPECT_TRUE(matches(m, r));
}

TEST(CompiledMatch, RepeatedHeaderMatchesJoinedValues) {
  config::HTTPMatchRequest m;
  m.headers["x-tag"] = exact("a,b");
  Request r;
  r.header("x-tag", "a").header("X-Tag", "b");
  EXPECT_TRUE(matches(m, r));
  m.headers["x-tag"] = exact("a");
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, WithoutHeadersMatchesWhenConditionFailsOrHeaderAbsent) {
  config::HTTPMatchRequest m;
  m.withoutHeaders["x-debug"] = exact("1");
  Request absent;
  EXPECT_TRUE(matches(m, absent));
  Request other;
  other.header("x-debug", "0");
  EXPECT_TRUE(matches(m, other));
  Request hit;
  hit.header("x-debug", "1");
  EXPECT_FALSE(matches(m, hit));

  config::HTTPMatchRequest p;
  p.withoutHeaders["x-debug"] = present();
  EXPECT_TRUE(matches(p, absent));
  EXPECT_FALSE(matches(p, other));
}

TEST(CompiledMatch, QueryParams) {
  config::HTTPMatchRequest m;
  m.queryParams["version"] = exact("v2");
  Request r;
  r.path = "/p?a=1&version=v2&b";
  EXPECT_TRUE(matches(m, r));
  r.path = "/p?version=v20";
  EXPECT_FALSE(matches(m, r));
  r.path = "/p?xversion=v2";
  EXPECT_FALSE(matches(m, r));
  r.path = "/p";
  EXPECT_FALSE(matches(m, r));
  r.path = "/p?version=v%32";  // raw value, not decoded
  EXPECT_FALSE(matches(m, r));

  config::HTTPMatchRequest re;
  re.queryParams["id"] = regex("[0-9]+");
  r.path = "/p?id=123";
  EXPECT_TRUE(matches(re, r));
  r.path = "/p?id=12a";
  EXPECT_FALSE(matches(re, r));

  config::HTTPMatchRequest pres;
  pres.queryParams["debug"] = present();
  r.path = "/p?debug";
  EXPECT_TRUE(matches(pres, r));
  r.path = "/p?nodebug=1";
  EXPECT_FALSE(matches(pres, r));

  // Istio documents prefix as unsupported here; Envoy runs it as a prefix.
  config::HTTPMatchRequest pre;
  pre.queryParams["lang"] = prefix("en");
  r.path = "/p?lang=en-GB";
  EXPECT_TRUE(matches(pre, r));
  r.path = "/p?lang=fr";
  EXPECT_FALSE(matches(pre, r));
}

TEST(CompiledMatch, Port) {
  config::HTTPMatchRequest m;
  m.port = 9080;
  Request r;
  r.port = 9080;
  EXPECT_TRUE(matches(m, r));
  r.port = 9090;
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, ConditionsAreAnded) {
  config::HTTPMatchRequest m;
  m.uri = prefix("/api");
  m.method = exact("GET");
  m.headers["x-user"] = exact("a");
  Request r;
  r.path = "/api/x";
  r.header("x-user", "a");
  EXPECT_TRUE(matches(m, r));
  r.method = "PUT";
  EXPECT_FALSE(matches(m, r));
  r.method = "GET";
  r.path = "/web";
  EXPECT_FALSE(matches(m, r));
}

TEST(CompiledMatch, GatewaysSelectTrafficAndSourceConditionsNeverMatch) {
  config::HTTPMatchRequest gw;
  gw.gateways = {"istio-system/ingress"};
  Request r;
  EXPECT_TRUE(compiled(gw)->reachable());
  EXPECT_FALSE(compiled(gw)->appliesTo("mesh"));
  EXPECT_TRUE(compiled(gw)->appliesTo("istio-system/ingress"));
  EXPECT_FALSE(compiled(gw)->appliesTo("istio-system/other"));
  gw.gateways.push_back("mesh");
  EXPECT_TRUE(compiled(gw)->appliesTo("mesh"));
  EXPECT_TRUE(matches(gw, r));
  EXPECT_TRUE(compiled(config::HTTPMatchRequest{})->appliesTo("istio-system/ingress"));

  config::HTTPMatchRequest src;
  src.sourceLabels = {{"app", "productpage"}};
  EXPECT_FALSE(matches(src, r));
  config::HTTPMatchRequest ns;
  ns.sourceNamespace = "default";
  EXPECT_FALSE(matches(ns, r));
}

TEST(CompiledMatch, InvalidRegexIsAnError) {
  config::HTTPMatchRequest m;
  m.headers["x"] = regex("(unclosed");
  auto c = CompiledMatch::compile(m);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().find("headers.x"), std::string::npos) << c.error();
}

TEST(QueryParam, ParsesRawValues) {
  EXPECT_EQ(queryParam("/a?x=1&y=2", "y"), "2");
  EXPECT_EQ(queryParam("/a?x", "x"), "");
  EXPECT_EQ(queryParam("/a?x=1#frag", "x"), "1");
  EXPECT_FALSE(queryParam("/a", "x").has_value());
  EXPECT_FALSE(queryParam("/a?xx=1", "x").has_value());
  EXPECT_EQ(pathWithoutQuery("/a/b?x=1"), "/a/b");
}

}  // namespace
}  // namespace sluice::route
