// EnvoyFilter local rate limits (envoy.filters.http.local_ratelimit, placed
// before the router as the seed's INSERT_BEFORE router puts it): each
// limit on the request's listener, in order, with the settings the
// request's route or virtual host gives it (typed_per_filter_config) or
// else its own, is rolled for filter_enabled, then takes tokens from that
// listener's buckets (the node's, whatever the worker): a descriptor's
// bucket for each of the request's descriptors it names, and the default
// one. Without a token the request is rate limited, and answered (status,
// x-envoy-ratelimited, the configured headers; flag RL) when
// filter_enforced rolls too.
#include <arpa/inet.h>

#include "proxy/filters/filters.h"
#include "proxy/stream.h"
#include "route/rate_limit.h"

namespace sluice::proxy {

namespace {

bool rolled(FilterCallbacks& cb, uint32_t ppm) {
  return ppm >= 1'000'000 || (ppm > 0 && cb.rng().below(1'000'000) < ppm);
}

class RateLimitFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "local_ratelimit"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    const auto& all = s.snapshot->localRateLimits;
    const std::string_view vhost = s.vhost ? std::string_view(s.vhost->name) : std::string_view{};
    const std::string_view route = s.route ? std::string_view(s.route->name) : std::string_view{};
    std::vector<route::Descriptor> descriptors;
    bool haveDescriptors = false;
    for (const auto& own : all) {
      if (own->perRoute) continue;
      route::LocalRateLimitState* found = own->stateFor(s.onGateway, s.port);
      if (!found) continue;
      const route::LocalRateLimit* chosen = own.get();
      if (own->hasPerRoute) {
        chosen = &route::effectiveLocalRateLimit(*own, all, s.onGateway, s.port, vhost, route);
        if (chosen != own.get()) found = chosen->stateFor(s.onGateway, s.port);
      }
      const route::LocalRateLimit& limit = *chosen;
      route::LocalRateLimitState& state = *found;
      if (!rolled(cb, limit.config.enabledPpm)) continue;
      state.enabled.fetch_add(1, std::memory_order_relaxed);
      if (!state.bucket && state.descriptorBuckets.empty()) {
        state.ok.fetch_add(1, std::memory_order_relaxed);  // no bucket here: nothing to refuse
        continue;
      }
      if (!limit.config.descriptors.empty() && !haveDescriptors) {
        haveDescriptors = true;
        char ip[INET_ADDRSTRLEN];
        const route::RateLimitRequest req = rateLimitRequest(s, cb.downstreamRemote(), ip);
        s.snapshot->rateLimitPolicies.descriptors(s.onGateway, s.port, vhost, route, req, descriptors);
      }
      if (state.take(limit.config, descriptors, cb.clock().nowNs())) {
        state.ok.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      state.rateLimited.fetch_add(1, std::memory_order_relaxed);
      if (!rolled(cb, limit.config.enforcedPpm)) continue;  // shadow mode: counted only
      state.enforced.fetch_add(1, std::memory_order_relaxed);
      cb.sendLocalReply(int(limit.config.status), "local_rate_limited", "RL", &limit.responseHeaders);
      return FilterStatus::Stop;
    }
    return FilterStatus::Continue;
  }
};

}  // namespace

const RequestFilter& rateLimitFilter() {
  static const RateLimitFilter f;
  return f;
}

}  // namespace sluice::proxy
