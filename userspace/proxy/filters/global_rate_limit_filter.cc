// EnvoyFilter global rate limits (envoy.filters.http.ratelimit, before the
// router as the EnvoyFilter inserts it). For each limit on the request's
// listener, in order: the route's rate_limits (else its virtual host's)
// build descriptors; each descriptor the domain's configuration limits
// becomes a fixed-window counter in Redis, incremented as the ratelimit
// service increments it; the chain waits for the counts (at most the
// filter's timeout). A count past its limit answers the request
// (rate_limited_status, x-envoy-ratelimited, flag RL) unless the limit is
// in shadow_mode; a failed or late answer lets the request through, or
// with failure_mode_deny answers status_on_error (flag RLSE). Without
// --redis, a filter whose rate_limit_service names a cluster of the
// configuration asks that service instead (gRPC ShouldRateLimit, every
// descriptor), and its overall_code decides.
#include <arpa/inet.h>

#include <algorithm>

#include "proxy/filters/filters.h"
#include "proxy/rls_client.h"
#include "proxy/stream.h"
#include "route/global_rate_limit.h"

namespace sluice::proxy {

namespace {

using Call = Stream::RateLimitCall;

class GlobalRateLimitFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "ratelimit"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    cb.stream().rateLimit.limit = 0;
    return applyFrom(cb);
  }

  FilterStatus onResume(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    Call& call = s.rateLimit;
    const route::GlobalRateLimit& limit = *s.snapshot->globalRateLimits[call.limit];
    // Failed: Redis could not answer, or the timeout came first (the
    // session cancelled the call; its reply, if it comes, is dropped).
    const bool ok = call.state == Call::State::Counted;
    call.state = Call::State::None;
    if (!ok) {
      if (failed(cb, limit)) return FilterStatus::Stop;
    } else {
      bool over = false;
      if (call.viaService) {
        over = !call.counts.empty() && call.counts[0] == kRlsOverLimit;  // the service's overall_code
      } else {
        for (size_t i = 0; i < call.rules.size() && i < call.counts.size(); ++i) {
          const route::RateLimitRule& r = *call.rules[i];
          if (call.counts[i] > int64_t(r.requestsPerUnit) && !r.shadowMode) over = true;
        }
      }
      if (over) {
        cb.stats().inc(stats::Counter::RateLimitOverLimit);
        cb.sendLocalReply(int(limit.config.rateLimitedStatus), "", "RL", &limit.limitedHeaders);
        return FilterStatus::Stop;
      }
      cb.stats().inc(stats::Counter::RateLimitOk);
    }
    ++call.limit;
    return applyFrom(cb);
  }

 private:
  // Applies the limits from stream().rateLimit.limit on: Stop when one
  // waits for Redis or answered.
  static FilterStatus applyFrom(FilterCallbacks& cb) {
    Stream& s = cb.stream();
    const auto& limits = s.snapshot->globalRateLimits;
    Call& call = s.rateLimit;
    std::vector<route::Descriptor> descriptors;
    std::vector<RedisClient::Increment> keys;
    char ip[INET_ADDRSTRLEN];
    for (; call.limit < limits.size(); ++call.limit) {
      const route::GlobalRateLimit& limit = *limits[call.limit];
      if (!limit.appliesTo(s.onGateway, s.port)) continue;
      // Without --redis, the rate limit service decides, when there is one.
      const bool viaService = !cb.hasRedis() && limit.service;
      if (!viaService && !limit.domain) continue;
      descriptors.clear();
      const route::RateLimitRequest req = rateLimitRequest(s, cb.downstreamRemote(), ip);
      s.snapshot->rateLimitPolicies.descriptors(
          s.onGateway, s.port, s.vhost ? std::string_view(s.vhost->name) : std::string_view{},
          s.route ? std::string_view(s.route->name) : std::string_view{}, req, descriptors);
      if (descriptors.empty()) continue;  // Envoy makes no call
      const uint64_t timeoutNs = uint64_t(std::max<int64_t>(0, limit.config.timeout.count()));  // 0: none
      if (viaService) {
        call.state = Call::State::Pending;
        call.counts.clear();
        call.rules.clear();
        if (cb.callRateLimitService(*limit.service, limit.config.domain, descriptors, timeoutNs))
          return FilterStatus::Stop;
        call.state = Call::State::None;
        if (failed(cb, limit)) return FilterStatus::Stop;
        continue;
      }
      keys.clear();
      call.rules.clear();
      const uint64_t now = cb.unixSeconds();
      for (const route::Descriptor& d : descriptors) {
        const route::RateLimitRule* rule = limit.domain->find(d);
        if (!rule || rule->unlimited) continue;
        keys.push_back({route::rateLimitCacheKey(limit.domain->name(), d, rule->unitSeconds, now), rule->unitSeconds});
        call.rules.push_back(rule);
      }
      if (keys.empty()) {
        cb.stats().inc(stats::Counter::RateLimitOk);  // the service's answer: nothing limits these
        continue;
      }
      call.state = Call::State::Pending;
      call.counts.clear();
      if (cb.countInRedis(std::move(keys), timeoutNs)) return FilterStatus::Stop;
      call.state = Call::State::None;
      if (failed(cb, limit)) return FilterStatus::Stop;
    }
    return FilterStatus::Continue;
  }

  // No decision from Redis: true when the request was answered.
  static bool failed(FilterCallbacks& cb, const route::GlobalRateLimit& limit) {
    cb.stats().inc(stats::Counter::RateLimitError);
    if (limit.config.failureModeDeny) {
      cb.sendLocalReply(int(limit.config.statusOnError), "", "RLSE");
      return true;
    }
    cb.stats().inc(stats::Counter::RateLimitFailureModeAllowed);
    return false;
  }
};

}  // namespace

route::RateLimitRequest rateLimitRequest(const Stream& s, const sockaddr_in& peer, char (&ip)[INET_ADDRSTRLEN]) {
  route::RateLimitRequest req;
  req.method = s.head.method;
  req.path = s.target.path;
  req.authority = s.target.authority;
  req.scheme = s.forwardedProto.empty() ? "http" : s.forwardedProto;
  req.headers = &s.headers;
  ip[0] = '\0';
  inet_ntop(AF_INET, &peer.sin_addr, ip, INET_ADDRSTRLEN);
  req.remoteAddress = ip;
  if (s.cluster) req.destinationCluster = s.cluster->name;
  return req;
}

const RequestFilter& globalRateLimitFilter() {
  static const GlobalRateLimitFilter f;
  return f;
}

}  // namespace sluice::proxy
