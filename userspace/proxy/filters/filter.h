// The request filter chain: the steps an HTTP request goes through between
// routing and the upstream, each a small stateless object that reads and
// writes the Stream it is given. The session runs them in order
// (requestFilters()); a filter answers the request itself, pauses the
// chain, or lets the next one run. Adding a filter is one file and one line
// in filter_chain.cc.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "core/clock.h"
#include "proxy/redis_client.h"
#include "route/global_rate_limit.h"
#include "route/header_ops.h"
#include "stats/stats.h"

namespace sluice::proxy {

struct Stream;

// What a filter may read and do. The HTTP session implements it; unit tests
// implement a fake.
class FilterCallbacks {
 public:
  virtual Stream& stream() = 0;
  virtual core::Rng& rng() = 0;
  virtual const core::Clock& clock() const = 0;
  virtual stats::StatsShard& stats() = 0;
  virtual const sockaddr_in& downstreamRemote() const = 0;
  // The variables header templates read, for this request.
  virtual istio::HeaderContext headerContext() = 0;
  // Answers the request here (the chain ends). A request whose body has not
  // been read yet closes its connection after the answer.
  // `extraHeaders`: fields the answer carries (or null).
  virtual void sendLocalReply(int status, std::string_view body, std::string_view flags,
                              const http::HeaderMap* extraHeaders = nullptr) = 0;
  // Pauses the chain for `ns`; then the paused filter's onResume runs.
  virtual void pauseFor(uint64_t ns) = 0;
  // Global rate limiting: sends the increments of `keys` to Redis and
  // pauses the chain until their counts come back (in
  // stream().rateLimit) or `timeoutNs` passes; then the paused filter's
  // onResume runs. False, at once: no Redis (--redis), or it cannot take
  // a call now.
  virtual bool countInRedis(std::vector<RedisClient::Increment> keys, uint64_t timeoutNs) = 0;
  // Wall-clock seconds since the epoch: shared counters' windows.
  virtual uint64_t unixSeconds() const = 0;
  // Whether the daemon counts global limits in Redis itself (--redis).
  virtual bool hasRedis() const = 0;
  // Asks the rate limit service at `cluster` (gRPC ShouldRateLimit) about
  // `descriptors` of `domain`, pausing the chain as countInRedis does;
  // stream().rateLimit's one count is the answer's overall_code.
  virtual bool callRateLimitService(const route::Cluster& cluster, std::string_view domain,
                                    const std::vector<route::Descriptor>& descriptors, uint64_t timeoutNs) = 0;
  // The terminal step: the request goes to its cluster (router).
  virtual void forwardUpstream() = 0;

 protected:
  ~FilterCallbacks() = default;
};

enum class FilterStatus {
  Continue,  // on to the next filter
  Stop,      // answered (sendLocalReply), paused (pauseFor) or forwarded
};

class RequestFilter {
 public:
  virtual ~RequestFilter() = default;
  virtual std::string_view name() const = 0;
  // The request head is in and routed: stream().route is set.
  virtual FilterStatus onRequestHead(FilterCallbacks& cb) const = 0;
  // The pause this filter asked for is over.
  virtual FilterStatus onResume(FilterCallbacks&) const { return FilterStatus::Continue; }
};

// Every HTTP request's chain, in order.
std::span<const RequestFilter* const> requestFilters();

}  // namespace sluice::proxy
