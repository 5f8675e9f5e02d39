#include "route/table.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "builders.h"

namespace sluice::route {
namespace {

using namespace testing;  // NOLINT: the builders

constexpr const char* kReviews = "reviews.default.svc.cluster.local";
constexpr const char* kRatings = "ratings.default.svc.cluster.local";

std::shared_ptr<const Snapshot> mustCompile(config::Resources res) {
  auto s = compile(std::move(res), 1);
  EXPECT_TRUE(s.has_value());
  if (!s) {
    for (const auto& e : s.error()) ADD_FAILURE() << e.str();
    return nullptr;
  }
  return *s;
}

bool hasWarning(const Snapshot& s, std::string_view needle) {
  return std::any_of(s.warnings.begin(), s.warnings.end(),
                     [&](const std::string& w) { return w.find(needle) != std::string::npos; });
}

config::Resources bookinfo() {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry(
      "reviews", {kReviews}, {port(9080)},
      {endpoint("127.100.0.1", {{"version", "v1"}}), endpoint("127.100.0.2", {{"version", "v2"}}),
       endpoint("127.100.0.3", {{"version", "v3"}})},
      {"240.0.0.10"}));
  r.serviceEntries.push_back(serviceEntry("ratings", {kRatings}, {port(9080)}, {endpoint("127.100.1.1")}));
  r.destinationRules.push_back(destinationRule(
      "reviews", kReviews, {subset("v1", {{"version", "v1"}}), subset("v2", {{"version", "v2"}})}));
  return r;
}

// --- host selection

TEST(HostSelection, EveryAliasFormAndVipFindsTheService) {
  auto s = mustCompile(bookinfo());
  ASSERT_TRUE(s);
  for (const char* form : {"reviews", "reviews.default", "reviews.default.svc",
                           "reviews.default.svc.cluster.local", "REVIEWS.Default", "240.0.0.10",
                           "reviews.default.svc.cluster.local."}) {
    uint32_t port = 0;
    const VirtualHost* vh = s->findVirtualHost(9080, form, &port);
    ASSERT_NE(vh, nullptr) << form;
    EXPECT_EQ(vh->name, "reviews.default.svc.cluster.local:9080") << form;
    EXPECT_EQ(port, 9080u);
  }
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  ASSERT_NE(vh, nullptr);
  for (const char* d : {"reviews", "reviews:9080", "reviews.default.svc:9080", "240.0.0.10:9080"}) {
    EXPECT_NE(std::find(vh->domains.begin(), vh->domains.end(), d), vh->domains.end()) << d;
  }
  EXPECT_EQ(s->findVirtualHost(9080, "ratings")->name, "ratings.default.svc.cluster.local:9080");
}

TEST(HostSelection, UnknownHostAndWrongPortFindNothing) {
  auto s = mustCompile(bookinfo());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->findVirtualHost(9080, "details"), nullptr);
  EXPECT_EQ(s->findVirtualHost(9080, "reviews.other"), nullptr);
  EXPECT_EQ(s->findVirtualHost(8080, "reviews"), nullptr);
}

TEST(HostSelection, PortSpecificVirtualHosts) {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("api", {"api.default.svc.cluster.local"},
                                          {port(8080, "http"), port(80, "web")}, {endpoint("127.101.0.1")}));
  r.serviceEntries.push_back(serviceEntry("admin", {"admin.default.svc.cluster.local"},
                                          {port(9000, "a"), port(9001, "b")}, {endpoint("127.101.0.2")}));
  r.serviceEntries.push_back(serviceEntry("single", {"single.default.svc.cluster.local"}, {port(7000)},
                                          {endpoint("127.101.0.3")}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->findVirtualHost(8080, "api")->name, "api.default.svc.cluster.local:8080");
  EXPECT_EQ(s->findVirtualHost(80, "api")->name, "api.default.svc.cluster.local:80");
  EXPECT_EQ(s->findVirtualHost(7000, "api"), nullptr);

  uint32_t resolved = 0;
  // Unknown port: the only port, else 80, else nothing.
  ASSERT_NE(s->findVirtualHost(0, "single", &resolved), nullptr);
  EXPECT_EQ(resolved, 7000u);
  ASSERT_NE(s->findVirtualHost(0, "api.default", &resolved), nullptr);
  EXPECT_EQ(resolved, 80u);
  EXPECT_EQ(s->findVirtualHost(0, "admin"), nullptr);
  EXPECT_EQ(s->findVirtualHost(0, "nothing"), nullptr);

  // The default route goes to the service-wide cluster of the request's port.
  Request req;
  const Route* rt = s->findVirtualHost(80, "api")->match(req.view());
  ASSERT_NE(rt, nullptr);
  ASSERT_EQ(rt->clusters.size(), 1u);
  EXPECT_EQ(rt->clusters[0].cluster->name, "outbound|80||api.default.svc.cluster.local");
  EXPECT_EQ(rt->clusters[0].cluster->endpoints.at(0).port, 80);
}

TEST(HostSelection, WildcardsLongestSuffixThenStar) {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("wide", {"*.example.com"}, {port(80)}));
  r.serviceEntries.push_back(serviceEntry("narrow", {"*.api.example.com"}, {port(80)}));
  r.serviceEntries.push_back(serviceEntry("exact", {"www.api.example.com"}, {port(80)}, {endpoint("127.102.0.1")}));
  r.serviceEntries.push_back(serviceEntry("all", {"*"}, {port(80)}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->findVirtualHost(80, "www.api.example.com")->name, "www.api.example.com:80");
  EXPECT_EQ(s->findVirtualHost(80, "v1.api.example.com")->name, "*.api.example.com:80");
  EXPECT_EQ(s->findVirtualHost(80, "a.b.api.example.com")->name, "*.api.example.com:80");
  EXPECT_EQ(s->findVirtualHost(80, "foo.example.com")->name, "*.example.com:80");
  EXPECT_EQ(s->findVirtualHost(80, "Foo.Example.COM")->name, "*.example.com:80");
  EXPECT_EQ(s->findVirtualHost(80, "example.com")->name, "*:80");  // the wildcard needs a label
  EXPECT_EQ(s->findVirtualHost(80, "other.org")->name, "*:80");
  const RouteConfig& rc = s->routeConfigs.at(80);
  ASSERT_EQ(rc.wildcards.size(), 2u);
  EXPECT_EQ(rc.wildcards[0].first, ".api.example.com");  // longest first
}

TEST(HostSelection, RealNameBeatsShortAlias) {
  config::Resources r;
  // "reviews.default" is both the alias of the cluster.local service and the
  // real name of an external one: the real name wins.
  r.serviceEntries.push_back(serviceEntry("internal", {kReviews}, {port(80)}, {endpoint("127.103.0.1")}));
  r.serviceEntries.push_back(serviceEntry("external", {"reviews.default"}, {port(80)}, {endpoint("127.103.0.2")}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->findVirtualHost(80, "reviews.default")->name, "reviews.default:80");
  EXPECT_EQ(s->findVirtualHost(80, "reviews")->name, std::string(kReviews) + ":80");
}

// --- routes

TEST(RouteMatching, FirstMatchWinsBlocksOredConditionsAnded) {
  config::Resources r = bookinfo();
  config::HTTPMatchRequest jason;
  jason.headers["end-user"] = exact("jason");
  jason.uri = prefix("/reviews");
  config::HTTPMatchRequest canary;
  canary.headers["x-canary"] = present();
  r.virtualServices.push_back(virtualService(
      "reviews", {kReviews},
      {httpRoute({dest(kReviews, "v2")}, {jason, canary}, "to-v2"),
       httpRoute({dest(kReviews, "v1")}, {uriPrefix("/")}, "catch-all"),
       httpRoute({dest(kReviews, "v2")}, {}, "never-reached")}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  ASSERT_NE(vh, nullptr);
  ASSERT_EQ(vh->routes.size(), 3u);

  Request both;
  both.path = "/reviews/1";
  both.header("end-user", "jason");
  EXPECT_EQ(vh->match(both.view())->name, "to-v2");
  Request userOnly;  // end-user without the uri: first block fails
  userOnly.path = "/other";
  userOnly.header("end-user", "jason");
  EXPECT_EQ(vh->match(userOnly.view())->name, "catch-all");
  Request canaryReq;  // second block alone
  canaryReq.path = "/other";
  canaryReq.header("x-canary", "1");
  EXPECT_EQ(vh->match(canaryReq.view())->name, "to-v2");
  Request plain;
  const Route* rt = vh->match(plain.view());
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->name, "catch-all");
  ASSERT_EQ(rt->clusters.size(), 1u);
  EXPECT_EQ(rt->clusters[0].cluster->name, "outbound|9080|v1|reviews.default.svc.cluster.local");
  EXPECT_EQ(rt->clusters[0].weight, 100u);
  EXPECT_EQ(rt->virtualService->metadata.name, "reviews");
}

TEST(RouteMatching, NoMatchReturnsNull) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(
      virtualService("reviews", {kReviews}, {httpRoute({dest(kReviews)}, {uriPrefix("/only")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  Request req;
  req.path = "/else";
  EXPECT_EQ(s->findVirtualHost(9080, "reviews")->match(req.view()), nullptr);
  EXPECT_EQ(s->findVirtualHost(9080, "reviews")->routes[0].name, "reviews.0");
}

TEST(RouteMatching, WeightedPickFollowsWeights) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(virtualService(
      "reviews", {kReviews}, {httpRoute({dest(kReviews, "v1", 90), dest(kReviews, "v2", 10), dest(kReviews, "v3", 0)})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Route& rt = s->findVirtualHost(9080, "reviews")->routes.at(0);
  EXPECT_EQ(rt.totalWeight, 100u);
  // splitmix64 as the random source, fixed seed: deterministic.
  uint64_t state = 12345;
  auto next = [&] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  constexpr int kPicks = 100000;
  int v1 = 0, v2 = 0, v3 = 0;
  for (int i = 0; i < kPicks; ++i) {
    const WeightedCluster* wc = rt.pick(next());
    ASSERT_NE(wc, nullptr);
    if (wc->cluster->subset == "v1") ++v1;
    if (wc->cluster->subset == "v2") ++v2;
    if (wc->cluster->subset == "v3") ++v3;
  }
  // Tolerance: +-1 percentage point (the standard deviation of the v2 share
  // over 100k picks is about 0.1 point).
  EXPECT_NEAR(100.0 * v1 / kPicks, 90.0, 1.0);
  EXPECT_NEAR(100.0 * v2 / kPicks, 10.0, 1.0);
  EXPECT_EQ(v3, 0);  // zero weight: never picked
  // The extremes of the random range land on the first and last live entry.
  EXPECT_EQ(rt.pick(0)->cluster->subset, "v1");
  EXPECT_EQ(rt.pick(~uint64_t{0})->cluster->subset, "v2");
}

TEST(RouteMatching, WeightsNeedNotSumToHundred) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(
      virtualService("reviews", {kReviews}, {httpRoute({dest(kReviews, "v1", 1), dest(kReviews, "v2", 3)})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Route& rt = s->findVirtualHost(9080, "reviews")->routes.at(0);
  EXPECT_EQ(rt.totalWeight, 4u);
  // r maps to floor(r * 4 / 2^64): the lower quarter is v1.
  EXPECT_EQ(rt.pick(uint64_t{1} << 61)->cluster->subset, "v1");
  EXPECT_EQ(rt.pick(uint64_t{1} << 63)->cluster->subset, "v2");
}

TEST(RouteMatching, RedirectAndDirectResponseHaveNoClustersTimeoutIsKept) {
  config::Resources r = bookinfo();
  config::HTTPRoute redirect;
  redirect.redirect = config::HTTPRedirect{};
  redirect.redirect->uri = "/new";
  redirect.match = {uriPrefix("/old")};
  config::HTTPRoute direct;
  direct.directResponse = config::HTTPDirectResponse{418, "teapot"};
  direct.match = {uriPrefix("/tea")};
  config::HTTPRoute timed = httpRoute({dest(kReviews)});
  timed.timeout = std::chrono::milliseconds(250);
  r.virtualServices.push_back(virtualService("reviews", {kReviews}, {redirect, direct, timed}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  ASSERT_EQ(vh->routes.size(), 3u);
  EXPECT_TRUE(vh->routes[0].clusters.empty());
  EXPECT_TRUE(vh->routes[0].spec->redirect.has_value());
  EXPECT_TRUE(vh->routes[1].clusters.empty());
  EXPECT_EQ(vh->routes[0].pick(7), nullptr);
  ASSERT_TRUE(vh->routes[2].timeout.has_value());
  EXPECT_EQ(*vh->routes[2].timeout, std::chrono::milliseconds(250));
  EXPECT_FALSE(vh->routes[0].timeout.has_value());
}

TEST(RouteMatching, DefaultRouteForServiceWithoutVirtualService) {
  auto s = mustCompile(bookinfo());
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "ratings");
  ASSERT_EQ(vh->routes.size(), 1u);
  const Route& rt = vh->routes[0];
  EXPECT_TRUE(rt.matches.empty());
  ASSERT_NE(rt.spec, nullptr);
  ASSERT_EQ(rt.clusters.size(), 1u);
  EXPECT_NE(rt.clusters[0].spec, nullptr);
  EXPECT_EQ(rt.clusters[0].cluster->name, "outbound|9080||ratings.default.svc.cluster.local");
  ASSERT_EQ(rt.clusters[0].cluster->endpoints.size(), 1u);
  Request req;
  req.path = "/anything?x";
  req.method = "DELETE";
  EXPECT_EQ(vh->match(req.view()), &rt);
}

TEST(RouteMatching, MatchBlocksForOtherPortsAreDropped) {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("api", {"api.default.svc.cluster.local"},
                                          {port(8080, "a"), port(9090, "b")}, {endpoint("127.101.0.1")}));
  config::HTTPMatchRequest on9090;
  on9090.port = 9090;
  r.virtualServices.push_back(virtualService(
      "api", {"api.default.svc.cluster.local"},
      {httpRoute({dest("api.default.svc.cluster.local", "", -1, 9090)}, {on9090}, "grpc-port"),
       httpRoute({dest("api.default.svc.cluster.local")}, {}, "rest")}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* v8080 = s->findVirtualHost(8080, "api");
  ASSERT_EQ(v8080->routes.size(), 1u);
  EXPECT_EQ(v8080->routes[0].name, "rest");
  // Destination port: unset, several service ports -> the virtual host's port.
  EXPECT_EQ(v8080->routes[0].clusters[0].cluster->port, 8080u);
  const VirtualHost* v9090 = s->findVirtualHost(9090, "api");
  ASSERT_EQ(v9090->routes.size(), 2u);
  Request req;
  req.port = 9090;
  EXPECT_EQ(v9090->match(req.view())->name, "grpc-port");
  EXPECT_EQ(v9090->routes[1].clusters[0].cluster->port, 9090u);
}

TEST(RouteMatching, DestinationPortRules) {
  config::Resources r = bookinfo();
  r.serviceEntries.push_back(serviceEntry("multi", {"multi.default.svc.cluster.local"},
                                          {port(81, "a"), port(82, "b")}, {endpoint("127.109.0.1")}));
  // ratings has one port (9080): a route on reviews:9080 to ratings uses it;
  // an explicit port wins; multi-port without a port uses the vhost's port.
  r.virtualServices.push_back(virtualService(
      "reviews", {kReviews},
      {httpRoute({dest(kRatings)}, {uriPrefix("/r")}), httpRoute({dest(kRatings, "", -1, 9999)}, {uriPrefix("/x")}),
       httpRoute({dest("multi.default.svc.cluster.local")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  EXPECT_EQ(vh->routes[0].clusters[0].cluster->name, "outbound|9080||ratings.default.svc.cluster.local");
  const Cluster* bad = vh->routes[1].clusters[0].cluster;
  EXPECT_EQ(bad->name, "outbound|9999||ratings.default.svc.cluster.local");
  EXPECT_TRUE(bad->missing);
  EXPECT_TRUE(hasWarning(*s, "no port 9999"));
  const Cluster* multi = vh->routes[2].clusters[0].cluster;
  EXPECT_EQ(multi->name, "outbound|9080||multi.default.svc.cluster.local");
  EXPECT_TRUE(multi->missing);  // multi has no port 9080
}

TEST(RouteMatching, FirstVirtualServiceForAHostWinsOthersWarn) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(virtualService("first", {kReviews}, {httpRoute({dest(kReviews, "v1")})}));
  r.virtualServices.push_back(virtualService("second", {kReviews}, {httpRoute({dest(kReviews, "v2")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  ASSERT_EQ(vh->routes.size(), 1u);
  EXPECT_EQ(vh->routes[0].virtualService->metadata.name, "first");
  EXPECT_TRUE(hasWarning(*s, "VirtualService default/second"));
}

TEST(RouteMatching, GatewayOnlyVirtualServiceDoesNotApplyToMesh) {
  config::Resources r = bookinfo();
  auto vs = virtualService("ingress", {kReviews}, {httpRoute({dest(kReviews, "v2")})});
  vs.gateways = {"istio-system/bookinfo-gateway"};
  r.virtualServices.push_back(vs);
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Route& rt = s->findVirtualHost(9080, "reviews")->routes.at(0);
  EXPECT_EQ(rt.virtualService, nullptr);  // the default route
  EXPECT_EQ(rt.clusters[0].cluster->subset, "");
}

TEST(RouteMatching, TcpOnlyVirtualServiceLeavesTheDefaultHttpRoute) {
  config::Resources r = bookinfo();
  auto vs = virtualService("tcp", {kReviews}, {});
  vs.tcp.push_back(config::TCPRoute{});
  r.virtualServices.push_back(vs);
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(9080, "reviews");
  ASSERT_EQ(vh->routes.size(), 1u);
  EXPECT_EQ(vh->routes[0].name, "default");
}

TEST(RouteMatching, WildcardVirtualServiceCoversService) {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("ext", {"api.example.com"}, {port(80)}, {endpoint("127.104.0.1")}));
  r.virtualServices.push_back(
      virtualService("wild", {"*.example.com"}, {httpRoute({dest("api.example.com")}, {uriPrefix("/v1")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const VirtualHost* vh = s->findVirtualHost(80, "api.example.com");
  ASSERT_EQ(vh->routes.size(), 1u);
  EXPECT_EQ(vh->routes[0].virtualService->metadata.name, "wild");
}

TEST(RouteMatching, VirtualServiceHostWithoutServiceEntryIsReachable) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(
      virtualService("alias", {"bookinfo.local"}, {httpRoute({dest(kReviews, "v1")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  for (uint32_t p : {80u, 9080u}) {
    const VirtualHost* vh = s->findVirtualHost(p, "bookinfo.local");
    ASSERT_NE(vh, nullptr) << p;
    EXPECT_EQ(vh->routes.at(0).clusters.at(0).cluster->name, "outbound|9080|v1|reviews.default.svc.cluster.local");
  }
  uint32_t resolved = 0;
  EXPECT_NE(s->findVirtualHost(0, "bookinfo.local", &resolved), nullptr);
  EXPECT_EQ(resolved, 80u);
}

TEST(RouteMatching, InvalidRegexFailsCompileWithLocation) {
  config::Resources r = bookinfo();
  config::HTTPMatchRequest m;
  m.uri = regex("([");
  auto vs = virtualService("bad", {kReviews}, {httpRoute({dest(kReviews)}, {m})});
  vs.source = {"bad.yaml", 3};
  r.virtualServices.push_back(vs);
  auto s = compile(std::move(r), 2);
  ASSERT_FALSE(s.has_value());
  ASSERT_EQ(s.error().size(), 1u);
  EXPECT_EQ(s.error()[0].file, "bad.yaml");
  EXPECT_EQ(s.error()[0].path, "spec.http[0].match[0]");
  EXPECT_EQ(s.error()[0].resource, "VirtualService default/bad");
}

// --- clusters and endpoints

TEST(RouteClusters, SubsetsSelectServiceEntryEndpointsByLabels) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(
      virtualService("reviews", {kReviews}, {httpRoute({dest(kReviews, "v1", 50), dest(kReviews, "v2", 50)})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Cluster* v1 = s->findCluster("outbound|9080|v1|reviews.default.svc.cluster.local");
  ASSERT_NE(v1, nullptr);
  ASSERT_EQ(v1->endpoints.size(), 1u);
  EXPECT_EQ(v1->endpoints[0].address, "127.100.0.1");
  EXPECT_EQ(v1->endpoints[0].key, "127.100.0.1:9080");
  EXPECT_EQ(v1->endpoints[0].weight, 1u);
  EXPECT_EQ(ntohs(v1->endpoints[0].sockaddr.sin_port), 9080);
  EXPECT_EQ(v1->endpoints[0].sockaddr.sin_family, AF_INET);
  EXPECT_EQ(ntohl(v1->endpoints[0].sockaddr.sin_addr.s_addr), 0x7f640001u);
  const Cluster* all = s->findCluster("outbound|9080||reviews.default.svc.cluster.local");
  ASSERT_NE(all, nullptr);
  EXPECT_EQ(all->endpoints.size(), 3u);
  EXPECT_EQ(s->clusters.at(all->index).get(), all);
  EXPECT_EQ(s->clusters.at(v1->index).get(), v1);
  // No cluster for v3: nothing references it.
  EXPECT_EQ(s->findCluster("outbound|9080|v3|reviews.default.svc.cluster.local"), nullptr);
}

TEST(RouteClusters, WorkloadEntriesSelectedByLabelsInTheSameNamespace) {
  config::Resources r;
  auto se = serviceEntry("reviews", {kReviews}, {port(9080, "http", 8080)});
  se.workloadSelector = {{"app", "reviews"}};
  r.serviceEntries.push_back(se);
  auto we = [](std::string name, std::string addr, std::map<std::string, std::string> labels, std::string ns) {
    config::WorkloadEntry w = endpoint(std::move(addr), std::move(labels));
    w.metadata.name = std::move(name);
    w.metadata.namespace_ = std::move(ns);
    return w;
  };
  r.workloadEntries.push_back(we("r1", "127.105.0.1", {{"app", "reviews"}, {"version", "v1"}}, "default"));
  r.workloadEntries.push_back(we("r2", "127.105.0.2", {{"app", "reviews"}, {"version", "v2"}}, "default"));
  r.workloadEntries.back().ports = {{"http", 9999}};
  r.workloadEntries.back().weight = 3;
  r.workloadEntries.push_back(we("other-ns", "127.105.0.3", {{"app", "reviews"}}, "prod"));
  r.workloadEntries.push_back(we("other-app", "127.105.0.4", {{"app", "ratings"}}, "default"));
  r.destinationRules.push_back(destinationRule("reviews", kReviews, {subset("v2", {{"version", "v2"}})}));
  r.virtualServices.push_back(virtualService("reviews", {kReviews}, {httpRoute({dest(kReviews, "v2")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Cluster* all = s->findCluster("outbound|9080||reviews.default.svc.cluster.local");
  ASSERT_NE(all, nullptr);
  ASSERT_EQ(all->endpoints.size(), 2u);
  EXPECT_EQ(all->endpoints[0].key, "127.105.0.1:8080");  // the SE port's targetPort
  EXPECT_EQ(all->endpoints[1].key, "127.105.0.2:9999");  // the entry's own port for "http"
  EXPECT_TRUE(all->unequalWeights);
  const Cluster* v2 = s->findCluster("outbound|9080|v2|reviews.default.svc.cluster.local");
  ASSERT_EQ(v2->endpoints.size(), 1u);
  EXPECT_EQ(v2->endpoints[0].address, "127.105.0.2");
  EXPECT_EQ(v2->endpoints[0].weight, 3u);
}

TEST(RouteClusters, DnsEndpointsAreSkippedWithAWarning) {
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("ext", {"ext.example.com"}, {port(80)},
                                          {endpoint("backend.example.com"), endpoint("127.106.0.1")}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Cluster* c = s->findCluster("outbound|80||ext.example.com");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->endpoints.size(), 1u);
  EXPECT_EQ(c->endpoints[0].address, "127.106.0.1");
  EXPECT_TRUE(hasWarning(*s, "backend.example.com"));
}

TEST(RouteClusters, UnknownSubsetAndUnknownHostAreMissing) {
  config::Resources r = bookinfo();
  r.virtualServices.push_back(virtualService(
      "reviews", {kReviews},
      {httpRoute({dest(kReviews, "v9")}, {uriPrefix("/a")}), httpRoute({dest("nowhere.default.svc.cluster.local")})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  const Cluster* v9 = s->findCluster("outbound|9080|v9|reviews.default.svc.cluster.local");
  ASSERT_NE(v9, nullptr);
  EXPECT_TRUE(v9->missing);
  EXPECT_TRUE(v9->endpoints.empty());
  EXPECT_TRUE(hasWarning(*s, "subset v9"));
  const Cluster* nowhere = s->findCluster("outbound|9080||nowhere.default.svc.cluster.local");
  ASSERT_NE(nowhere, nullptr);
  EXPECT_TRUE(nowhere->missing);
  EXPECT_TRUE(hasWarning(*s, "nowhere.default.svc.cluster.local matches no Service or ServiceEntry"));
  EXPECT_FALSE(s->findCluster("outbound|9080||reviews.default.svc.cluster.local")->missing);
}

// --- policy

TEST(ClusterPolicy, SubsetOverridesTopLevelAndPortLevelReplaces) {
  using Simple = config::LoadBalancerSettings::Simple;
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry(
      "reviews", {kReviews}, {port(9080, "http"), port(9443, "alt")},
      {endpoint("127.100.0.1", {{"version", "v1"}}), endpoint("127.100.0.2", {{"version", "v2"}})}));
  config::DestinationRule dr = destinationRule(
      "reviews", kReviews, {subset("v1", {{"version", "v1"}}), subset("v2", {{"version", "v2"}})});
  dr.trafficPolicy.emplace();
  dr.trafficPolicy->loadBalancer = lb(Simple::Random);
  dr.trafficPolicy->outlierDetection = config::OutlierDetection{};
  dr.trafficPolicy->outlierDetection->consecutive5xxErrors = 7;
  config::TrafficPolicy::PortTrafficPolicy pls;
  pls.port = config::PortSelector{9443};
  pls.loadBalancer = lb(Simple::RoundRobin);
  dr.trafficPolicy->portLevelSettings.push_back(pls);
  dr.subsets[1].trafficPolicy.emplace();
  dr.subsets[1].trafficPolicy->loadBalancer = lb(Simple::RoundRobin);
  r.destinationRules.push_back(dr);
  r.virtualServices.push_back(virtualService(
      "reviews", {kReviews}, {httpRoute({dest(kReviews, "v1", 50), dest(kReviews, "v2", 50)})}));
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);

  // Top level applies to the service-wide cluster and to v1 (no own policy).
  for (const char* name : {"outbound|9080||reviews.default.svc.cluster.local",
                           "outbound|9080|v1|reviews.default.svc.cluster.local"}) {
    const Cluster* c = s->findCluster(name);
    ASSERT_NE(c, nullptr) << name;
    EXPECT_EQ(c->lb, LbPolicy::Random) << name;
    ASSERT_TRUE(c->policy && c->policy->outlierDetection) << name;
    EXPECT_EQ(c->policy->outlierDetection->consecutive5xxErrors, 7u);
    EXPECT_TRUE(c->policy->portLevelSettings.empty());
  }
  // v2's own loadBalancer overrides; the rest is inherited field by field.
  const Cluster* v2 = s->findCluster("outbound|9080|v2|reviews.default.svc.cluster.local");
  EXPECT_EQ(v2->lb, LbPolicy::RoundRobin);
  ASSERT_TRUE(v2->policy->outlierDetection);
  EXPECT_EQ(v2->policy->outlierDetection->consecutive5xxErrors, 7u);
  // On 9443 the port-level entry replaces the whole top-level policy: its
  // loadBalancer, and no outlier detection since it names none.
  const Cluster* alt = s->findCluster("outbound|9443||reviews.default.svc.cluster.local");
  ASSERT_NE(alt, nullptr);
  EXPECT_EQ(alt->lb, LbPolicy::RoundRobin);
  EXPECT_FALSE(alt->policy->outlierDetection.has_value());
}

TEST(ClusterPolicy, DefaultsAndUnsupportedModes) {
  using Simple = config::LoadBalancerSettings::Simple;
  config::Resources r;
  r.serviceEntries.push_back(serviceEntry("a", {"a.example.com"}, {port(80)}, {endpoint("127.107.0.1")}));
  r.serviceEntries.push_back(serviceEntry("b", {"b.example.com"}, {port(80)}, {endpoint("127.107.0.2")}));
  r.serviceEntries.push_back(serviceEntry("c", {"c.example.com"}, {port(80)}, {endpoint("127.107.0.3")}));
  r.serviceEntries.push_back(serviceEntry("d", {"d.other.org"}, {port(80)}, {endpoint("127.107.0.4")}));
  auto pass = destinationRule("b", "b.example.com");
  pass.trafficPolicy.emplace();
  pass.trafficPolicy->loadBalancer = lb(Simple::Passthrough);
  r.destinationRules.push_back(pass);
  auto hash = destinationRule("c", "c.example.com");
  hash.trafficPolicy.emplace();
  hash.trafficPolicy->loadBalancer.emplace();
  hash.trafficPolicy->loadBalancer->consistentHash.emplace();
  hash.trafficPolicy->loadBalancer->consistentHash->httpHeaderName = "x-user";
  r.destinationRules.push_back(hash);
  auto wild = destinationRule("wild", "*.example.com");
  wild.trafficPolicy.emplace();
  wild.trafficPolicy->loadBalancer = lb(Simple::RoundRobin);
  r.destinationRules.push_back(wild);
  auto s = mustCompile(std::move(r));
  ASSERT_TRUE(s);
  // a: only the wildcard DR applies.
  EXPECT_EQ(s->findCluster("outbound|80||a.example.com")->lb, LbPolicy::RoundRobin);
  // b: exact DR beats the wildcard; PASSTHROUGH goes to the original
  // destination (least request when there is none).
  EXPECT_EQ(s->findCluster("outbound|80||b.example.com")->lb, LbPolicy::Passthrough);
  // c: consistent hash on a header, ring hash with Istio's default size.
  const Cluster* c = s->findCluster("outbound|80||c.example.com");
  EXPECT_EQ(c->lb, LbPolicy::RingHash);
  ASSERT_TRUE(c->hash);
  EXPECT_EQ(c->hash->kind, HashPolicy::Kind::Header);
  EXPECT_EQ(c->hash->name, "x-user");
  EXPECT_EQ(c->hash->ringSize, 1024u);
  // d: no DR at all: Istio's default.
  const Cluster* d = s->findCluster("outbound|80||d.other.org");
  EXPECT_EQ(d->lb, LbPolicy::LeastRequest);
  EXPECT_EQ(d->policy, nullptr);
}

}  // namespace
}  // namespace sluice::route
