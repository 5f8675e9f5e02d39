#include "istio/retry_on.h"

#include <algorithm>
#include <array>
#include <charconv>

namespace sluice::istio {

namespace {

struct Token {
  std::string_view name;
  uint32_t bits;
};

constexpr std::array<Token, 16> kTokens{{
    {"5xx", k5xx},
    {"gateway-error", kGatewayError},
    {"reset", kReset},
    {"reset-before-request", kResetBeforeRequest},
    {"connect-failure", kConnectFailure},
    {"retriable-4xx", kRetriable4xx},
    {"refused-stream", kRefusedStream},
    {"retriable-status-codes", kRetriableStatusCodes},
    {"retriable-headers", kRetriableHeaders},
    {"cancelled", kGrpcCancelled},
    {"deadline-exceeded", kGrpcDeadlineExceeded},
    {"internal", kGrpcInternal},
    {"resource-exhausted", kGrpcResourceExhausted},
    {"unavailable", kGrpcUnavailable},
    {"envoy-ratelimited", 0},
    {"http3-post-connect-failure", 0},
}};

}  // namespace

std::optional<uint32_t> retryOnToken(std::string_view name) {
  auto it = std::find_if(kTokens.begin(), kTokens.end(), [&](const Token& t) { return t.name == name; });
  if (it == kTokens.end()) return std::nullopt;
  return it->bits;
}

std::optional<uint16_t> retryOnStatus(std::string_view element) {
  if (element.size() != 3) return std::nullopt;
  unsigned v = 0;
  auto [end, ec] = std::from_chars(element.data(), element.data() + element.size(), v);
  if (ec != std::errc() || end != element.data() + element.size() || v < 100 || v > 599) return std::nullopt;
  return uint16_t(v);
}

}  // namespace sluice::istio
