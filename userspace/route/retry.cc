#include "route/retry.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

namespace sluice::route {
namespace {

constexpr uint64_t kMs = 1'000'000;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(element) for each non-empty, trimmed element of a comma list.
template <typename F>
void forEachListElement(std::string_view list, F&& f) {
  while (true) {
    size_t comma = list.find(',');
    std::string_view e = trim(list.substr(0, comma));
    if (!e.empty()) f(e);
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// A status in 100-599, however many leading zeros it is written with.
std::optional<uint16_t> parseStatus(std::string_view s) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 100 || v > 599) return std::nullopt;
  return uint16_t(v);
}

bool isDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return out;
}

// RFC 9110 9.2.2. Method names are case-sensitive, so "get" is not GET.
bool idempotent(std::string_view method) {
  static constexpr std::array<std::string_view, 6> kIdempotent = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
  return std::find(kIdempotent.begin(), kIdempotent.end(), method) != kIdempotent.end();
}

bool hasHeader(const http::HeaderMap& headers, std::string_view name) { return headers.has(name); }

}  // namespace

RetryPolicy RetryPolicy::istioDefault() {
  RetryPolicy p;
  p.numRetries = 2;
  p.retryOn = kConnectFailure | kRefusedStream | kGrpcUnavailable | kGrpcCancelled | kRetriableStatusCodes;
  p.retriableStatusCodes = {503};
  p.ignorePreviousHosts = true;
  p.backoffBaseNs = 25 * kMs;
  p.backoffMaxNs = 250 * kMs;
  return p;
}

std::expected<RetryPolicy, std::string> RetryPolicy::compile(const std::optional<config::HTTPRetry>& spec,
                                                             bool idempotentOnly) {
  RetryPolicy p = istioDefault();
  p.idempotentOnly = idempotentOnly;
  if (!spec) return p;

  // Istio replaces the default's tokens and codes as soon as retryOn is a
  // non-empty string, even one that holds no token at all.
  if (!spec->retryOn.empty()) {
    uint32_t on = 0;
    std::vector<uint16_t> codes;
    std::string bad;
    forEachListElement(spec->retryOn, [&](std::string_view tok) {
      if (isDigits(tok)) {
        if (auto code = istio::retryOnStatus(tok)) {
          if (std::find(codes.begin(), codes.end(), *code) == codes.end()) codes.push_back(*code);
          return;
        }
      } else if (auto bits = istio::retryOnToken(tok)) {
        on |= *bits;
        return;
      }
      if (bad.empty()) bad = tok;
    });
    if (!bad.empty()) return std::unexpected("retries.retryOn: \"" + bad + "\" is not a valid retryOn policy");
    // Codes without the token would never match; Istio adds it for the user.
    if (!codes.empty()) on |= kRetriableStatusCodes;
    p.retryOn = on;
    p.retriableStatusCodes = std::move(codes);
  }

  if (spec->perTryTimeout && spec->perTryTimeout->count() > 0) p.perTryTimeoutNs = uint64_t(spec->perTryTimeout->count());
  if (spec->backoff) {
    // Envoy's back-off works in whole milliseconds and rounds a base below
    // 1 ms up to 1 ms; its max interval defaults to ten times the base.
    p.backoffBaseNs = std::max<uint64_t>(kMs, uint64_t(std::max<int64_t>(0, spec->backoff->count())));
    p.backoffMaxNs = 10 * p.backoffBaseNs;
  }
  p.ignorePreviousHosts = spec->retryIgnorePreviousHosts.value_or(true);
  // retryRemoteLocalities needs locality priorities, which Sluice does not
  // have: accepted and ignored.

  // attempts 0 switches retries off (Istio emits no retry policy); the rest
  // was still checked above so a typo is reported either way.
  p.numRetries = spec->attempts > 0 ? uint32_t(spec->attempts) : 0;
  return p;
}

RetryState::RetryState(const RetryPolicy& policy, std::string_view method,
                       const http::HeaderMap& requestHeaders, const core::Clock& clock, core::Rng& rng)
    : policy_(policy), clock_(clock), rng_(rng), idempotentMethod_(idempotent(method)) {
  for (const http::Header& h : requestHeaders) {
    if (http::iequals(h.name, "x-envoy-retriable-header-names")) {
      forEachListElement(h.value, [&](std::string_view name) { retriableHeaderNames_.push_back(lower(name)); });
    } else if (http::iequals(h.name, "x-envoy-retriable-status-codes")) {
      // Like Envoy, an element that is not a number is skipped, not an error.
      forEachListElement(h.value, [&](std::string_view code) {
        if (auto c = parseStatus(code)) requestStatusCodes_.push_back(*c);
      });
    }
  }
}

uint64_t RetryState::beginAttempt() {
  return policy_.perTryTimeoutNs == 0 ? 0 : clock_.nowNs() + policy_.perTryTimeoutNs;
}

RetryDecision RetryState::onResponse(int status, const http::HeaderMap& responseHeaders) {
  const uint32_t on = policy_.retryOn;
  bool would = false;
  {
    if ((on & RetryPolicy::k5xx) && status >= 500 && status <= 599) would = true;
    if ((on & RetryPolicy::kGatewayError) && (status == 502 || status == 503 || status == 504)) would = true;
    if ((on & RetryPolicy::kRetriable4xx) && status == 409) would = true;
    if (on & RetryPolicy::kRetriableStatusCodes) {
      auto listed = [&](const std::vector<uint16_t>& codes) {
        return std::find(codes.begin(), codes.end(), status) != codes.end();
      };
      if (listed(policy_.retriableStatusCodes) || listed(requestStatusCodes_)) would = true;
    }
    if ((on & RetryPolicy::kRetriableHeaders) && !retriableHeaderNames_.empty()) {
      for (const http::Header& h : responseHeaders) {
        if (std::any_of(retriableHeaderNames_.begin(), retriableHeaderNames_.end(),
                        [&](const std::string& n) { return http::iequals(h.name, n); })) {
          would = true;
          break;
        }
      }
    }
    // The gRPC tokens look at grpc-status in the response head: a
    // trailers-only response (gRPC's answer without a message) carries it
    // there. Status in trailers after a body came too late to retry.
    constexpr uint32_t kGrpcAny = RetryPolicy::kGrpcCancelled | RetryPolicy::kGrpcDeadlineExceeded |
                                  RetryPolicy::kGrpcInternal | RetryPolicy::kGrpcResourceExhausted |
                                  RetryPolicy::kGrpcUnavailable;
    if (!would && (on & kGrpcAny)) {
      if (const http::HeaderMap::Field* g = responseHeaders.find("grpc-status")) {
        uint32_t bit = 0;
        if (g->value == "1") bit = RetryPolicy::kGrpcCancelled;
        else if (g->value == "4") bit = RetryPolicy::kGrpcDeadlineExceeded;
        else if (g->value == "8") bit = RetryPolicy::kGrpcResourceExhausted;
        else if (g->value == "13") bit = RetryPolicy::kGrpcInternal;
        else if (g->value == "14") bit = RetryPolicy::kGrpcUnavailable;
        if (on & bit) would = true;
      }
    }
  }
  // An upstream Envoy's rate-limit verdict is retried only under
  // envoy-ratelimited, which Sluice accepts but keeps inert. (Looked at
  // last: most responses are not retriable and skip the scan.)
  if (would && hasHeader(responseHeaders, "x-envoy-ratelimited")) would = false;
  // A response means the whole request head reached the upstream.
  return decide(would, true);
}

RetryDecision RetryState::onFailure(AttemptFailure failure, bool requestBytesSent) {
  // Envoy counts every failure without a response as a "5xx" (it becomes a
  // 503 or 504), so 5xx, gateway-error and reset cover them all; the narrower
  // tokens look at how far the attempt got.
  uint32_t covering = RetryPolicy::k5xx | RetryPolicy::kGatewayError | RetryPolicy::kReset;
  if (failure == AttemptFailure::ConnectFailure) covering |= RetryPolicy::kConnectFailure;
  if (failure == AttemptFailure::RefusedStream) covering |= RetryPolicy::kRefusedStream;
  // Envoy keys reset-before-request on "the upstream request never started";
  // a connect failure or an early reset has not started it by definition.
  // A refused stream was not processed: as if never sent.
  const bool notStarted = failure == AttemptFailure::ConnectFailure || failure == AttemptFailure::ResetBeforeRequest ||
                          failure == AttemptFailure::RefusedStream;
  if (notStarted || !requestBytesSent) covering |= RetryPolicy::kResetBeforeRequest;
  const bool bytesSent = requestBytesSent && !notStarted;
  return decide((policy_.retryOn & covering) != 0, bytesSent);
}

RetryDecision RetryState::decide(bool wouldRetry, bool requestBytesSent) {
  if (!wouldRetry || !policy_.enabled()) return RetryDecision::NoRetry;
  // The opt-in guard against repeating a side effect: a non-idempotent
  // request is tried again only if the upstream cannot have seen any of it.
  if (policy_.idempotentOnly && !idempotentMethod_ && requestBytesSent) return RetryDecision::NoRetry;
  // A retry granted but not yet started (backoffNs not called) counts too.
  const uint64_t retriesGranted = uint64_t(attempt_ - 1) + (retryPending_ ? 1 : 0);
  if (retriesGranted >= policy_.numRetries) return RetryDecision::LimitExceeded;
  retryPending_ = true;
  return RetryDecision::Retry;
}

uint64_t RetryState::backoffNs() {
  // The window starts at base and doubles per retry until it reaches max
  // (Envoy's JitteredExponentialBackOffStrategy: [0, base) for the first
  // retry, [0, 2 base) for the second, ...). Shift-safe for any count.
  const uint32_t retriesSoFar = attempt_ - 1;
  const uint64_t base = std::max<uint64_t>(1, policy_.backoffBaseNs);
  const uint64_t max = std::max(base, policy_.backoffMaxNs);
  const uint64_t cap = (retriesSoFar >= 63 || base > (max >> retriesSoFar)) ? max : base << retriesSoFar;
  // Envoy may draw 0 ms and retry on the next loop turn. Here the floor is
  // 1 ns so a caller never has to special-case a zero-length timer; the draw
  // stays inside [0, cap) and its distribution moves by nothing measurable.
  const uint64_t delay = std::max<uint64_t>(1, rng_.below(cap));
  // Only a granted retry is counted, so attempt() stays what
  // x-envoy-attempt-count must say even if a caller asks twice.
  if (retryPending_) {
    retryPending_ = false;
    ++attempt_;
  }
  return delay;
}

}  // namespace sluice::route
