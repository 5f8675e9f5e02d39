// VirtualService `retries`, compiled (RetryPolicy), and the per-request
// state machine that decides whether a failed attempt is tried again
// (RetryState), as Envoy's router does under Istio.
//
// Time and chance come in through core::Clock and core::Rng so tests drive
// both.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"
#include "istio/retry_on.h"
#include "core/clock.h"
#include "http/header_map.h"
#include "http/parser.h"

namespace sluice::route {

struct RetryPolicy {
  // retryOn tokens as bits (RetryPolicy::k5xx, ...).
  using enum istio::RetryOn;
  uint32_t numRetries = 0;  // attempts: retries after the first try
  uint32_t retryOn = 0;
  std::vector<uint16_t> retriableStatusCodes;  // plain codes in retryOn
  uint64_t perTryTimeoutNs = 0;                // 0: none
  uint64_t backoffBaseNs = 25'000'000;         // `backoff`, else Envoy's 25 ms
  uint64_t backoffMaxNs = 250'000'000;         // 10 x base
  bool ignorePreviousHosts = true;             // retryIgnorePreviousHosts
  // VirtualService annotation sluice.io/idempotent-retries-only: "true".
  bool idempotentOnly = false;

  // What Istio programs when a route has no `retries`: 2 retries on
  // connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
  // with 503 retriable.
  static RetryPolicy istioDefault();
  // `spec` absent: istioDefault(). attempts 0: no retries. An empty retryOn
  // keeps the default's tokens and codes, as Istio does.
  static std::expected<RetryPolicy, std::string> compile(const std::optional<config::HTTPRetry>& spec,
                                                         bool idempotentOnly);
  bool enabled() const { return numRetries > 0; }
};

enum class RetryDecision { NoRetry, Retry, LimitExceeded };

// How an attempt failed without a usable response.
enum class AttemptFailure {
  ConnectFailure,  // connect() failed or timed out: no request byte left us
  ResetBeforeRequest,  // the connection died before any request byte was written
  Reset,           // the connection died after request bytes were written
  PerTryTimeout,   // no response head within perTryTimeout
  RefusedStream,   // HTTP/2: the server refused the stream (REFUSED_STREAM): it did no work on it
};

class RetryState {
 public:
  // `requestHeaders`: the downstream request's headers (for
  // x-envoy-retriable-header-names, which lists the response headers that
  // make `retriable-headers` retry).
  RetryState(const RetryPolicy& policy, std::string_view method,
             const http::HeaderMap& requestHeaders, const core::Clock& clock, core::Rng& rng);

  // 1 for the first try; what x-envoy-attempt-count carries.
  uint32_t attempt() const { return attempt_; }
  // Call when an attempt starts: returns the per-try deadline (monotonic
  // ns), or 0 when the policy has no perTryTimeout.
  uint64_t beginAttempt();

  // A response head arrived. Retry: discard it and try again.
  RetryDecision onResponse(int status, const http::HeaderMap& responseHeaders);
  // An attempt failed without a response head. `requestBytesSent`: whether
  // any byte of this attempt's request reached the socket.
  RetryDecision onFailure(AttemptFailure failure, bool requestBytesSent);
  // After a Retry decision: how long to wait before the next attempt (full
  // jitter over base * 2^(retries so far), capped at backoffMaxNs); also
  // counts the retry.
  uint64_t backoffNs();
  uint32_t retriesMade() const { return attempt_ - 1; }

 private:
  RetryDecision decide(bool wouldRetry, bool requestBytesSent);

  const RetryPolicy& policy_;
  const core::Clock& clock_;
  core::Rng& rng_;
  std::vector<std::string> retriableHeaderNames_;  // lower case
  std::vector<uint16_t> requestStatusCodes_;      // x-envoy-retriable-status-codes
  bool idempotentMethod_ = true;
  uint32_t attempt_ = 1;
  bool retryPending_ = false;
};

}  // namespace sluice::route
