// Istio's retryOn vocabulary (HTTPRetry.retryOn): the Envoy retry-on tokens
// Istio accepts, as bits, and the plain status codes that may stand beside
// them. config/ validates with it, route/ compiles with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::istio {

enum RetryOn : uint32_t {
  k5xx = 1u << 0,
  kGatewayError = 1u << 1,
  kReset = 1u << 2,
  kResetBeforeRequest = 1u << 3,
  kConnectFailure = 1u << 4,
  kRetriable4xx = 1u << 5,
  kRefusedStream = 1u << 6,
  kRetriableStatusCodes = 1u << 7,
  kRetriableHeaders = 1u << 8,
  // gRPC (HTTP/2 only): validated and kept, inert on HTTP/1.1.
  kGrpcCancelled = 1u << 9,
  kGrpcDeadlineExceeded = 1u << 10,
  kGrpcInternal = 1u << 11,
  kGrpcResourceExhausted = 1u << 12,
  kGrpcUnavailable = 1u << 13,
};

// The bits of the token `name` ("5xx", "reset", ...), or nullopt when it is
// no retryOn token. envoy-ratelimited and http3-post-connect-failure are
// valid and have no bit: sluiced never produces what they react to.
std::optional<uint32_t> retryOnToken(std::string_view name);
// A plain status code element ("503"): its value, 100-599; else nullopt.
std::optional<uint16_t> retryOnStatus(std::string_view element);

}  // namespace sluice::istio
