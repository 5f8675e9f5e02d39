// One downstream HTTP/1.1 connection and the upstream connection serving its
// current request. Requests on a connection are handled one at a time, in
// order (pipelined requests wait in the input buffer); bodies stream through
// in both directions with back-pressure instead of being buffered whole.
#pragma once

#include <netinet/in.h>

#include <memory>
#include <string>

#include "core/timer_wheel.h"
#include "http/parser.h"
#include "proxy/conn_pool.h"
#include "proxy/connection.h"
#include "proxy/engine.h"
#include "proxy/outbound.h"
#include "proxy/filters/filter.h"
#include "proxy/request_util.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

class DownstreamConn;
class TlsServerTransport;
struct EndpointState;
struct Stream;

class UpstreamConn final : public OutboundConnection {
 public:
  // `connToken`: this connection's unit of its cluster's maxConnections
  // (empty when the cluster has no limit), released when it closes.
  UpstreamConn(Worker& worker, int fd, const route::Endpoint& ep, EndpointState& state,
               upstream::LimitToken connToken = {}, const route::UpstreamSettings& settings = {});

  void connect();
  // Binds to a request; the connection was idle in the pool.
  void attach(DownstreamConn* owner);
  // Returns the connection to its endpoint's idle pool.
  void release();
  // An idle pooled connection leaves the pool at once and closes.
  void retire() {
    if (pooled_) removeFromPool();
    close();
  }
  EndpointState& endpointState() { return state_; }
  // Made the way `s` connects (plaintext, or TLS with the same credentials).
  bool sameTransport(const route::UpstreamSettings& s) const {
    return s.tls == settings_.tls && s.tlsCredentials == settings_.tlsCredentials;
  }
  bool reused() const { return reused_; }
  const std::string& endpointKey() const { return key_; }
  std::string& input() { return input_; }
  void consume(size_t n) { consumeInput(n); }
  void detach() { owner_ = nullptr; }
  uint64_t requestsServed = 0;

 private:
  void onData() override;
  void onPeerClosed(int err) override;
  void onDrained() override;
  void onSendProgress() override;
  void onDestroy() override;
  void onConnected() override;
  void onConnectFailed(bool timedOut) override;
  // TLS to the upstream (the cluster's trafficPolicy.tls): the connection
  // counts as connected once the handshake ends, within the connect timeout.
  void startTls();
  void onTransportReady() override;
  void onHandshakeTimeout();
  void onIdleTimeout();
  void removeFromPool();

  DownstreamConn* owner_ = nullptr;
  EndpointState& state_;
  upstream::LimitToken connToken_;
  route::UpstreamSettings settings_;  // the cluster's connectionPool timing
  uint64_t createdNs_ = 0;
  sockaddr_in addr_;
  std::string key_;
  core::MemberTimer<UpstreamConn, &UpstreamConn::onIdleTimeout> idleTimer_{this};
  core::MemberTimer<UpstreamConn, &UpstreamConn::onHandshakeTimeout> handshakeTimer_{this};
  bool tlsPending_ = false;  // connected over TCP, TLS handshake under way
  bool reused_ = false;
  bool pooled_ = false;
};

// How long a client gets to read the rest of a response that was cut short
// before its connection closes anyway (DownstreamConn::cutResponse).
inline constexpr uint64_t kCutFlushNs = 5'000'000'000ull;

class DownstreamConn final : public Connection, public PoolWaiter, private FilterCallbacks {
 public:
  // `orig`: the address the client dialled when the kernel captured the
  // connection (its port routes instead of the Host port; PASSTHROUGH
  // clusters connect to it), else null. `gatewayKey`: the gateway listener
  // (route::GatewayListener::key) that accepted it, whose route table its
  // requests use; 0 for the outbound listener.
  DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer, const sockaddr_in* orig = nullptr,
                 ConnectionSlot slot = {}, uint64_t gatewayKey = 0);
  // The listener terminates TLS (an HTTPS gateway server whose certificate
  // is `ctx`, chosen by `sni`); `hello` is what the HelloSniffer read. Call
  // before start(); false when the handshake failed at once (the alert is
  // on its way and the connection closes: do not start it). The handshake
  // must end within --tls-handshake-timeout.
  // `server`: the server chosen (its requests route with that server's
  // table only while SNI still selects it); `deadlineNs`: when the
  // handshake must be done (the sniffer's budget, from accept).
  bool useTls(const route::GatewayTlsServer& server, std::shared_ptr<const tls::ServerContext> ctx, std::string sni,
              std::string peer, std::string_view hello, uint64_t deadlineNs);
  void start();
  // Drain: close now if idle, else after the current response.
  void drain() override;
  void shedIfIdle() override;

  // Upstream events, forwarded by UpstreamConn.
  void onUpstreamConnected();
  void onUpstreamConnectFailed(bool timeout);
  void onUpstreamData();
  void onUpstreamClosed(int err);
  void onUpstreamDrained();
  // Bytes moved on the upstream side: pushes the stream idle deadline back.
  void touchStream();

 private:
  friend struct Stream;  // its timers fire here
  void onData() override;
  void onPeerClosed(int err) override;
  void onDrained() override;
  void onDestroy() override;

  void processInput();
  // Parses the head at the start of input_ into a new stream, routes it
  // and runs the filter chain. False when the connection is done (error
  // reply sent) or more bytes are needed.
  bool startRequest();
  // The codec's checks of a parsed head that the stream now owns; false
  // when it was answered here (CONNECT, a bad target, overload).
  bool acceptHead();
  // Virtual host, route and weighted destination (with the consistent-hash
  // key that may choose it); false when no route matched (404 NR).
  bool resolveRoute();
  // The virtual host of the stream's request: by destination port and Host
  // for the outbound listener, by Host in the gateway listener's table.
  const route::VirtualHost* findVirtualHost();
  // Runs the request filters from the stream's filterIndex on.
  void runFilters();
  void onFilterResume();
  void startShadows();
  // The whole request has been read: route and per-try timers start.
  void onRequestComplete();
  // Starts one attempt: picks an endpoint and a connection.
  void dispatch();
  void sendUpstreamHead();
  void forwardRequestBody();
  bool handleResponseHead();
  void forwardResponseBody();
  // WebSocket: the upstream answered 101; from here the exchange is a
  // tunnel of raw bytes both ways, with back-pressure, until either side
  // closes (or the stream idle timeout).
  void startTunnel();
  void relayUpstream();
  void localReply(int status, std::string_view body, std::string_view flags,
                  const http::HeaderMap* extraHeaders = nullptr);
  void finishStream(bool upstreamReusable);
  void abortStream(std::string_view flags);
  // A response already under way cannot be finished: the exchange ends with
  // `flags`, the bytes already queued for the client (earlier pipelined
  // answers, this one's head and body so far) still go out, then the
  // connection closes; the client sees the response cut short. A client
  // that stopped reading gets kCutFlushNs to take them.
  void cutResponse(std::string_view flags);
  void releaseUpstream(bool reusable);
  void computeHashKey(const route::HashPolicy& hp, std::string_view path);
  // Tells outlier detection how the current attempt's host did.
  void reportOutcome(upstream::Outcome o);
  // An attempt failed without a response (session_failures.cc): retried
  // when the policy allows, else answered with `status`.
  void failAttempt(route::AttemptFailure failure, int status, std::string_view body, std::string_view flags);
  // Acts on a retry decision; true when a retry is scheduled.
  bool scheduleRetry(route::RetryDecision decision);
  void onRouteTimeout();
  void onPerTryTimeout();
  void onRetryTimer();
  // A circuit breaker tripped: 503 UO with x-envoy-overloaded.
  void overflow(bool unused);
  void onIdleTimeout();
  void onHeadersTimeout();
  void onHandshakeTimeout();
  void onStreamIdle();
  // PoolWaiter: the connection or slot this request waited for.
  void onPoolConnection(UpstreamConn* c) override;
  void onPoolSlot() override;
  // An attempt has its connection: count it and start its per-try timer.
  void beginAttempt();
  void onSendProgress() override;
  void logAndCount();
  void cancelTimers();
  void retireStream();

  // FilterCallbacks, for the request filters.
  Stream& stream() override { return *stream_; }
  core::Rng& rng() override;
  const core::Clock& clock() const override;
  stats::StatsShard& stats() override;
  const sockaddr_in& downstreamRemote() const override { return peer_; }
  istio::HeaderContext headerContext() override;
  void sendLocalReply(int status, std::string_view body, std::string_view flags,
                      const http::HeaderMap* extraHeaders) override;
  void pauseFor(uint64_t ns) override;
  void forwardUpstream() override;

  std::unique_ptr<Stream> stream_;  // the request in progress, if any
  ConnectionSlot slot_;  // this connection's unit of --max-connections
  UpstreamConn* up_ = nullptr;
  sockaddr_in peer_;
  uint16_t origPort_ = 0;
  uint64_t gatewayKey_ = 0;
  TlsServerTransport* tls_ = nullptr;  // owned by Connection; set: TLS terminated here
  // The credentials of the server the handshake chose: a later snapshot in
  // which the SNI selects another server (or this one with other TLS
  // settings) must not serve this connection's requests.
  const void* tlsServerIdentity_ = nullptr;
  sockaddr_in orig_{};  // sin_port 0: not captured
  sockaddr_in local_{};  // our end, looked up once when a header needs it
  bool haveLocal_ = false;
  http::Limits limits_;
  http::RequestHead head_;     // what the parser fills (reused, keeps capacity)
  // The last stream's head buffers, for the next stream to fill.
  std::string spareHeadBytes_;
  std::vector<http::Header> spareHeaders_;
  http::ResponseHead resp_;
  bool draining_ = false;
  bool pausedForUpstream_ = false;
  bool inProcess_ = false;
  bool wokenFirst_ = false;  // re-dispatching after a pool wake: queue first again
  core::MemberTimer<DownstreamConn, &DownstreamConn::onIdleTimeout> idleTimer_{this};
  core::MemberTimer<DownstreamConn, &DownstreamConn::onHeadersTimeout> headersTimer_{this};
  core::MemberTimer<DownstreamConn, &DownstreamConn::onHandshakeTimeout> handshakeTimer_{this};
};

}  // namespace sluice::proxy
