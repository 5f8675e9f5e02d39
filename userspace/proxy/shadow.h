// Traffic mirroring (VirtualService `mirror`, `mirrors`): fire-and-forget
// copies of a request sent to another cluster. The mirror's response is read
// and thrown away; its latency or failure never reaches the primary request.
// A mirror speaks what its cluster speaks: HTTP/1.1 or HTTP/2, plaintext or
// TLS (trafficPolicy.tls), whatever the primary's protocol.
//
// Memory stays bounded however slow the mirror is: each worker caps the
// mirrored requests it has in flight (past the cap a mirror is shed and
// counted), and a mirror whose unsent bytes pass a per-request cap is
// abandoned (counted as retry_or_shadow_abandoned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/timer_wheel.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"

namespace sluice::proxy {

class Worker;
class ShadowConn;
class ShadowH2;
class ShadowManager;

// One mirrored request, as the router made it.
struct ShadowRequest {
  std::string head;         // complete HTTP/1.1 request head, "-shadow" authority
  bool hasBody = false;
  bool chunked = false;     // the head frames the body chunked
  bool clientHttp2 = false; // the client speaks HTTP/2 (a useClientProtocol mirror does too)
  bool teTrailers = false;  // the client asked for trailers (kept on an HTTP/2 mirror, as gRPC needs)
  // The longest the mirror may take end to end (0: the engine's stream
  // idle timeout bounds it instead).
  uint64_t timeoutNs = 0;
};

// What a mirror in flight offers its ShadowStream (an HTTP/1.1 connection
// or an HTTP/2 stream).
class ShadowSink {
 public:
  // Request body payload; each kind of mirror frames it its own way.
  virtual void feedBody(std::string_view payload, bool last) = 0;
  // The ShadowStream is being destroyed; `finished`: the request was whole.
  virtual void streamGone(bool finished) = 0;

 protected:
  ~ShadowSink() = default;
};

// The primary request's handle on one mirrored copy while the request body
// still flows. Destroying it before `feed(..., true)` abandons the mirror
// (the primary's client went away mid-body); after, the mirror finishes on
// its own.
class ShadowStream {
 public:
  ~ShadowStream();
  ShadowStream(const ShadowStream&) = delete;
  ShadowStream& operator=(const ShadowStream&) = delete;

  // Request body payload (without the primary's framing). `last`: the
  // request is complete.
  void feed(std::string_view payload, bool last);
  // The mirror is gone (failed, abandoned or done).
  bool dead() const { return sink_ == nullptr; }

 private:
  friend class ShadowConn;
  friend class ShadowH2;
  friend class ShadowManager;
  explicit ShadowStream(ShadowSink* sink) : sink_(sink) {}
  ShadowSink* sink_;
  bool finished_ = false;
};

class ShadowManager {
 public:
  // `maxInFlight`: mirrored requests this worker may have in flight;
  // `maxUnsentBytes`: what one mirror may hold unsent before it is abandoned.
  ShadowManager(Worker& worker, size_t maxInFlight = 1024, size_t maxUnsentBytes = 1 << 20);
  ~ShadowManager();

  // Starts mirrored request `rq` to `ep`, the way the mirror cluster
  // connects (`settings`: HTTP/1.1 or HTTP/2, TLS, connectTimeout,
  // tcpKeepalive) within its circuit breakers (`limits`, null: none): an
  // HTTP/1.1 mirror takes a connection of its own (pooled between
  // mirrors), an HTTP/2 one a stream on the cluster's shared connections.
  // A new connection takes a unit of maxConnections. Returns null when
  // shed (too many mirrors in flight, or no connection slot). Without a
  // body the stream comes back finished, and dropping it at once is fine.
  std::unique_ptr<ShadowStream> start(const route::Endpoint& ep, ShadowRequest rq,
                                      const route::UpstreamSettings& settings = {},
                                      const std::shared_ptr<upstream::ClusterLimits>& limits = nullptr);
  size_t inFlight() const { return inFlight_; }
  // The worker began draining: idle pooled mirror connections close now
  // (and, the worker draining, finished mirrors no longer enter the pool).
  void drain();

 private:
  friend class ShadowConn;
  friend class ShadowH2;
  std::unique_ptr<ShadowStream> startH2(const route::Endpoint& ep, ShadowRequest&& rq,
                                        const route::UpstreamSettings& settings,
                                        const std::shared_ptr<upstream::ClusterLimits>& limits);
  // Frees the HTTP/2 mirrors that ended (never during one of their calls).
  void reap();

  Worker& worker_;
  size_t maxInFlight_;
  size_t maxUnsentBytes_;
  size_t inFlight_ = 0;
  // Every live ShadowConn (intrusive list), deleted with the manager when
  // the worker exits; and the idle keep-alive ones by endpoint key.
  ShadowConn* live_ = nullptr;
  std::unordered_map<std::string, std::vector<ShadowConn*>> idle_;
  // HTTP/2 mirrors in flight, and those ended and waiting for reap().
  std::vector<ShadowH2*> liveH2_;
  std::vector<ShadowH2*> deadH2_;
  core::MemberTimer<ShadowManager, &ShadowManager::reap> reapTimer_{this};
};

}  // namespace sluice::proxy
