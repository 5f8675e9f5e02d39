// The order Istio's sidecar listener uses for the filters sluiced has:
// answers the route makes itself first, then CORS, fault injection, the
// local and global rate limits EnvoyFilters insert before the router, and
// the router last.
#include "proxy/filters/filter.h"
#include "proxy/filters/filters.h"

namespace sluice::proxy {

std::span<const RequestFilter* const> requestFilters() {
  static const RequestFilter* const chain[] = {
      &directResponseFilter(),
      &corsFilter(),
      &faultFilter(),
      &rateLimitFilter(),
      &globalRateLimitFilter(),
      &routerFilter(),
  };
  return chain;
}

}  // namespace sluice::proxy
