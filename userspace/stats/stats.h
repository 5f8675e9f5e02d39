// Metrics: Istio's standard request metrics and Envoy-style counters.
//
// Each worker owns a StatsShard and is its only writer. Counters are relaxed
// atomics so the admin thread can read them while the worker runs; the
// labelled request series live in a map that the worker inserts into under a
// mutex only when a new label set first appears, so the steady-state request
// path takes no lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::stats {

// Envoy's default histogram buckets (milliseconds), which Istio's
// istio_request_duration_milliseconds uses.
inline constexpr std::array<double, 19> kDurationBucketsMs = {
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000};

enum class Counter : size_t {
  DownstreamCxTotal,
  DownstreamCxActive,  // gauge
  DownstreamRqTotal,
  DownstreamRq1xx,
  DownstreamRq2xx,
  DownstreamRq3xx,
  DownstreamRq4xx,
  DownstreamRq5xx,
  DownstreamRqBad,  // malformed requests answered locally (400/413/431/501/505)
  DownstreamRqIdleTimeout,  // stream idle timeout (flag SI)
  DownstreamRqHeaderTimeout,  // --request-headers-timeout: a head not complete in time (408, closed)
  DownstreamCxDestroyRemoteActiveRq,  // the client left with a request in flight (flag DC): cancelled
  DownstreamCxAcceptError,  // accept failed (out of descriptors or memory: the listener backs off)
  DownstreamCxOverflow,     // --max-connections reached: a new connection closed at once
  DownstreamRqOverload,     // --max-heap exceeded: a request answered 503 (flag OM)
  DownstreamCxOverloadShed, // --max-heap exceeded: an idle connection closed
  UpstreamCxTotal,
  UpstreamCxActive,  // gauge
  UpstreamCxConnectFail,
  UpstreamCxConnectTimeout,
  UpstreamCxReused,
  UpstreamRqTotal,
  UpstreamRqTimeout,
  UpstreamRqRetry,
  UpstreamRqResetBeforeResponse,
  NoRoute,
  NoHealthyUpstream,
  RecvBufferExhausted,
  LoopIterations,   // io_uring waits (one submit+wait each)
  CompletionsRecv,  // multishot recv completions
  CompletionsSend,
  RecvRearm,        // multishot recv ended and was armed again
  TcpCxTotal,       // L4 (TCP route) connections accepted
  TcpCxSpliced,     // ... handed to the kernel's sk_skb splice
  TcpSpliceHeld,    // a spliced direction the kernel held (reader behind): the daemon reads it too
  TcpBytesCopied,   // ... bytes relayed by the userspace copy loop
  TcpDrainTimeout,  // spliced pair closed before the kernel drained an EOF
  TcpCxError,       // an L4 connection ended by a socket error on either side
  TcpIdleTimeout,   // an L4 connection closed after tcp.idleTimeout without bytes
  UpstreamCxOverflow,         // maxConnections reached when a connection was needed
  UpstreamRqPendingOverflow,  // 503 UO: http1MaxPendingRequests or http2MaxRequests full
  UpstreamRqRetryOverflow,    // a retry not made: maxRetries in flight
  UpstreamRqPerTryTimeout,    // an attempt outlived retries.perTryTimeout
  UpstreamRqRetryLimitExceeded,  // retriable failure, no attempts left
  UpstreamRqRetrySuccess,     // a retried request that ended well
  RetryOrShadowAbandoned,     // body past the replay/shadow buffer: no retry or shadow
  ShadowRqTotal,              // mirrored requests started
  ShadowRqShed,               // mirrors not started: the worker's in-flight cap, or no connection slot
  ShadowRqFailed,             // mirrors that ended without a response
  FaultDelaysInjected,        // flag DI
  FaultAbortsInjected,        // flag FI
  CorsOriginValid,            // CORS requests whose Origin the policy allows
  CorsOriginInvalid,          // ... and whose Origin it does not
  SslHandshake,               // TLS handshakes completed (gateway HTTPS servers)
  SslHandshakeError,          // ... failed: not TLS, malformed, no shared version or cipher, no certificate loaded
  SslNoCertificate,           // MUTUAL: the client sent no certificate
  SslFailVerifySan,           // the client's certificate has none of subjectAltNames
  SslFailVerifyError,         // the client's certificate does not verify against the CA
  SslConnectionError,         // a TLS error after the handshake
  SslHandshakeTimeout,        // a handshake not finished within --tls-handshake-timeout
  ListenerNoFilterChainMatch, // a ClientHello whose SNI no HTTPS server of the port names
  UpstreamSslHandshake,       // TLS handshakes with upstreams completed (DestinationRule tls)
  UpstreamSslSessionReused,   // ... of them resumed a session the endpoint gave before
  UpstreamSslHandshakeError,  // ... failed (verification, protocol, no client certificate loaded, timeout)
  // HTTP/2 downstream (Envoy's http2.* names where it has one).
  DownstreamCxHttp2Total,     // client connections that spoke HTTP/2
  DownstreamCxHttp2Active,    // gauge
  Http2RxReset,               // streams the client reset (RST_STREAM)
  Http2TxReset,               // streams sluiced reset (a response cut short, a header list too big)
  Http2PrematureResets,       // GOAWAY to a client resetting streams faster than it completes them (rapid reset)
  Http2HeaderOverflow,        // header lists over the limit (HPACK bombs among them): stream reset
  Http2InboundControlFlood,   // connections closed for a SETTINGS/PING/RST flood (replies piling up)
  Http2ContinuationFlood,     // connections closed for a header block in too many CONTINUATION frames
  Http2ProtocolError,         // connections closed for any other framing or HPACK error
  Http2RxMessagingError,      // streams reset for breaking HTTP's rules (bad header fields, pseudo-headers)
  Http2GoawaySent,            // GOAWAY frames sent (drain, errors, floods)
  UpstreamCxHttp2Total,       // HTTP/2 connections to upstreams
  UpstreamHttp2KeepaliveTimeout,  // HTTP/2 upstream connections closed: a keepalive PING went unanswered
  UpstreamCxProtocolError,    // ... closed for a framing or HPACK error of the upstream's
  // Global rate limiting (Envoy's ratelimit.* names).
  RateLimitOk,                // requests the global rate limit let through (under every limit)
  RateLimitOverLimit,         // ... answered 429: a descriptor over its limit (shadow_mode: counted, not enforced)
  RateLimitError,             // ... whose decision failed: Redis down, slow past the timeout, or an error reply
  RateLimitFailureModeAllowed,  // ... of those, let through (failure_mode_deny unset)
  RedisCxTotal,               // connections made to --redis
  RedisCxConnectFail,         // ... that failed to connect (refused, timed out)
  RedisCxError,               // ... lost: reset, closed by Redis, or a reply that was no integer
  kCount
};

const char* counterName(Counter c);

// One istio_requests_total series.
struct RequestKey {
  std::string destinationService;  // FQDN, "unknown" for no route
  std::string destinationVersion;  // subset, "unknown" if none
  std::string cluster;
  uint16_t responseCode = 0;
  std::string responseFlags;  // "-" when none
  bool grpc = false;          // request_protocol "grpc" (else "http")
  int16_t grpcStatus = -1;    // grpc_response_status; -1: none seen
  bool operator==(const RequestKey&) const = default;
};

// The same key as views, for the per-request lookup: no string is copied
// unless the series is new.
struct RequestKeyView {
  std::string_view destinationService;
  std::string_view destinationVersion;
  std::string_view cluster;
  uint16_t responseCode = 0;
  std::string_view responseFlags;
  bool grpc = false;
  int16_t grpcStatus = -1;
};

struct RequestKeyHash {
  using is_transparent = void;
  size_t operator()(const RequestKey& k) const;
  size_t operator()(const RequestKeyView& k) const;
};

struct RequestKeyEq {
  using is_transparent = void;
  bool operator()(const RequestKey& a, const RequestKey& b) const { return a == b; }
  bool operator()(const RequestKeyView& a, const RequestKey& b) const {
    return a.responseCode == b.responseCode && a.cluster == b.cluster && a.responseFlags == b.responseFlags &&
           a.destinationService == b.destinationService && a.destinationVersion == b.destinationVersion &&
           a.grpc == b.grpc && a.grpcStatus == b.grpcStatus;
  }
  bool operator()(const RequestKey& a, const RequestKeyView& b) const { return (*this)(b, a); }
};

struct RequestSeries {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> durationSumUs{0};
  std::array<std::atomic<uint64_t>, kDurationBucketsMs.size()> buckets{};
  std::atomic<uint64_t> requestBytes{0};
  std::atomic<uint64_t> responseBytes{0};
  std::atomic<uint64_t> requestMessages{0};   // gRPC
  std::atomic<uint64_t> responseMessages{0};
};

class StatsShard {
 public:
  // Single writer (the owning worker): a plain load and store, no locked
  // read-modify-write, and still a torn-free value for the admin reader.
  void inc(Counter c, uint64_t n = 1) {
    auto& a = counters_[size_t(c)];
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void dec(Counter c) {
    auto& a = counters_[size_t(c)];
    a.store(a.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  }
  uint64_t get(Counter c) const { return counters_[size_t(c)].load(std::memory_order_relaxed); }

  // Records one finished request. Worker thread only.
  void recordRequest(const RequestKeyView& key, uint64_t durationUs, uint64_t reqBytes,
                     uint64_t respBytes, uint64_t reqMessages = 0, uint64_t respMessages = 0);

  // Admin thread: copies every series out under the insertion lock.
  struct SeriesCopy {
    RequestKey key;
    uint64_t count, durationSumUs, requestBytes, responseBytes, requestMessages, responseMessages;
    std::array<uint64_t, kDurationBucketsMs.size()> buckets;
  };
  std::vector<SeriesCopy> series() const;

 private:
  std::array<std::atomic<uint64_t>, size_t(Counter::kCount)> counters_{};
  mutable std::mutex insertMu_;
  std::unordered_map<RequestKey, std::unique_ptr<RequestSeries>, RequestKeyHash, RequestKeyEq> series_;
};

// Gathers shards for rendering. Shards are owned by workers and outlive this.
// Kernel-kept TCP counters of one captured service port (eBPF), seen from
// the client side as Istio's source reporter sees them.
struct TcpServiceStats {
  std::string service;  // FQDN
  uint32_t port = 0;
  uint64_t opened = 0;
  uint64_t closed = 0;
  uint64_t sentBytes = 0;      // towards the client: responses
  uint64_t receivedBytes = 0;  // from the client: requests
};
// istio_tcp_connections_opened_total, _closed_total, istio_tcp_sent_bytes_total,
// istio_tcp_received_bytes_total in Prometheus text format.
std::string renderTcpPrometheus(const std::vector<TcpServiceStats>& services);

// Outlier detection and circuit breakers of one cluster, for metrics.
struct OutlierStats {
  std::string cluster;
  uint64_t ejectedNow = 0;
  uint64_t ejectionsTotal = 0;
};
struct CircuitStats {
  std::string cluster;
  uint64_t cxOverflow = 0;
  uint64_t rqPendingOverflow = 0;
  uint64_t rqRetryOverflow = 0;
  uint64_t connections = 0;  // open now
  uint64_t pending = 0;      // waiting for a connection now
  uint64_t requests = 0;     // in flight now
};
// envoy_cluster_upstream_{cx,rq_pending,rq_retry}_overflow (Prometheus) or
// cluster.<name>.* lines (/stats).
std::string renderCircuitPrometheus(const std::vector<CircuitStats>& clusters);
std::string renderCircuitText(const std::vector<CircuitStats>& clusters);
// envoy_cluster_outlier_detection_ejections_active / _enforced_total (Prometheus)
// or cluster.<name>.outlier_detection.* lines (/stats).
std::string renderOutlierPrometheus(const std::vector<OutlierStats>& clusters);
std::string renderOutlierText(const std::vector<OutlierStats>& clusters);

class Registry {
 public:
  void add(const StatsShard* shard) { shards_.push_back(shard); }
  uint64_t total(Counter c) const;
  std::string renderText() const;        // /stats
  std::string renderPrometheus() const;  // /stats/prometheus
  // Global (non-worker) counters, e.g. config reloads.
  std::atomic<uint64_t> configReloadOk{0};
  std::atomic<uint64_t> configReloadFail{0};

 private:
  std::vector<const StatsShard*> shards_;
};

}  // namespace sluice::stats
