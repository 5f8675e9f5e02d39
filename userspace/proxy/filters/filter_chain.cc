// The order Istio's sidecar listener uses for the filters sluiced has:
// answers the route makes itself first, then CORS, fault injection, the
// local rate limit an EnvoyFilter inserts before the router, and the router
// last.
#include "proxy/filters/filter.h"
#include "proxy/filters/filters.h"

namespace sluice::proxy {

std::span<const RequestFilter* const> requestFilters() {
  static const RequestFilter* const chain[] = {
      &directResponseFilter(),
      &corsFilter(),
      &faultFilter(),
      &rateLimitFilter(),
      &routerFilter(),
  };
  return chain;
}

}  // namespace sluice::proxy
