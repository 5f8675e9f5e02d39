// EnvoyFilter local rate limits (envoy.filters.http.local_ratelimit, placed
// before the router as the seed's INSERT_BEFORE router puts it): each limit
// that applies to the request's listener, in order, is rolled for
// filter_enabled, then takes a token from that listener's bucket (one for
// the node, whatever the worker); without one
// the request is rate limited, and answered (status, x-envoy-ratelimited,
// the configured headers; flag RL) when filter_enforced rolls too.
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
    for (const auto& limit : s.snapshot->localRateLimits) {
      route::LocalRateLimitState* found = limit->stateFor(s.onGateway, s.port);
      if (!found) continue;
      route::LocalRateLimitState& state = *found;
      if (!rolled(cb, limit->config.enabledPpm)) continue;
      state.enabled.fetch_add(1, std::memory_order_relaxed);
      if (state.bucket.take(cb.clock().nowNs())) {
        state.ok.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      state.rateLimited.fetch_add(1, std::memory_order_relaxed);
      if (!rolled(cb, limit->config.enforcedPpm)) continue;  // shadow mode: counted only
      state.enforced.fetch_add(1, std::memory_order_relaxed);
      cb.sendLocalReply(int(limit->config.status), "local_rate_limited", "RL", &limit->responseHeaders);
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
