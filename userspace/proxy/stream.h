// One request/response exchange of a downstream connection: created when a
// request head has been parsed, destroyed when its response is done. It
// owns the request head (a copy, so filters may pause and resume after the
// connection's input buffer has moved on), the request's timers and its
// retry, mirror and circuit-breaker state. Nothing carries over from one
// request to the next.
#pragma once

#include <netinet/in.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/timer_wheel.h"
#include "http/grpc.h"
#include "http/parser.h"
#include "proxy/http_session.h"
#include "proxy/request_util.h"
#include "proxy/shadow.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

// Past this many unsent bytes on the far side, stop reading from the near
// side: bodies stream with bounded memory instead of being buffered whole.
inline constexpr size_t kHighWater = 1 << 20;
// Bytes of pipelined requests we are willing to hold while one is in flight.
inline constexpr size_t kMaxBufferedInput = 128 * 1024;

// Request bodies are kept for replay (retries) up to this size; a longer body
// makes the request unretriable once any of it was sent.
inline constexpr size_t kReplayLimit = 256 * 1024;

struct Stream {
  explicit Stream(HttpExchange* conn) : routeTimer(conn), retryTimer(conn), perTryTimer(conn),
                                          resumeTimer(conn), idleTimer(conn) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  // A stream is made and freed for every request: its memory comes from a
  // small per-thread free list (the object itself is built and destroyed
  // each time; only the bytes are reused).
  static void* operator new(size_t size);
  static void operator delete(void* p, size_t size);

  // Takes a copy of the head `parsed` read from `base` (its views point
  // there); from here the stream's views point into its own bytes.
  void adoptHead(const http::RequestHead& parsed, const char* base);

  // The request head, its bytes owned here (empty after a parse error).
  // Its header fields are in `headers` (head.headers is left empty).
  std::string headBytes;
  http::RequestHead head;
  http::HeaderMap headers;
  TargetParts target;  // views into `head` (or its own storage)
  std::string_view requestId;
  char requestIdStorage[36];  // backs requestId when sluiced made one

  std::shared_ptr<const route::Snapshot> snapshot;
  const route::Route* route = nullptr;
  const route::CompiledMatch* matched = nullptr;  // the match block that chose `route`
  const route::WeightedCluster* wc = nullptr;
  const route::Cluster* cluster = nullptr;
  uint32_t port = 0;  // the port the virtual host was chosen by
  bool onGateway = false;  // came in on a Gateway listener (not the outbound one)
  // On a gateway listener: the scheme the client used ("http", "https"),
  // sent upstream as x-forwarded-proto in place of the client's, as an
  // edge proxy does. Empty (the mesh): the client's value, else "http".
  std::string_view forwardedProto;
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
  bool upstreamH2 = false;  // attempts are HTTP/2 streams (the cluster's protocol)
  // gRPC (content-type application/grpc): its status as the client sees it
  // (-1: none seen), and its messages each way, for the metrics.
  bool grpc = false;
  int grpcStatus = -1;
  http::GrpcMessageCounter reqMessages, respMessages;
  int endpoint = -1;
  uint64_t triedMask = 0;  // endpoints 0..63 this request was sent to
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
  // Fields the proxy's filters add to the upstream's response (CORS, the
  // generated hash cookie).
  http::HeaderMap responseExtra;
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
  size_t filterIndex = 0;     // the request filter running (or paused)
  const route::VirtualHost* vhost = nullptr;  // the virtual host `route` is from
  // Global rate limiting: the limit being applied (an index into the
  // snapshot's globalRateLimits), the rules its Redis call counts against
  // (one per key), and the call's outcome.
  struct RateLimitCall {
    enum class State { None, Pending, Counted, Failed };
    State state = State::None;
    uint64_t id = 0;  // the Redis or service call while Pending
    bool viaService = false;  // the rate limit service's (gRPC), not Redis
    size_t limit = 0;
    std::vector<const route::RateLimitRule*> rules;
    std::vector<int64_t> counts;
  } rateLimit;
  uint64_t startNs = 0;
  uint64_t startRealNs = 0;
  uint64_t upstreamSentNs = 0;
  uint64_t serviceTimeMs = 0;
  int status = 0;
  std::string flags = "-";
  uint64_t respBytes = 0;

  // The request's timers: they fire on the connection, which knows what
  // the stream is waiting for.
  core::MemberTimer<HttpExchange, &HttpExchange::onRouteTimeout> routeTimer;
  core::MemberTimer<HttpExchange, &HttpExchange::onRetryTimer> retryTimer;
  core::MemberTimer<HttpExchange, &HttpExchange::onPerTryTimeout> perTryTimer;
  core::MemberTimer<HttpExchange, &HttpExchange::onFilterResume> resumeTimer;  // a paused filter
  core::MemberTimer<HttpExchange, &HttpExchange::onStreamIdle> idleTimer;
};

}  // namespace sluice::proxy
