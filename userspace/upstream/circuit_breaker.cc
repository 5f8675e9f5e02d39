#include "upstream/circuit_breaker.h"

#include <optional>

namespace sluice::upstream {
namespace {
uint32_t limit(const std::optional<int32_t>& v) {
  return v && *v > 0 ? uint32_t(*v) : PoolLimits::kUnlimited;
}
std::optional<PoolLimits> limitsOf(const route::Cluster& c) {
  if (!c.policy || !c.policy->connectionPool) return std::nullopt;
  return PoolLimits::from(*c.policy->connectionPool);
}
}  // namespace

PoolLimits PoolLimits::from(const config::ConnectionPoolSettings& cp) {
  PoolLimits l;
  if (cp.tcp) l.maxConnections = limit(cp.tcp->maxConnections);
  if (cp.http) {
    l.maxPending = limit(cp.http->http1MaxPendingRequests);
    l.maxRequests = limit(cp.http->http2MaxRequests);
    l.maxRetries = limit(cp.http->maxRetries);
    if (cp.http->maxRequestsPerConnection && *cp.http->maxRequestsPerConnection > 0)
      l.maxRequestsPerConnection = uint32_t(*cp.http->maxRequestsPerConnection);
  }
  return l;
}

std::shared_ptr<const std::vector<std::shared_ptr<ClusterLimits>>> LimitsRegistry::adopt(
    const route::Snapshot& snap) {
  return reg_.adopt(
      snap,
      [](const route::Cluster& c) -> std::shared_ptr<ClusterLimits> {
        auto l = limitsOf(c);
        return l ? std::make_shared<ClusterLimits>(c.name, *l) : nullptr;
      },
      [](const ClusterLimits& existing, const route::Cluster& c) {
        auto l = limitsOf(c);
        return l && existing.limits() == *l;
      });
}

}  // namespace sluice::upstream
