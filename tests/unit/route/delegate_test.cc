#include "route/delegate.h"

#include <gtest/gtest.h>

#include <chrono>

#include "builders.h"

namespace sluice::route {
namespace {

using namespace testing;  // NOLINT: the builders
using namespace std::chrono_literals;
using Kind = config::StringMatch::Kind;

config::HTTPRoute rootRoute(std::vector<config::HTTPMatchRequest> match) {
  config::HTTPRoute r;
  r.name = "root";
  r.match = std::move(match);
  r.delegate = config::Delegate{"reviews", "team"};
  return r;
}

config::VirtualService delegateVs(std::vector<config::HTTPRoute> http) {
  auto vs = virtualService("reviews", {}, std::move(http));
  vs.metadata.namespace_ = "team";
  return vs;
}

config::HTTPMatchRequest headerMatch(std::string name, config::StringMatch m) {
  config::HTTPMatchRequest b;
  b.headers[std::move(name)] = std::move(m);
  return b;
}

struct Merge {
  std::vector<config::HTTPRoute> routes;
  std::vector<std::string> warnings;
};

Merge merge(const config::HTTPRoute& root, const config::VirtualService& vs) {
  Merge m;
  m.routes = mergeDelegate(root, vs, m.warnings);
  return m;
}

TEST(Delegate, RoutesKeepTheDelegatesOrder) {
  auto vs = delegateVs({httpRoute({dest("a")}, {uriPrefix("/r/a")}, "a"), httpRoute({dest("b")}, {}, "b")});
  auto m = merge(rootRoute({uriPrefix("/r")}), vs);
  ASSERT_EQ(m.routes.size(), 2u);
  EXPECT_EQ(m.routes[0].name, "a");
  EXPECT_EQ(m.routes[1].name, "b");
  EXPECT_EQ(m.routes[0].route[0].destination.host, "a");
  EXPECT_EQ(m.routes[1].route[0].destination.host, "b");
  EXPECT_TRUE(m.warnings.empty());
  for (const auto& r : m.routes) EXPECT_FALSE(r.delegate.has_value());
}

TEST(Delegate, RootWithoutMatchKeepsTheDelegatesMatch) {
  auto vs = delegateVs({httpRoute({dest("a")}, {uriPrefix("/x"), uriPrefix("/y")})});
  auto m = merge(rootRoute({}), vs);
  ASSERT_EQ(m.routes.size(), 1u);
  ASSERT_EQ(m.routes[0].match.size(), 2u);
  EXPECT_EQ(m.routes[0].match[0].uri->value, "/x");
  EXPECT_EQ(m.routes[0].match[1].uri->value, "/y");
}

TEST(Delegate, DelegateWithoutMatchTakesTheRoots) {
  auto vs = delegateVs({httpRoute({dest("a")})});
  auto m = merge(rootRoute({uriPrefix("/r"), headerMatch("x-env", exact("dev"))}), vs);
  ASSERT_EQ(m.routes.size(), 1u);
  ASSERT_EQ(m.routes[0].match.size(), 2u);
  EXPECT_EQ(m.routes[0].match[0].uri->value, "/r");
  EXPECT_EQ(m.routes[0].match[1].headers.at("x-env").value, "dev");
}

TEST(Delegate, UriMustNarrowTheRootsPrefix) {
  config::HTTPMatchRequest exactInside;
  exactInside.uri = exact("/r/ping");
  auto vs = delegateVs({
      httpRoute({dest("a")}, {uriPrefix("/r/a")}),  // narrower prefix: kept
      httpRoute({dest("b")}, {exactInside}),        // exact inside: kept
      httpRoute({dest("c")}, {uriPrefix("/other")}),  // outside: dropped
  });
  auto m = merge(rootRoute({uriPrefix("/r")}), vs);
  ASSERT_EQ(m.routes.size(), 2u);
  EXPECT_EQ(m.routes[0].match[0].uri->kind, Kind::Prefix);
  EXPECT_EQ(m.routes[0].match[0].uri->value, "/r/a");
  EXPECT_EQ(m.routes[1].match[0].uri->kind, Kind::Exact);
  EXPECT_EQ(m.routes[1].match[0].uri->value, "/r/ping");
  ASSERT_EQ(m.warnings.size(), 1u);
  EXPECT_EQ(m.warnings[0], "delegate team/reviews: http[2]: match conflicts with the root's; route dropped");
}

TEST(Delegate, RegexConflictsUnlessOnlyOneSideHasAUri) {
  config::HTTPMatchRequest re;
  re.uri = regex("/r/[0-9]+");
  // Root prefix + delegate regex: conflict.
  auto m1 = merge(rootRoute({uriPrefix("/r")}), delegateVs({httpRoute({dest("a")}, {re})}));
  EXPECT_TRUE(m1.routes.empty());
  EXPECT_EQ(m1.warnings.size(), 1u);
  // Root regex + delegate with no uri: the root's regex is kept.
  config::HTTPMatchRequest get;
  get.method = exact("GET");
  auto m2 = merge(rootRoute({re}), delegateVs({httpRoute({dest("a")}, {get})}));
  ASSERT_EQ(m2.routes.size(), 1u);
  EXPECT_EQ(m2.routes[0].match[0].uri->kind, Kind::Regex);
  EXPECT_EQ(m2.routes[0].match[0].method->value, "GET");
  // Root with only a header + delegate regex: the delegate's regex is kept.
  auto m3 = merge(rootRoute({headerMatch("x-env", exact("dev"))}), delegateVs({httpRoute({dest("a")}, {re})}));
  ASSERT_EQ(m3.routes.size(), 1u);
  EXPECT_EQ(m3.routes[0].match[0].uri->kind, Kind::Regex);
  EXPECT_EQ(m3.routes[0].match[0].headers.at("x-env").value, "dev");
  EXPECT_TRUE(m3.warnings.empty());
}

TEST(Delegate, HeadersAndQueryParamsUnionAndConflict) {
  config::HTTPMatchRequest root = uriPrefix("/r");
  root.headers["x-env"] = exact("dev");
  root.queryParams["v"] = exact("1");
  root.withoutHeaders["x-debug"] = present();

  config::HTTPMatchRequest sameHeader = headerMatch("x-env", exact("dev"));
  sameHeader.headers["x-user"] = prefix("a");
  sameHeader.queryParams["w"] = exact("2");
  sameHeader.withoutHeaders["x-canary"] = present();
  config::HTTPMatchRequest otherValue = headerMatch("x-env", exact("prod"));
  config::HTTPMatchRequest otherQuery;
  otherQuery.queryParams["v"] = exact("2");
  config::HTTPMatchRequest otherWithout;
  otherWithout.withoutHeaders["x-debug"] = exact("1");

  auto m = merge(rootRoute({root}), delegateVs({httpRoute({dest("a")}, {sameHeader}),
                                                httpRoute({dest("b")}, {otherValue}),
                                                httpRoute({dest("c")}, {otherQuery}),
                                                httpRoute({dest("d")}, {otherWithout})}));
  ASSERT_EQ(m.routes.size(), 1u);
  const auto& b = m.routes[0].match.at(0);
  EXPECT_EQ(b.uri->value, "/r");
  EXPECT_EQ(b.headers.size(), 2u);
  EXPECT_EQ(b.headers.at("x-user").kind, Kind::Prefix);
  EXPECT_EQ(b.queryParams.size(), 2u);
  EXPECT_EQ(b.queryParams.at("w").value, "2");
  EXPECT_EQ(b.withoutHeaders.size(), 2u);
  ASSERT_EQ(m.warnings.size(), 3u);
  EXPECT_NE(m.warnings[0].find("http[1]"), std::string::npos);
  EXPECT_NE(m.warnings[1].find("http[2]"), std::string::npos);
  EXPECT_NE(m.warnings[2].find("http[3]"), std::string::npos);
}

TEST(Delegate, ScalarConditionsComeFromEitherSideAndConflictWhenDifferent) {
  config::HTTPMatchRequest root = uriPrefix("/r");
  root.method = exact("GET");
  root.port = 9080;

  config::HTTPMatchRequest addsAuthority;
  addsAuthority.authority = exact("reviews");
  addsAuthority.scheme = exact("http");
  addsAuthority.method = exact("GET");  // same as the root's: fine
  config::HTTPMatchRequest otherMethod;
  otherMethod.method = exact("POST");
  config::HTTPMatchRequest otherPort;
  otherPort.port = 8080;

  auto m = merge(rootRoute({root}), delegateVs({httpRoute({dest("a")}, {addsAuthority}),
                                                httpRoute({dest("b")}, {otherMethod}),
                                                httpRoute({dest("c")}, {otherPort})}));
  ASSERT_EQ(m.routes.size(), 1u);
  const auto& b = m.routes[0].match[0];
  EXPECT_EQ(b.method->value, "GET");
  EXPECT_EQ(b.authority->value, "reviews");
  EXPECT_EQ(b.scheme->value, "http");
  EXPECT_EQ(b.port, 9080u);
  EXPECT_EQ(m.warnings.size(), 2u);
}

TEST(Delegate, CrossProductKeepsOnlyCompatiblePairs) {
  // Root: /api or /web. Delegate: /api/v1 or /web/static or /admin.
  auto vs = delegateVs({httpRoute({dest("a")}, {uriPrefix("/api/v1"), uriPrefix("/web/static"), uriPrefix("/admin")})});
  auto m = merge(rootRoute({uriPrefix("/api"), uriPrefix("/web")}), vs);
  ASSERT_EQ(m.routes.size(), 1u);
  ASSERT_EQ(m.routes[0].match.size(), 2u);
  EXPECT_EQ(m.routes[0].match[0].uri->value, "/api/v1");
  EXPECT_EQ(m.routes[0].match[1].uri->value, "/web/static");
  EXPECT_TRUE(m.warnings.empty());

  // Two root blocks with headers: each delegate block gets each root header.
  auto m2 = merge(rootRoute({headerMatch("x-a", exact("1")), headerMatch("x-b", exact("2"))}),
                  delegateVs({httpRoute({dest("a")}, {uriPrefix("/p"), uriPrefix("/q")})}));
  ASSERT_EQ(m2.routes[0].match.size(), 4u);
  EXPECT_TRUE(m2.routes[0].match[0].headers.contains("x-a"));
  EXPECT_EQ(m2.routes[0].match[1].uri->value, "/q");
  EXPECT_TRUE(m2.routes[0].match[3].headers.contains("x-b"));
}

TEST(Delegate, ActionsInheritFromTheRootWhenUnset) {
  config::HTTPRoute root = rootRoute({uriPrefix("/r")});
  root.timeout = 3s;
  root.retries = config::HTTPRetry{.attempts = 5};
  root.rewrite = config::HTTPRewrite{.uri = "/"};
  root.fault.emplace();
  root.corsPolicy.emplace();
  root.corsPolicy->allowMethods = {"GET"};
  root.headers.emplace();
  root.mirror = config::Destination{.host = "shadow"};
  root.mirrorPercentage = config::Percent{5};

  config::HTTPRoute plain = httpRoute({dest("a")}, {}, "");
  config::HTTPRoute own = httpRoute({dest("b")}, {}, "own");
  own.timeout = 1s;
  own.retries = config::HTTPRetry{.attempts = 1};
  own.mirror = config::Destination{.host = "mine"};
  own.redirect = config::HTTPRedirect{.uri = "/elsewhere"};

  auto m = merge(root, delegateVs({plain, own}));
  ASSERT_EQ(m.routes.size(), 2u);
  const auto& p = m.routes[0];
  EXPECT_EQ(p.name, "root");
  EXPECT_EQ(p.route[0].destination.host, "a");
  EXPECT_EQ(p.timeout, std::chrono::nanoseconds(3s));
  EXPECT_EQ(p.retries->attempts, 5);
  EXPECT_EQ(p.rewrite->uri, "/");
  EXPECT_TRUE(p.fault.has_value());
  ASSERT_TRUE(p.corsPolicy.has_value());
  EXPECT_EQ(p.corsPolicy->allowMethods, std::vector<std::string>{"GET"});
  EXPECT_TRUE(p.headers.has_value());
  EXPECT_EQ(p.mirror->host, "shadow");
  EXPECT_EQ(p.mirrorPercentage->value, 5);

  const auto& o = m.routes[1];
  EXPECT_EQ(o.name, "own");
  EXPECT_EQ(o.timeout, std::chrono::nanoseconds(1s));
  EXPECT_EQ(o.retries->attempts, 1);
  EXPECT_EQ(o.redirect->uri, "/elsewhere");
  EXPECT_EQ(o.mirror->host, "mine");
  // The delegate set its own mirror: none of the root's mirror fields leak in.
  EXPECT_FALSE(o.mirrorPercentage.has_value());
  EXPECT_EQ(o.rewrite->uri, "/");  // unset on the delegate: inherited
}

TEST(Delegate, NestedDelegateIsDropped) {
  config::HTTPRoute nested = httpRoute({}, {uriPrefix("/r/n")});
  nested.delegate = config::Delegate{"deeper", "team"};
  auto m = merge(rootRoute({uriPrefix("/r")}),
                 delegateVs({nested, httpRoute({dest("a")}, {uriPrefix("/r/a")})}));
  ASSERT_EQ(m.routes.size(), 1u);
  EXPECT_EQ(m.routes[0].route[0].destination.host, "a");
  ASSERT_EQ(m.warnings.size(), 1u);
  EXPECT_TRUE(m.warnings[0].starts_with("delegate team/reviews: http[0]: ")) << m.warnings[0];
  EXPECT_NE(m.warnings[0].find("dropped"), std::string::npos);
}

TEST(Delegate, RootExactUriAcceptsOnlyTheSameExact) {
  config::HTTPMatchRequest root;
  root.uri = exact("/login");
  config::HTTPMatchRequest same;
  same.uri = exact("/login");
  auto m = merge(rootRoute({root}), delegateVs({httpRoute({dest("a")}, {same}),
                                                httpRoute({dest("b")}, {uriPrefix("/log")})}));
  ASSERT_EQ(m.routes.size(), 1u);
  EXPECT_EQ(m.routes[0].route[0].destination.host, "a");
  EXPECT_EQ(m.warnings.size(), 1u);
}

}  // namespace
}  // namespace sluice::route
