// The state of one request/response exchange of a DownstreamConn, shared by
// the files that implement the session (http_session.cc, session_request.cc,
// session_failures.cc). Private to proxy/.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "http/parser.h"
#include "proxy/http_session.h"
#include "proxy/shadow.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

// Request bodies are kept for replay (retries) up to this size; a longer body
// makes the request unretriable once any of it was sent.
inline constexpr size_t kReplayLimit = 256 * 1024;

struct DownstreamConn::Exchange {
  std::shared_ptr<const route::Snapshot> snapshot;
  const route::Route* route = nullptr;
  const route::CompiledMatch* matched = nullptr;  // the match block that chose `route`
  const route::WeightedCluster* wc = nullptr;
  const route::Cluster* cluster = nullptr;
  std::string method, authority, path, requestId, userAgent, forwardedFor;
  // The head sent upstream, without its final blank line: each attempt
  // appends its x-envoy-attempt-count.
  std::string upstreamHead;
  bool isHead = false;
  bool http10 = false;
  bool keepAlive = true;
  bool expectContinue = false;
  http::BodyFramer reqBody;
  bool reqDone = false;
  uint64_t reqBodySent = 0;  // body bytes taken from the client so far
  // Retries: the body bytes taken so far, for the next attempt (kept only
  // when the route retries at all).
  std::string replay;
  bool keepReplay = false;
  bool replayOverflow = false;
  // Whether another attempt can carry the whole request.
  bool replayable() const { return reqBodySent == 0 || (keepReplay && !replayOverflow); }
  std::optional<route::RetryState> retry;
  bool attemptWrote = false;    // this attempt wrote request bytes upstream
  bool retried = false;         // a retry was made
  bool retryLimitHit = false;   // a retriable failure found no attempt left (URX)
  http::BodyFramer respBody;
  bool respHeadDone = false;
  bool respStarted = false;  // bytes of the response went downstream
  bool dechunk = false;
  bool closeAfter = false;
  bool websocket = false;  // the client asked for a WebSocket upgrade
  bool tunnel = false;     // ... and the upstream switched: bytes flow both ways as they are
  int endpoint = -1;
  uint64_t triedMask = 0;  // endpoints 0..63 this request was sent to
  bool triedBefore(int i) const { return i < 64 && (triedMask >> i) & 1; }
  EndpointState* ep = nullptr;
  sockaddr_in upstreamAddr{};
  // Outlier state of `cluster` when it has any: every attempt's outcome goes
  // there.
  std::shared_ptr<upstream::ClusterHealth> health;
  // Connection-pool circuit breakers of `cluster`: this request's unit of
  // http2MaxRequests, of http1MaxPendingRequests while it waits for a
  // connection, of maxRetries once it has been retried.
  std::shared_ptr<upstream::ClusterLimits> limits;
  upstream::LimitToken requestToken, pendingToken, retryToken;
  // Consistent hashing: this request's key, and the cookie to hand out when
  // the hash cookie was missing and the policy generates one.
  bool hasHashKey = false;
  uint64_t hashKey = 0;
  std::string setCookie;
  std::string corsHeaders;  // CORS lines for the response
  // Request headers the response's header values read (%REQ(x)%), copied
  // before the request head's bytes go.
  std::vector<std::pair<std::string, std::string>> savedRequestHeaders;
  route::FaultPolicy::Decision fault;
  bool faultDelayed = false;
  // Mirrors chosen for this request, started once it is dispatched, then
  // fed the body.
  struct PendingShadow {
    const route::Cluster* cluster;
    std::string head;
  };
  std::vector<PendingShadow> pendingShadows;
  std::vector<std::unique_ptr<ShadowStream>> shadows;
  std::string upstreamHost;
  bool raceRetried = false;   // one silent retry for a reused connection closed under us
  uint64_t startNs = 0;
  uint64_t startRealNs = 0;
  uint64_t upstreamSentNs = 0;
  uint64_t serviceTimeMs = 0;
  int status = 0;
  std::string flags = "-";
  uint64_t respBytes = 0;

  // Back to the state of a new exchange, keeping the strings' capacity: one
  // Exchange per connection is reused request after request.
  void clear() {
    snapshot.reset();
    route = nullptr;
    matched = nullptr;
    wc = nullptr;
    cluster = nullptr;
    for (std::string* str : {&method, &authority, &path, &requestId, &userAgent, &forwardedFor,
                             &upstreamHead, &upstreamHost, &setCookie, &corsHeaders}) {
      str->clear();
    }
    isHead = http10 = expectContinue = false;
    keepAlive = true;
    reqBody.reset({});
    reqDone = false;
    reqBodySent = 0;
    if (replay.capacity() > 16 * 1024) {
      std::string().swap(replay);  // a big body's buffer is not kept for the next request
    } else {
      replay.clear();
    }
    keepReplay = replayOverflow = false;
    retry.reset();
    attemptWrote = retried = retryLimitHit = false;
    respBody.reset({});
    respHeadDone = respStarted = dechunk = closeAfter = websocket = tunnel = false;
    endpoint = -1;
    triedMask = 0;
    ep = nullptr;
    upstreamAddr = {};
    health.reset();
    limits.reset();
    requestToken.reset();
    pendingToken.reset();
    retryToken.reset();
    hasHashKey = false;
    hashKey = 0;
    fault = {};
    faultDelayed = false;
    pendingShadows.clear();
    shadows.clear();
    savedRequestHeaders.clear();
    raceRetried = false;
    startNs = startRealNs = upstreamSentNs = serviceTimeMs = 0;
    status = 0;
    flags.assign("-");
    respBytes = 0;
  }
};

}  // namespace sluice::proxy
