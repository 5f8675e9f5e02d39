// Global rate limiting's configuration and decisions: the ratelimit
// service's own format (from a ConfigMap, as the seed writes it, or a
// plain file) and what it refuses; the descriptor tree's lookup as the
// service does it; the actions that build descriptors; the Redis keys; and
// which rate_limits a request gets (the route's, else its virtual host's).
#include <gtest/gtest.h>

#include "config/loader.h"
#include "route/global_rate_limit.h"

namespace sluice::route {
namespace {

config::LoadReport load(std::string_view yaml, std::vector<config::ConfigError>* errors = nullptr) {
  config::LoadReport report;
  auto errs = config::loadYaml(yaml, "rl.yaml", report);
  if (errors) *errors = errs;
  else for (const auto& e : errs) ADD_FAILURE() << e.str();
  return report;
}

std::string errorsText(std::string_view yaml) {
  std::vector<config::ConfigError> errors;
  load(yaml, &errors);
  std::string out;
  for (const auto& e : errors) out += e.str() + "\n";
  return out;
}

// The seed's ConfigMap, as written there.
constexpr std::string_view kSeedConfigMap = R"yaml(apiVersion: v1
kind: ConfigMap
metadata:
  name: ratelimit-config
  namespace: istio-system
data:
  config.yaml: |
    domain: production
    descriptors:
    - key: header_match
      value: api
      rate_limit:
        unit: minute
        requests_per_unit: 100
    - key: remote_address
      rate_limit:
        unit: second
        requests_per_unit: 10
)yaml";

TEST(RateLimitConfig, TheSeedsConfigMapLoads) {
  config::LoadReport r = load(kSeedConfigMap);
  ASSERT_EQ(r.resources.rateLimitDomains.size(), 1u);
  const auto& d = r.resources.rateLimitDomains[0];
  EXPECT_EQ(d.domain, "production");
  ASSERT_EQ(d.descriptors.size(), 2u);
  EXPECT_EQ(d.descriptors[0].key, "header_match");
  EXPECT_EQ(d.descriptors[0].value, "api");
  EXPECT_EQ(d.descriptors[0].rateLimit->unitSeconds, 60u);
  EXPECT_EQ(d.descriptors[0].rateLimit->requestsPerUnit, 100u);
  EXPECT_EQ(d.descriptors[1].rateLimit->unitSeconds, 1u);
  RateLimitDomain dom(d);
  const RateLimitRule* api = dom.find({{"header_match", "api"}});
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->requestsPerUnit, 100u);
  EXPECT_EQ(dom.find({{"header_match", "web"}}), nullptr);
  const RateLimitRule* addr = dom.find({{"remote_address", "198.18.0.7"}});
  ASSERT_NE(addr, nullptr);
  EXPECT_EQ(addr->requestsPerUnit, 10u);
  EXPECT_EQ(addr->fullKey, "production.remote_address");
}

TEST(RateLimitConfig, APlainFileAndOtherConfigMapsToo) {
  config::LoadReport r = load(R"yaml(domain: edge
descriptors:
- key: generic_key
  value: all
  rate_limit: {unit: HOUR, requests_per_unit: 5}
- key: generic_key
  value: weekly
  rate_limit: {unit: week, requests_per_unit: 5}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data:
  greeting: hello
  settings.yaml: |
    domain: shop.example.com
    port: 8080
)yaml");
  ASSERT_EQ(r.resources.rateLimitDomains.size(), 1u);
  EXPECT_EQ(r.resources.rateLimitDomains[0].descriptors[0].rateLimit->unitSeconds, 3600u);
  EXPECT_EQ(r.resources.rateLimitDomains[0].descriptors[1].rateLimit->unitSeconds, 7u * 86400);
  // A ConfigMap with no rate limit configuration (an application's own
  // `domain:` setting is none) is skipped as before.
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("skipping unsupported resource v1 ConfigMap unrelated"), std::string::npos);
  // One that names a domain and descriptors but is no YAML is an error.
  EXPECT_NE(errorsText("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rl}\ndata:\n  config.yaml: "
                       "\"domain: x\\ndescriptors: [\"\n")
                .find("data.config.yaml: YAML error in a rate limit configuration"),
            std::string::npos);
}

TEST(RateLimitConfig, WhatTheServiceRefusesIsAnErrorAtItsLine) {
  const std::string text = errorsText(R"yaml(apiVersion: v1
kind: ConfigMap
metadata: {name: rl}
data:
  config.yaml: |
    domain: shop
    descriptors:
    - key: user
      rate_limit: {unit: fortnight, requests_per_unit: 1}
    - key: user
      rate_limit: {unlimited: true, unit: second}
    - value: x
    - key: a
      colour: red
---
domain: shop
)yaml");
  EXPECT_NE(text.find("rl.yaml:9: ConfigMap default/rl: data.config.yaml.descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight'"),
            std::string::npos) << text;
  EXPECT_NE(text.find("should not be set when unlimited"), std::string::npos) << text;
  EXPECT_NE(text.find("duplicate descriptor composite key 'user'"), std::string::npos) << text;
  EXPECT_NE(text.find("descriptors[2].key: descriptor has empty key"), std::string::npos) << text;
  EXPECT_NE(text.find("rl.yaml:14: ConfigMap default/rl: data.config.yaml.descriptors[3].colour: unknown field"),
            std::string::npos) << text;
  EXPECT_NE(text.find("duplicate domain 'shop'"), std::string::npos) << text;
  EXPECT_NE(errorsText("descriptors: []\ndomain: \"\"\n").find("config file cannot have empty domain"),
            std::string::npos);
}

TEST(RateLimitDomain, LooksUpLevelByLevelAsTheServiceDoes) {
  config::LoadReport r = load(R"yaml(domain: d
descriptors:
- key: team
  value: blue
  descriptors:
  - key: path
    value: /slow
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    rate_limit: {unit: second, requests_per_unit: 50}
- key: team
  rate_limit: {unit: minute, requests_per_unit: 7}
- key: client
  value: beta-*
  rate_limit: {unit: second, requests_per_unit: 3}
- key: client
  value: free
  rate_limit: {unlimited: true}
)yaml");
  RateLimitDomain dom(r.resources.rateLimitDomains.at(0));
  auto limit = [&](Descriptor d) {
    const RateLimitRule* rule = dom.find(d);
    return rule ? (rule->unlimited ? -1 : int(rule->requestsPerUnit)) : 0;
  };
  EXPECT_EQ(limit({{"team", "blue"}, {"path", "/slow"}}), 1);
  EXPECT_EQ(limit({{"team", "blue"}, {"path", "/other"}}), 50);
  // team=blue has no limit of its own at depth one; any other team does.
  EXPECT_EQ(limit({{"team", "blue"}}), 0);
  EXPECT_EQ(limit({{"team", "red"}}), 7);
  // Deeper than the configuration: no limit.
  EXPECT_EQ(limit({{"team", "red"}, {"path", "/slow"}}), 0);
  EXPECT_EQ(limit({{"client", "beta-42"}}), 3);
  EXPECT_EQ(limit({{"client", "free"}}), -1);
  EXPECT_EQ(limit({{"client", "gold"}}), 0);
}

TEST(RateLimitCacheKey, IsTheServicesKeyForTheWindow) {
  EXPECT_EQ(rateLimitCacheKey("production", {{"header_match", "api"}}, 60, 1'700'000'059),
            "production_header_match_api_1700000040");
  EXPECT_EQ(rateLimitCacheKey("d", {{"team", "blue"}, {"path", "/slow"}}, 1, 17), "d_team_blue_path_/slow_17");
  EXPECT_EQ(rateLimitCacheKey("d", {{"k", "v"}}, 86400, 86400 * 3 + 5), "d_k_v_259200");
}

// A gateway's filter, with actions merged into every virtual host and into
// one route by name.
constexpr std::string_view kFilters = R"yaml(apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: production
          failure_mode_deny: true
          timeout: 10s
          rateLimitedStatus: {code: ServiceUnavailable}
          rate_limit_service:
            grpc_service:
              envoy_grpc: {cluster_name: outbound|8081||ratelimit.default.svc.cluster.local}
            transport_api_version: V3
  - applyTo: VIRTUAL_HOST
    match:
      context: GATEWAY
      routeConfiguration: {vhost: {name: "", route: {action: ANY}}}
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - header_value_match:
              descriptor_value: api
              headers: [{name: ":path", prefix_match: /api/}]
        - actions: [{remote_address: {}}]
  - applyTo: HTTP_ROUTE
    match:
      context: GATEWAY
      routeConfiguration: {vhost: {route: {name: checkout}}}
    patch:
      operation: MERGE
      value:
        route:
          rate_limits:
          - actions:
            - generic_key: {descriptor_value: checkout}
            - request_headers: {header_name: x-tenant, descriptor_key: tenant, skip_if_absent: true}
            - destination_cluster: {}
          - actions: [{header_value_match: {descriptor_value: anon, expect_match: false, headers: [{name: authorization, present_match: true}]}}]
          - actions: [{masked_remote_address: {}}]
)yaml";

TEST(GlobalRateLimits, TheFilterAndItsActionsCompile) {
  config::LoadReport r = load(std::string(kFilters) + "---\n" + std::string(kSeedConfigMap));
  std::vector<std::string> warnings;
  const RateLimitPolicies policies = compileRateLimitPolicies(r.resources.envoyFilters, std::nullopt, warnings);
  auto limits = compileGlobalRateLimits(r.resources.envoyFilters, r.resources.rateLimitDomains, policies, std::nullopt,
                                        [](std::string_view) { return nullptr; }, warnings);
  ASSERT_EQ(limits.size(), 1u);
  const GlobalRateLimit& l = *limits[0];
  EXPECT_EQ(l.config.domain, "production");
  EXPECT_TRUE(l.config.failureModeDeny);
  EXPECT_EQ(l.config.timeout, std::chrono::seconds(10));
  EXPECT_EQ(l.config.rateLimitedStatus, 503u);
  EXPECT_EQ(l.config.serviceCluster, "outbound|8081||ratelimit.default.svc.cluster.local");
  EXPECT_TRUE(l.gateway);
  EXPECT_FALSE(l.outbound);
  ASSERT_NE(l.domain, nullptr);
  // The masked_remote_address entry is left out, and said so.
  ASSERT_EQ(policies.list.size(), 4u);
  std::string all;
  for (const auto& w : r.warnings) all += w + "\n";
  EXPECT_NE(all.find("this action is not supported yet"), std::string::npos) << all;

  http::HeaderMap headers;
  headers.add("x-tenant", "acme");
  RateLimitRequest req;
  req.path = "/api/items?x=1";
  req.headers = &headers;
  req.remoteAddress = "198.18.0.7";
  req.destinationCluster = "outbound|80||shop.default.svc.cluster.local";
  // Any other route: the virtual host's entries.
  std::vector<Descriptor> out;
  policies.descriptors(true, 80, "shop.example.com:80", "browse", req, out);
  EXPECT_EQ(out, (std::vector<Descriptor>{{{"header_match", "api"}}, {{"remote_address", "198.18.0.7"}}}));
  // The checkout route has entries of its own: only those apply.
  out.clear();
  policies.descriptors(true, 80, "shop.example.com:80", "checkout", req, out);
  EXPECT_EQ(out, (std::vector<Descriptor>{
                     {{"generic_key", "checkout"}, {"tenant", "acme"}, {"destination_cluster", std::string(req.destinationCluster)}},
                     {{"header_match", "anon"}}}));
  // Without the tenant the entry skips it; with credentials "anon" does not hold.
  headers.clear();
  headers.add("authorization", "Bearer x");
  out.clear();
  policies.descriptors(true, 80, "shop.example.com:80", "checkout", req, out);
  EXPECT_EQ(out, (std::vector<Descriptor>{{{"generic_key", "checkout"}, {"destination_cluster", std::string(req.destinationCluster)}}}));
  // Not a gateway request: not this filter's.
  EXPECT_FALSE(l.appliesTo(false, 80));
}

TEST(RateLimitPolicy, HeaderMatchersReadAsEnvoysDo) {
  config::LoadReport r = load(R"yaml(apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl}
spec:
  configPatches:
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {route: {name: ignored-for-a-vhost}}}}
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions: [{header_value_match: {descriptor_value: not-beta, headers: [{name: x-tier, exact_match: beta, invert_match: true}]}}]
        - actions: [{header_value_match: {descriptor_value: no-auth, headers: [{name: authorization, present_match: true, invert_match: true}]}}]
        - actions: [{header_value_match: {descriptor_value: any-tier, headers: [{name: x-tier, exact_match: ""}]}}]
        - actions: [{header_value_match: {descriptor_value: both, headers: [{name: x-tier, string_match: {exact: "GOLD,BETA", ignore_case: true}}]}}]
)yaml");
  ASSERT_EQ(r.resources.envoyFilters.at(0).patches.at(0).routeName, "") << "a vhost patch has no route part";
  RateLimitPolicy p[4];
  for (int i = 0; i < 4; ++i) p[i].actions = r.resources.envoyFilters[0].patches[0].rateLimits.at(size_t(i)).actions;
  auto built = [&](const http::HeaderMap& h) {
    RateLimitRequest req;
    req.headers = &h;
    std::vector<Descriptor> out;
    for (const auto& policy : p) policy.build(req, out);
    std::string names;
    for (const auto& d : out) names += d[0].value + " ";
    return names;
  };
  // Absent: an inverted value match does not hold, an inverted presence one does.
  EXPECT_EQ(built(http::HeaderMap{}), "no-auth ");
  http::HeaderMap gold;
  gold.add("x-tier", "gold");
  gold.add("x-tier", "beta");
  gold.add("authorization", "Bearer t");
  // Values joined with ',' as Envoy matches them; exact "" matches any value.
  EXPECT_EQ(built(gold), "not-beta any-tier both ");
}

TEST(GlobalRateLimits, AMissingDomainOrNoActionsIsReported) {
  config::LoadReport r = load(R"yaml(apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: nowhere
)yaml");
  std::vector<std::string> warnings;
  const RateLimitPolicies policies = compileRateLimitPolicies(r.resources.envoyFilters, std::nullopt, warnings);
  auto limits = compileGlobalRateLimits(r.resources.envoyFilters, r.resources.rateLimitDomains, policies, std::nullopt,
                                        [](std::string_view) { return nullptr; }, warnings);
  ASSERT_EQ(limits.size(), 1u);
  EXPECT_EQ(limits[0]->domain, nullptr);
  EXPECT_EQ(limits[0]->config.timeout, std::chrono::milliseconds(20));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("no rate limit configuration for domain \"nowhere\""), std::string::npos);
  EXPECT_NE(warnings[1].find("no rate_limits actions reach its listeners"), std::string::npos);
}

TEST(GlobalRateLimits, BadFilterSettingsAreErrors) {
  const std::string text = errorsText(R"yaml(apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          failure_mode_deny: maybe
          rate_limit_service: {transport_api_version: V2}
  - applyTo: VIRTUAL_HOST
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions: []
        - actions: [{request_headers: {descriptor_key: k}}, {generic_key: {}}]
)yaml");
  EXPECT_NE(text.find("domain: is required"), std::string::npos) << text;
  EXPECT_NE(text.find("failure_mode_deny"), std::string::npos) << text;
  EXPECT_NE(text.find("use V3"), std::string::npos) << text;
  EXPECT_NE(text.find("rate_limits[0].actions: at least one action is required"), std::string::npos) << text;
  EXPECT_NE(text.find("header_name: is required"), std::string::npos) << text;
  EXPECT_NE(text.find("descriptor_value: is required"), std::string::npos) << text;
}

}  // namespace
}  // namespace sluice::route
