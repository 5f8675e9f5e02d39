// HTTP global rate limiting (an EnvoyFilter inserting
// envoy.filters.http.ratelimit, and the `rate_limits` merged into virtual
// hosts and routes): the descriptors a request's actions build, and
// envoyproxy/ratelimit's decision for them: its descriptor tree (the
// domain's configuration) and its fixed-window Redis keys. The filter
// that applies it is proxy/filters/global_rate_limit_filter.cc; the
// counting happens in Redis (proxy/redis_client.h), so every sluiced and
// ratelimit service sharing that Redis enforces one limit.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/model.h"
#include "http/header_map.h"

namespace sluice::route {

struct Cluster;

struct DescriptorEntry {
  std::string key;
  std::string value;
  bool operator==(const DescriptorEntry&) const = default;
};
using Descriptor = std::vector<DescriptorEntry>;

// What the actions read of a request.
struct RateLimitRequest {
  std::string_view method, path, authority, scheme;  // the pseudo-headers
  const http::HeaderMap* headers = nullptr;
  std::string_view remoteAddress;       // the client's IP
  std::string_view destinationCluster;  // the route's chosen cluster
};

// One `rate_limits` entry: its actions in order.
struct RateLimitPolicy {
  std::vector<config::RateLimitActionConfig> actions;
  // Appends this entry's descriptor to `out`; nothing when an action
  // cannot produce its entry (Envoy then sends no descriptor for it).
  void build(const RateLimitRequest& req, std::vector<Descriptor>& out) const;
};

// A limit of the domain's configuration.
struct RateLimitRule {
  uint32_t requestsPerUnit = 0;
  uint32_t unitSeconds = 0;
  bool unlimited = false;
  bool shadowMode = false;
  std::string fullKey;  // "domain.key_value.key", as the service names its stats
};

// One domain's descriptor tree, looked up as envoyproxy/ratelimit does:
// level by level, "key_value" first, then a value prefix ending in '*',
// then "key" alone; the limit is the one of the node the last entry
// reaches.
class RateLimitDomain {
 public:
  explicit RateLimitDomain(const config::RateLimitDomainConfig& c);
  const std::string& name() const { return name_; }
  // Null: no limit for this descriptor.
  const RateLimitRule* find(const Descriptor& d) const;

 private:
  struct Node {
    std::unordered_map<std::string, Node> children;  // by "key_value" or "key"
    std::vector<std::string> wildcards;               // children keys ending in '*'
    std::optional<RateLimitRule> rule;
  };
  static void load(Node& into, const std::vector<config::RateLimitDescriptorConfig>& list, const std::string& parent);
  std::string name_;
  Node root_;
};

// The Redis key of a descriptor's counter for the window `nowSec` (unix
// seconds) falls in: domain_key_value_..._windowStart, as envoyproxy/ratelimit
// writes it, so both count into one key.
std::string rateLimitCacheKey(std::string_view domain, const Descriptor& d, uint32_t unitSeconds, uint64_t nowSec);

// The `rate_limits` EnvoyFilter patches merged into virtual hosts and
// routes, for both rate limit filters to build descriptors from.
struct RateLimitPolicies {
  struct Scoped {
    bool gateway = false, outbound = false;
    uint32_t port = 0;
    std::string vhostName;  // "" any
    std::string routeName;  // "" any
    bool routeLevel = false;  // an HTTP_ROUTE merge
    RateLimitPolicy policy;
  };
  std::vector<Scoped> list;
  // The request's descriptors: its route's rate_limits, or when it has
  // none its virtual host's, as Envoy applies them.
  void descriptors(bool onGateway, uint32_t listenerPort, std::string_view vhostName, std::string_view routeName,
                   const RateLimitRequest& req, std::vector<Descriptor>& out) const;
  bool reaches(bool gateway, bool outbound) const;
};

// The rate_limits of `filters`' VIRTUAL_HOST and HTTP_ROUTE merges.
RateLimitPolicies compileRateLimitPolicies(const std::vector<config::EnvoyFilter>& filters,
                                           const std::optional<std::map<std::string, std::string>>& gatewayLabels,
                                           std::vector<std::string>& warnings);

// One EnvoyFilter patch's global rate limit filter, on the listeners it
// applies to (its descriptors: RateLimitPolicies).
struct GlobalRateLimit {
  std::string origin;  // "ns/name#patch"
  config::GlobalRateLimitConfig config;
  bool gateway = false;
  bool outbound = false;
  uint32_t port = 0;  // 0: every port
  // The domain's configuration (null: none loaded, so nothing is limited).
  std::shared_ptr<const RateLimitDomain> domain;
  // The cluster rate_limit_service names (null: none, or not one of this
  // configuration's): without --redis, it decides (proxy/rls_client.h).
  const Cluster* service = nullptr;
  http::HeaderMap limitedHeaders;  // x-envoy-ratelimited (unless disabled)

  bool appliesTo(bool onGateway, uint32_t listenerPort) const {
    return (onGateway ? gateway : outbound) && (!port || port == listenerPort);
  }
};

// The global rate limits of `filters` in priority then load order, each
// with the domain configuration of its `domain` from `domains`; those
// `policies` give no descriptor are reported.
// `findCluster` resolves rate_limit_service's cluster_name.
std::vector<std::shared_ptr<const GlobalRateLimit>> compileGlobalRateLimits(
    const std::vector<config::EnvoyFilter>& filters, const std::vector<config::RateLimitDomainConfig>& domains,
    const RateLimitPolicies& policies, const std::optional<std::map<std::string, std::string>>& gatewayLabels,
    const std::function<const Cluster*(std::string_view)>& findCluster, std::vector<std::string>& warnings);

}  // namespace sluice::route
