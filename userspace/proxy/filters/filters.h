// The filters sluiced has, one file each.
#pragma once

#include <arpa/inet.h>

#include "proxy/filters/filter.h"

namespace sluice::proxy {

// VirtualService directResponse and redirect: answered without an upstream.
const RequestFilter& directResponseFilter();
// corsPolicy: preflights answered, CORS response headers chosen.
const RequestFilter& corsFilter();
// fault: delay (pauses the chain) and abort.
const RequestFilter& faultFilter();
// EnvoyFilter local rate limits (route/rate_limit.h): 429 past the bucket.
const RequestFilter& rateLimitFilter();
// EnvoyFilter global rate limits (route/global_rate_limit.h): counters in
// Redis, shared by every proxy using it (pauses the chain for the counts).
const RequestFilter& globalRateLimitFilter();
// What rate_limits actions read of `s` (both rate limit filters), its
// client address written into `ip`.
struct Stream;
route::RateLimitRequest rateLimitRequest(const Stream& s, const sockaddr_in& peer, char (&ip)[INET_ADDRSTRLEN]);

// The terminal filter: rewrite, header operations, retries, mirrors, then
// the upstream.
const RequestFilter& routerFilter();

}  // namespace sluice::proxy
