// HTTP local rate limiting (an EnvoyFilter inserting
// envoy.filters.http.local_ratelimit): a token bucket per limit and
// listener, shared by every worker without a lock, and its counters. The
// filter that applies it is proxy/filters/rate_limit_filter.cc.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/model.h"
#include "http/header_map.h"
#include "route/global_rate_limit.h"

namespace sluice::route {

// Envoy's token bucket: starts full with `max` tokens; every `intervalNs`
// `perFill` more, never past `max`. Over any span, what it admits is max +
// fills x perFill, whatever the number of threads taking from it.
class TokenBucket {
 public:
  TokenBucket(uint64_t max, uint64_t perFill, uint64_t intervalNs, uint64_t startNs)
      : max_(max), perFill_(std::max<uint64_t>(1, perFill)), intervalNs_(std::max<uint64_t>(1, intervalNs)),
        startNs_(startNs), tokens_(max) {}
  // Takes one token at `nowNs` (monotonic); false when there is none.
  bool take(uint64_t nowNs);
  uint64_t tokens() const { return tokens_.load(std::memory_order_relaxed); }

 private:
  const uint64_t max_, perFill_, intervalNs_, startNs_;
  std::atomic<uint64_t> tokens_;
  std::atomic<uint64_t> fills_{0};  // intervals credited so far
};

// A limit's live state: its bucket and its counters
// (<stat_prefix>.http_local_rate_limit.*). Carried from one snapshot to the
// next while the limit stays the same, so a reload neither refills the
// bucket nor resets the counts.
struct LocalRateLimitState {
  LocalRateLimitState(const config::LocalRateLimitConfig& c, uint64_t startNs);
  // Takes a token from each bucket the request's `descriptors` match (a
  // configured descriptor whose entries one of them is), then from the
  // default bucket when none matched or always_consume_default_token_bucket
  // says so; false at the first empty one, as Envoy's limiter.
  bool take(const config::LocalRateLimitConfig& c, const std::vector<Descriptor>& descriptors, uint64_t nowNs);
  std::unique_ptr<TokenBucket> bucket;  // token_bucket; null without one
  std::vector<std::unique_ptr<TokenBucket>> descriptorBuckets;  // config.descriptors' own
  // config.descriptors' indices, slowest-filling bucket first (Envoy's
  // order: a request the strictest one refuses spends no other token).
  std::vector<uint32_t> descriptorOrder;
  std::atomic<uint64_t> enabled{0}, ok{0}, rateLimited{0}, enforced{0};
};

// One EnvoyFilter patch's limit. As in Envoy, where each listener's HTTP
// connection manager has its own instance of the filter, every listener
// it applies to (a Gateway port, an outbound service port) has its own
// bucket, shared by all workers.
struct LocalRateLimit {
  // "ns/name#patch": which EnvoyFilter patch made it.
  std::string origin;
  config::LocalRateLimitConfig config;
  bool gateway = false;   // applies to requests on Gateway listeners
  bool outbound = false;  // ... and to the outbound (sidecar) listener's
  uint32_t port = 0;      // the patch's portNumber; 0: every port
  // From a VIRTUAL_HOST or HTTP_ROUTE patch's typed_per_filter_config:
  // replaces the listener filter's own settings for the requests of the
  // virtual host (by name, "" any) or route (by name) it names, as
  // Envoy's per-route config does; the most specific one wins.
  bool perRoute = false;
  bool httpRoute = false;  // an HTTP_ROUTE patch's (beats a virtual host's)
  std::string vhostName, routeName;
  // The filter's name in the chain; for a per-route limit, the name of the
  // filter it configures (typed_per_filter_config is keyed by it).
  std::string filterName;
  // A listener filter some per-route limit may replace (else
  // effectiveLocalRateLimit need not look).
  bool hasPerRoute = false;
  // The answer's extra fields: x-envoy-ratelimited, then the configured
  // response_headers_to_add (their append actions applied).
  http::HeaderMap responseHeaders;
  // By listener (listenerKey()).
  std::unordered_map<uint64_t, std::shared_ptr<LocalRateLimitState>> states;

  static uint64_t listenerKey(bool onGateway, uint32_t port) { return (uint64_t(onGateway) << 32) | port; }
  // The bucket of the listener a request came in on; null: not limited here.
  LocalRateLimitState* stateFor(bool onGateway, uint32_t listenerPort) const {
    auto it = states.find(listenerKey(onGateway, listenerPort));
    return it == states.end() ? nullptr : it->second.get();
  }
  bool covers(std::string_view vhost, std::string_view route) const {
    // (for a per-route limit)
    return (vhostName.empty() || vhostName == vhost) && (routeName.empty() || routeName == route);
  }
  // Same bucket settings and counters: a reload keeps the states.
  bool sameBucket(const LocalRateLimit& o) const;
};

// The settings a request on listener (onGateway, port) gets from `limit`
// (a listener's filter): the most specific per-route limit of `all` that
// covers its virtual host and route, else `limit` itself.
const LocalRateLimit& effectiveLocalRateLimit(const LocalRateLimit& limit,
                                              const std::vector<std::shared_ptr<LocalRateLimit>>& all,
                                              bool onGateway, uint32_t port, std::string_view vhost,
                                              std::string_view route);

// Which of sluiced's HTTP listeners an EnvoyFilter patch reaches: Gateway
// listeners (context GATEWAY or ANY, narrowed by the workloadSelector
// when --gateway-labels says what this proxy is), the outbound listener
// (SIDECAR_OUTBOUND or ANY, without a selector: a node proxy cannot tell
// one pod's outbound traffic by labels), on every port or one.
struct PatchScope {
  bool gateway = false;
  bool outbound = false;
  uint32_t port = 0;  // 0: every port
};
// Null when it reaches none; `warnings` say why where that is a surprise.
std::optional<PatchScope> patchScope(const config::EnvoyFilter& f, const config::EnvoyFilterPatch& p,
                                     const std::optional<std::map<std::string, std::string>>& gatewayLabels,
                                     const std::string& where, std::vector<std::string>& warnings);
// EnvoyFilters in the order Istio applies them: priority, then load order.
std::vector<const config::EnvoyFilter*> envoyFiltersInOrder(const std::vector<config::EnvoyFilter>& filters);
// "EnvoyFilter ns/name (file:line)", for warnings about one patch.
std::string patchWhere(const config::EnvoyFilter& f, const config::EnvoyFilterPatch& p);

// The local rate limits of `filters`, in priority then load order, for a
// proxy whose gateway workload has `gatewayLabels` (unset: every Gateway's
// workload), with a bucket for each of `gatewayPorts` and `outboundPorts`
// (the HTTP listeners) a limit applies to. Patches Sluice does not
// enforce, and selectors it cannot honour, become `warnings`.
std::vector<std::shared_ptr<LocalRateLimit>> compileLocalRateLimits(
    const std::vector<config::EnvoyFilter>& filters,
    const std::optional<std::map<std::string, std::string>>& gatewayLabels, const std::vector<uint32_t>& gatewayPorts,
    const std::vector<uint32_t>& outboundPorts, uint64_t nowNs, std::vector<std::string>& warnings);

// Gives each limit of `next` the states of the same limit in `prev`
// (listener by listener).
void inheritRateLimitState(const std::vector<std::shared_ptr<LocalRateLimit>>& next,
                           const std::vector<std::shared_ptr<LocalRateLimit>>& prev);

// /stats lines and Prometheus families for the limits.
std::string renderRateLimitText(const std::vector<std::shared_ptr<LocalRateLimit>>& limits);
std::string renderRateLimitPrometheus(const std::vector<std::shared_ptr<LocalRateLimit>>& limits);

}  // namespace sluice::route
