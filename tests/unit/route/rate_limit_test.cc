// Local rate limiting: the token bucket's arithmetic (alone and shared by
// threads), the EnvoyFilter forms it is read from (direct and TypedStruct,
// snake_case and camelCase, status names, fractions), what is refused or
// reported, and the state a reload keeps.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "config/loader.h"
#include "core/clock.h"
#include "route/rate_limit.h"

namespace sluice::route {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kMs = 1'000'000;

TEST(TokenBucket, StartsFullAndRefillsPerIntervalUpToMax) {
  TokenBucket b(10, 4, 100 * kMs, 1000 * kMs);
  uint64_t now = 1000 * kMs;
  int taken = 0;
  while (b.take(now)) ++taken;
  EXPECT_EQ(taken, 10);
  now += 99 * kMs;
  EXPECT_FALSE(b.take(now)) << "no fill before the interval ends";
  now += 1 * kMs;
  taken = 0;
  while (b.take(now)) ++taken;
  EXPECT_EQ(taken, 4);
  // Three intervals at once credit 12, capped at 10.
  now += 300 * kMs;
  taken = 0;
  while (b.take(now)) ++taken;
  EXPECT_EQ(taken, 10);
  // A clock read before the start (another thread's older reading) takes no fill.
  EXPECT_FALSE(b.take(500 * kMs));
}

TEST(TokenBucket, ThreadsTakeExactlyWhatTheBucketHolds) {
  // Four threads race over simulated time: together they admit max +
  // fills x perFill, never a token more.
  TokenBucket b(100, 10, 10 * kMs, 0);
  std::atomic<uint64_t> clock{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        const uint64_t now = clock.fetch_add(5000, std::memory_order_relaxed);  // 5 us per take
        if (b.take(now)) admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : threads) t.join();
  // 80,000 takes x 5 us = 400 ms: 40 intervals, the last maybe not credited.
  const uint64_t fills = (clock.load() - 5000) / (10 * kMs);
  EXPECT_GE(admitted.load(), int(100 + (fills - 1) * 10));
  EXPECT_LE(admitted.load(), int(100 + fills * 10));
}

struct Compiled {
  std::vector<config::ConfigError> errors;
  std::vector<std::string> loadWarnings;
  std::vector<std::string> warnings;
  std::vector<std::shared_ptr<LocalRateLimit>> limits;
};

Compiled compileYaml(const std::string& yaml,
                     std::optional<std::map<std::string, std::string>> gatewayLabels = std::nullopt) {
  Compiled c;
  config::LoadReport report;
  c.errors = config::loadYaml(yaml, "ef.yaml", report);
  c.loadWarnings = report.warnings;
  // A Gateway listener on 80; outbound HTTP services on 80 and 9080.
  if (c.errors.empty())
    c.limits = compileLocalRateLimits(report.resources.envoyFilters, gatewayLabels, {80}, {80, 9080}, 0, c.warnings);
  return c;
}

std::string envoyFilter(const std::string& context, const std::string& typedConfig, const std::string& extra = "") {
  return "apiVersion: networking.istio.io/v1alpha3\n"
         "kind: EnvoyFilter\n"
         "metadata: {name: rl, namespace: istio-system}\n"
         "spec:\n" + extra +
         "  configPatches:\n"
         "  - applyTo: HTTP_FILTER\n"
         "    match: {context: " + context + "}\n"
         "    patch:\n"
         "      operation: INSERT_BEFORE\n"
         "      value:\n"
         "        name: envoy.filters.http.local_ratelimit\n"
         "        typed_config:\n" + typedConfig;
}

const std::string kDirect =
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n";

TEST(LocalRateLimitConfig, TypedStructCamelCaseStatusNumbersAndFractions) {
  auto c = compileYaml(envoyFilter("ANY",
                                   "          \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n"
                                   "          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
                                   "          value:\n"
                                   "            statPrefix: p\n"
                                   "            tokenBucket: {maxTokens: 5, fillInterval: 0.5s}\n"
                                   "            filterEnabled: {defaultValue: {numerator: 2500, denominator: TEN_THOUSAND}}\n"
                                   "            filterEnforced: {runtimeKey: k, defaultValue: {numerator: 7, denominator: MILLION}}\n"
                                   "            status: {code: 503}\n"
                                   "            responseHeadersToAdd:\n"
                                   "            - header: {key: X-A, value: one}\n"
                                   "            - header: {key: x-a, value: two}\n"
                                   "              append_action: ADD_IF_ABSENT\n"
                                   "            - header: {key: x-b, value: three}\n"
                                   "              append: false\n"
                                   "            - header: {key: x-empty, value: \"\"}\n"
                                   "            - header: {key: content-type, value: application/json}\n"));
  ASSERT_TRUE(c.errors.empty()) << c.errors[0].str();
  ASSERT_EQ(c.limits.size(), 1u);
  const LocalRateLimit& l = *c.limits[0];
  // ANY: a bucket per listener, Gateway and outbound, as each Envoy
  // listener has its own filter.
  EXPECT_EQ(l.states.size(), 3u);
  EXPECT_NE(l.stateFor(true, 80), nullptr);
  EXPECT_NE(l.stateFor(false, 80), l.stateFor(true, 80));
  EXPECT_NE(l.stateFor(false, 9080), nullptr);
  EXPECT_EQ(l.stateFor(true, 9080), nullptr);
  EXPECT_EQ(l.config.statPrefix, "p");
  EXPECT_EQ(l.config.maxTokens, 5u);
  EXPECT_EQ(l.config.tokensPerFill, 1u) << "Envoy's default";
  EXPECT_EQ(l.config.fillInterval, 500ms);
  EXPECT_EQ(l.config.enabledPpm, 250'000u);
  EXPECT_EQ(l.config.enforcedPpm, 7u);
  EXPECT_EQ(l.config.status, 503u);
  EXPECT_EQ(l.responseHeaders.get("x-envoy-ratelimited"), "true");
  EXPECT_EQ(l.responseHeaders.get("x-a"), "one") << "ADD_IF_ABSENT leaves the first";
  EXPECT_EQ(l.responseHeaders.get("x-b"), "three");
  EXPECT_FALSE(l.responseHeaders.has("x-empty")) << "keep_empty_value unset: not sent";
  EXPECT_EQ(l.responseHeaders.get("content-type"), "application/json");
  EXPECT_EQ(l.responseHeaders.size(), 4u);
}

TEST(LocalRateLimitConfig, StatusNamesAndCodesBelow400) {
  auto named = compileYaml(envoyFilter("GATEWAY", kDirect +
                                                      "          stat_prefix: p\n"
                                                      "          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
                                                      "          status: {code: ServiceUnavailable}\n"));
  ASSERT_TRUE(named.errors.empty()) << named.errors[0].str();
  EXPECT_EQ(named.limits[0]->config.status, 503u);
  EXPECT_EQ(named.limits[0]->config.enabledPpm, 0u) << "unset filter_enabled: off, as Envoy";
  auto low = compileYaml(envoyFilter("GATEWAY", kDirect +
                                                    "          stat_prefix: p\n"
                                                    "          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
                                                    "          status: {code: OK}\n"));
  ASSERT_TRUE(low.errors.empty());
  EXPECT_EQ(low.limits[0]->config.status, 429u) << "a code below 400 becomes 429";
}

TEST(LocalRateLimitConfig, BadBucketsAreErrors) {
  auto check = [](const std::string& typed, const std::string& want) {
    auto c = compileYaml(envoyFilter("GATEWAY", kDirect + typed));
    std::string all;
    for (const auto& e : c.errors) all += e.str() + "\n";
    EXPECT_NE(all.find(want), std::string::npos) << "want \"" << want << "\" in:\n" << all;
  };
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 10ms}\n",
        "fill_interval: must be at least 50ms");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 0, fill_interval: 1s}\n", "max_tokens");
  check("          token_bucket: {max_tokens: 1, fill_interval: 1s}\n", "stat_prefix: is required");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
        "          filter_enforced: {runtime_key: k}\n",
        "filter_enforced.default_value: is required");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
        "          status: {code: 418}\n",
        "status code 418 is not one of Envoy's StatusCode values");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
        "          response_headers_to_add: [{header: {key: Content-Length, value: \"0\"}}]\n",
        "\"content-length\" cannot be set on a local reply");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
        "          status: {code: Teapot}\n",
        "unknown status code \"Teapot\"");
  check("          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
        "          filter_enabled: {default_value: {numerator: 1, denominator: THOUSAND}}\n",
        "denominator");
}

TEST(LocalRateLimitConfig, OtherPatchesSelectorsAndInboundAreReported) {
  const std::string bucket = kDirect + "          stat_prefix: p\n          token_bucket: {max_tokens: 1, fill_interval: 1s}\n";
  // A selector on a gateway patch: served when the gateway workload's labels match.
  auto selected = compileYaml(envoyFilter("GATEWAY", bucket, "  workloadSelector: {labels: {istio: ingress}}\n"),
                              std::map<std::string, std::string>{{"istio", "egress"}});
  EXPECT_TRUE(selected.limits.empty()) << "another gateway's filter";
  auto matched = compileYaml(envoyFilter("GATEWAY", bucket, "  workloadSelector: {labels: {istio: ingress}}\n"),
                             std::map<std::string, std::string>{{"istio", "ingress"}, {"app", "gw"}});
  EXPECT_EQ(matched.limits.size(), 1u);
  // ... on an outbound patch it cannot select: reported, not applied.
  auto outbound = compileYaml(envoyFilter("SIDECAR_OUTBOUND", bucket, "  workloadSelector: {labels: {app: a}}\n"));
  EXPECT_TRUE(outbound.limits.empty());
  ASSERT_EQ(outbound.warnings.size(), 1u);
  EXPECT_NE(outbound.warnings[0].find("workloadSelector cannot select outbound traffic"), std::string::npos);
  auto inbound = compileYaml(envoyFilter("SIDECAR_INBOUND", bucket));
  EXPECT_TRUE(inbound.limits.empty());
  ASSERT_EQ(inbound.warnings.size(), 1u);
  EXPECT_NE(inbound.warnings[0].find("SIDECAR_INBOUND"), std::string::npos);
  // Without a bucket (Envoy's per-route form) and no per-route limit to
  // give it one: in the chain, limiting nothing, and said so.
  auto noBucket = compileYaml(envoyFilter("GATEWAY", kDirect + "          stat_prefix: p\n"));
  EXPECT_TRUE(noBucket.errors.empty());
  EXPECT_EQ(noBucket.limits.size(), 1u);
  ASSERT_EQ(noBucket.warnings.size(), 1u);
  EXPECT_NE(noBucket.warnings[0].find("limits nothing"), std::string::npos) << noBucket.warnings[0];
  // A descriptor needs its own bucket.
  auto descriptors = compileYaml(envoyFilter("GATEWAY", bucket + "          descriptors: [{entries: [{key: a, value: b}]}]\n"));
  std::string descriptorErrors;
  for (const auto& e : descriptors.errors) descriptorErrors += e.str() + "\n";
  EXPECT_NE(descriptorErrors.find("descriptors[0].token_bucket: is required"), std::string::npos) << descriptorErrors;
  // Narrowed by a listener match Sluice cannot follow: reported, not applied.
  auto sni = compileYaml(
      "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl, namespace: istio-system}\n"
      "spec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n"
      "    match: {context: GATEWAY, listener: {filterChain: {sni: a.example.com, filter: {name: x}}}}\n"
      "    patch:\n      operation: INSERT_BEFORE\n      value:\n        name: envoy.filters.http.local_ratelimit\n"
      "        typed_config:\n" + bucket);
  EXPECT_TRUE(sni.limits.empty());
  ASSERT_EQ(sni.warnings.size(), 1u);
  EXPECT_NE(sni.warnings[0].find("matched by listener.filterChain.sni"), std::string::npos) << sni.warnings[0];
  // INSERT_FIRST still runs before the router, and says so.
  auto first = compileYaml(
      "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl, namespace: istio-system}\n"
      "spec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    match: {context: GATEWAY}\n"
      "    patch:\n      operation: INSERT_FIRST\n      value:\n        name: envoy.filters.http.local_ratelimit\n"
      "        typed_config:\n" + bucket);
  EXPECT_EQ(first.limits.size(), 1u);
  ASSERT_EQ(first.warnings.size(), 1u);
  EXPECT_NE(first.warnings[0].find("INSERT_FIRST: the local rate limit runs just before the router"), std::string::npos);
  auto other = compileYaml(
      "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: x, namespace: default}\n"
      "spec:\n  configPatches:\n  - applyTo: CLUSTER\n    match: {context: SIDECAR_OUTBOUND}\n"
      "    patch: {operation: MERGE, value: {connect_timeout: 1s}}\n");
  ASSERT_TRUE(other.errors.empty()) << other.errors[0].str();
  EXPECT_TRUE(other.limits.empty());
  ASSERT_EQ(other.warnings.size(), 1u);
  EXPECT_NE(other.warnings[0].find("EnvoyFilter default/x (ef.yaml:6): CLUSTER MERGE is not supported"),
            std::string::npos)
      << other.warnings[0];
}

// A typed_per_filter_config patch of `applyTo` for virtual host `vhost`
// and route `route`, with `bucket` tokens.
std::string perRoute(const std::string& applyTo, const std::string& vhost, const std::string& route, int bucket,
                     const std::string& extra = "") {
  return "  - applyTo: " + applyTo + "\n"
         "    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {name: \"" + vhost + "\", route: {name: \"" +
         route + "\"}}}}\n"
         "    patch:\n"
         "      operation: MERGE\n"
         "      value:\n"
         "        typed_per_filter_config:\n"
         "          envoy.filters.http.local_ratelimit:\n"
         "            \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
         "            stat_prefix: p" + std::to_string(bucket) + "\n"
         "            token_bucket: {max_tokens: " + std::to_string(bucket) + ", fill_interval: 60s}\n" + extra;
}

TEST(LocalRateLimitConfig, TheMostSpecificPerRouteSettingsWin) {
  auto c = compileYaml(
      "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl, namespace: istio-system}\n"
      "spec:\n  configPatches:\n"
      "  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_OUTBOUND}\n"
      "    patch:\n      operation: INSERT_BEFORE\n      value:\n        name: envoy.filters.http.local_ratelimit\n"
      "        typed_config:\n" + kDirect + "          stat_prefix: own\n"
      "          token_bucket: {max_tokens: 1, fill_interval: 60s}\n" +
      perRoute("VIRTUAL_HOST", "shop:80", "", 2) + perRoute("HTTP_ROUTE", "", "checkout", 3) +
      perRoute("VIRTUAL_HOST", "", "", 4));
  ASSERT_TRUE(c.errors.empty()) << testing::PrintToString(c.warnings);
  ASSERT_EQ(c.limits.size(), 4u);
  const LocalRateLimit& own = *c.limits[0];
  EXPECT_FALSE(own.perRoute);
  auto pick = [&](std::string_view vhost, std::string_view route) {
    return effectiveLocalRateLimit(own, c.limits, false, 80, vhost, route).config.statPrefix;
  };
  // A route's beats any virtual host's; among virtual hosts' the one
  // applied last (here the one for every virtual host).
  EXPECT_EQ(pick("shop:80", "checkout"), "p3");
  EXPECT_EQ(pick("shop:80", "browse"), "p4");
  EXPECT_EQ(pick("other:80", "checkout"), "p3");
  // A listener the per-route patches do not reach keeps the filter's own.
  EXPECT_EQ(effectiveLocalRateLimit(own, c.limits, true, 80, "shop:80", "checkout").config.statPrefix, "own");
}

TEST(LocalRateLimitConfig, PerRouteSettingsAreCheckedAndKeptApart) {
  const std::string head =
      "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl, namespace: istio-system}\n"
      "spec:\n  configPatches:\n"
      "  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_OUTBOUND}\n"
      "    patch:\n      operation: INSERT_BEFORE\n      value:\n        name: envoy.filters.http.local_ratelimit\n"
      "        typed_config:\n" + kDirect + "          stat_prefix: own\n";
  // Envoy refuses a per-route config without a bucket, and duplicate descriptors.
  auto noBucket = compileYaml(head + perRoute("HTTP_ROUTE", "", "a", 2).substr(0, perRoute("HTTP_ROUTE", "", "a", 2).find("            token_bucket")));
  std::string errs;
  for (const auto& e : noBucket.errors) errs += e.str() + "\n";
  EXPECT_NE(errs.find("token_bucket: is required in a per-route config"), std::string::npos) << errs;
  auto dup = compileYaml(head + perRoute("HTTP_ROUTE", "", "a", 2,
                                         "            descriptors:\n"
                                         "            - {entries: [{key: k, value: v}], token_bucket: {max_tokens: 1, fill_interval: 1s}}\n"
                                         "            - {entries: [{key: k, value: v}], token_bucket: {max_tokens: 2, fill_interval: 1s}}\n"));
  errs.clear();
  for (const auto& e : dup.errors) errs += e.str() + "\n";
  EXPECT_NE(errs.find("descriptors[1]: duplicate descriptor"), std::string::npos) << errs;
  // Two routes' identical settings: a reload that drops the first keeps
  // each route's own bucket (the second does not inherit the first's).
  auto both = compileYaml(head + perRoute("HTTP_ROUTE", "", "a", 2) + perRoute("HTTP_ROUTE", "", "b", 2));
  ASSERT_EQ(both.limits.size(), 3u);
  EXPECT_TRUE(both.limits[1]->stateFor(false, 80)->bucket->take(0));  // route a spends one
  auto onlyB = compileYaml(head + perRoute("HTTP_ROUTE", "", "b", 2));
  inheritRateLimitState(onlyB.limits, both.limits);
  EXPECT_EQ(onlyB.limits[1]->stateFor(false, 80)->bucket->tokens(), 2u);
  // A per-route config for a filter of another name replaces nothing, and says so.
  auto other = compileYaml(head + perRoute("HTTP_ROUTE", "", "a", 2).replace(
                                      perRoute("HTTP_ROUTE", "", "a", 2).find("envoy.filters.http.local_ratelimit:"),
                                      35, "my.limit:"));
  ASSERT_EQ(other.limits.size(), 2u);
  EXPECT_FALSE(other.limits[0]->hasPerRoute);
  EXPECT_NE(testing::PrintToString(other.warnings).find("configures filter \\\"my.limit\\\""), std::string::npos)
      << testing::PrintToString(other.warnings);
}

TEST(LocalRateLimitState, TheSlowestDescriptorBucketIsTriedFirst) {
  config::LocalRateLimitConfig cfg;
  cfg.descriptors.push_back({{{"k", "fast"}}, 100, 100, std::chrono::seconds(1)});
  cfg.descriptors.push_back({{{"k", "slow"}}, 1, 1, std::chrono::seconds(60)});
  LocalRateLimitState st(cfg, 0);
  const std::vector<Descriptor> both = {{{"k", "fast"}}, {{"k", "slow"}}};
  EXPECT_TRUE(st.take(cfg, both, 0));
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(st.take(cfg, both, 0));
  // The strict bucket refused them all before the loose one was touched.
  EXPECT_EQ(st.descriptorBuckets[0]->tokens(), 99u);
}

TEST(LocalRateLimitState, DescriptorBucketsThenTheDefaultOne) {
  config::LocalRateLimitConfig cfg;
  cfg.hasBucket = true;
  cfg.maxTokens = 3;
  cfg.fillInterval = std::chrono::seconds(60);
  cfg.descriptors.push_back({{{"user", "ann"}}, 1, 1, std::chrono::seconds(60)});
  LocalRateLimitState st(cfg, 0);
  const std::vector<Descriptor> ann = {{{"user", "ann"}}};
  const std::vector<Descriptor> bob = {{{"user", "bob"}}};
  EXPECT_TRUE(st.take(cfg, ann, 0));   // ann's token and a default one
  EXPECT_FALSE(st.take(cfg, ann, 0));  // ann's bucket is empty (the default one untouched)
  EXPECT_TRUE(st.take(cfg, bob, 0));   // no descriptor matches: the default bucket
  EXPECT_TRUE(st.take(cfg, {}, 0));
  EXPECT_FALSE(st.take(cfg, {}, 0));
  // Without always_consume_default_token_bucket a matched descriptor spares the default bucket.
  cfg.alwaysConsumeDefault = false;
  cfg.maxTokens = 1;
  LocalRateLimitState spare(cfg, 0);
  EXPECT_TRUE(spare.take(cfg, ann, 0));
  EXPECT_TRUE(spare.take(cfg, {}, 0));
  EXPECT_FALSE(spare.take(cfg, {}, 0));
}

TEST(LocalRateLimitConfig, AReloadKeepsTheStateOfAnUnchangedBucketOnly) {
  const auto yaml = [](int max) {
    return envoyFilter("GATEWAY", kDirect + "          stat_prefix: p\n          token_bucket: {max_tokens: " +
                                      std::to_string(max) + ", fill_interval: 1s}\n");
  };
  auto before = compileYaml(yaml(3));
  auto same = compileYaml(yaml(3));
  auto changed = compileYaml(yaml(4));
  ASSERT_EQ(before.limits.size(), 1u);
  EXPECT_TRUE(before.limits[0]->stateFor(true, 80)->bucket->take(0));
  inheritRateLimitState(same.limits, before.limits);
  inheritRateLimitState(changed.limits, before.limits);
  EXPECT_EQ(same.limits[0]->stateFor(true, 80), before.limits[0]->stateFor(true, 80));
  EXPECT_EQ(same.limits[0]->stateFor(true, 80)->bucket->tokens(), 2u);
  EXPECT_NE(changed.limits[0]->stateFor(true, 80), before.limits[0]->stateFor(true, 80));
  EXPECT_EQ(changed.limits[0]->stateFor(true, 80)->bucket->tokens(), 4u);
}

}  // namespace
}  // namespace sluice::route
