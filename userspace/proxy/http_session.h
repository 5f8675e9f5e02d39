// Downstream HTTP exchanges and the pooled upstream HTTP/1.1 connections
// serving them. Bodies stream through in both directions with back-pressure
// instead of being buffered whole.
#pragma once

#include <netinet/in.h>

#include <memory>
#include <string>
#include <vector>

#include "core/timer_wheel.h"
#include "http/parser.h"
#include "proxy/conn_pool.h"
#include "proxy/connection.h"
#include "proxy/engine.h"
#include "proxy/outbound.h"
#include "proxy/filters/filter.h"
#include "proxy/h2_upstream.h"
#include "proxy/request_util.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

class DownstreamConn;
class H2Session;
class HttpExchange;
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
  void attach(HttpExchange* owner);
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

  HttpExchange* owner_ = nullptr;
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

// What the exchanges of one client connection know of it: owned by the
// connection, read by each of its exchanges (one at a time on HTTP/1.1,
// many at once on HTTP/2).
struct DownstreamInfo {
  DownstreamInfo(const sockaddr_in& p, const sockaddr_in* o, uint64_t key)
      : peer(p), origPort(o ? ntohs(o->sin_port) : 0), gatewayKey(key) {
    if (o) orig = *o;
  }
  sockaddr_in peer;
  sockaddr_in orig{};  // sin_port 0: not captured
  uint16_t origPort = 0;
  // The gateway listener (route::GatewayListener::key) that accepted the
  // connection, whose route table its requests use; 0 for the outbound one.
  uint64_t gatewayKey = 0;
  TlsServerTransport* tls = nullptr;  // owned by the Connection; set: TLS terminated here
  // The credentials of the server the handshake chose: a later snapshot in
  // which the SNI selects another server (or this one with other TLS
  // settings) must not serve this connection's requests.
  const void* tlsServerIdentity = nullptr;
  sockaddr_in local{};  // our end, looked up once when a header needs it
  bool haveLocal = false;
  int fd = -1;  // the client's socket (getsockname), owned by the Connection
  bool draining = false;
  http::Limits limits;
};

// One request/response exchange with a client, whatever the protocol: the
// route, the filter chain, the attempts upstream (balancing, pools,
// retries, timeouts, mirrors, outlier reports), the response and the
// counters. What differs between HTTP/1.1 and HTTP/2 – how the request
// body arrives, how the response is written, what ends the exchange – is
// the codec's side, the pure virtual functions below (DownstreamConn for
// HTTP/1.1, H2Stream for HTTP/2).
class HttpExchange : public PoolWaiter, public H2StreamOwner, public RedisWaiter, protected FilterCallbacks {
 public:
  HttpExchange(Worker& worker, DownstreamInfo& info);
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;
  virtual ~HttpExchange();

  // Upstream events, from UpstreamConn (HTTP/1.1) or H2UpstreamConn (the
  // attempt's HTTP/2 stream, H2StreamOwner).
  void onUpstreamConnected() override;
  void onUpstreamConnectFailed(bool timeout) override;
  void onUpstreamData();
  void onUpstreamClosed(int err) override;
  void onUpstreamDrained() override;
  // Bytes moved on either side: pushes the stream idle deadline back.
  void touchStream();
  void onH2UpstreamHead(int status, std::vector<http::Header>& fields, bool endStream) override;
  void onH2UpstreamData() override;
  void onH2UpstreamTrailers(std::vector<http::Header>& fields) override;
  void onH2UpstreamReset(uint32_t errorCode) override;

 protected:
  friend struct Stream;  // its timers fire here

  // ---- The codec's side.
  // "HTTP/1.1", "HTTP/1.0", "HTTP/2": for the access log and templates.
  virtual std::string_view protocol() const = 0;
  // The request body the client sent that this exchange has not taken:
  // its payload (views valid until releaseRequestBody), `done` when the
  // body ends with them. Returns the client's bytes they stand for (the
  // body's share of the wire), or -1 when the body is malformed.
  virtual int64_t pullRequestBody(std::vector<std::string_view>& payload, bool& done) = 0;
  // The bytes pullRequestBody returned were sent on.
  virtual void releaseRequestBody(size_t n) = 0;
  // The upstream is behind: take no more request body for now / again.
  virtual void pauseRequestBody() = 0;
  virtual void resumeRequestBody() = 0;
  // Expect: 100-continue was asked and the request goes upstream.
  virtual void sendContinue() = 0;
  // The response head (`fields`: what goes to the client besides the
  // status and framing); returns its size for the counters.
  virtual size_t sendResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields) = 0;
  // Response body: `raw` as the upstream framed it, and its payload when
  // that framing was chunked (else `raw` is the payload). `last`: the body
  // ends here.
  virtual void sendResponseBody(std::string_view raw, const std::vector<std::string_view>* payload, bool last) = 0;
  // A whole response of the proxy's own; returns its size.
  virtual size_t sendLocalResponse(int status, std::string_view body, const http::HeaderMap* extra) = 0;
  // So many response bytes wait for the client that the upstream should
  // be read no further for now (resumed when they drain).
  virtual bool responseBacklogged() const = 0;
  // The response's trailers (an HTTP/2 upstream's, gRPC's status), before
  // its last body bytes. Default (HTTP/1.1): dropped.
  virtual void sendResponseTrailers(const http::HeaderMap& trailers) { (void)trailers; }
  // The stream is retired; `keepAlive`: its connection may carry another.
  virtual void onExchangeEnd(bool keepAlive) = 0;
  // The response cannot be finished (cutResponse): what was queued goes
  // out, then the client sees it end short of its length.
  virtual void onExchangeCut() = 0;
  // The exchange was abandoned mid-response (stream idle timeout).
  virtual void resetDownstream() = 0;
  // WebSocket (HTTP/1.1 only): the upstream answered 101; from here the
  // exchange is a tunnel of raw bytes both ways. Default: a 502, as for
  // any other switch of protocol.
  virtual void startTunnel();
  // Tunnel: the upstream's bytes go to the client.
  virtual void relayUpstream() {}

  // Parses nothing: checks a head the stream now owns (CONNECT, a bad
  // target, overload); false when it was answered here.
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
  // The response head in resp_ (either upstream protocol): retried, or
  // passed on with the route's operations. False when it was not (a retry
  // is scheduled, or the exchange is over).
  bool acceptResponseHead();
  void forwardResponseBody();
  // HTTP/2 upstream: the attempt's stream and its response body.
  void dispatchH2(const route::Endpoint& ep, EndpointState& state);
  void sendUpstreamHeadH2();
  void forwardH2ResponseBody();
  // The request went out and the upstream takes more body now.
  bool upstreamOpen() const;
  bool upstreamBacklogged() const;
  // The client took response bytes: a paused upstream is read again.
  void onDownstreamDrained();
  bool upstreamResponsePaused() const;
  void localReply(int status, std::string_view body, std::string_view flags,
                  const http::HeaderMap* extraHeaders = nullptr);
  void finishStream(bool upstreamReusable);
  void abortStream(std::string_view flags);
  // A response already under way cannot be finished: the exchange ends with
  // `flags`, the bytes already queued for the client still go out, then
  // the client sees the response cut short (onExchangeCut).
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
  void onStreamIdle();
  // PoolWaiter: the connection or slot this request waited for.
  void onPoolConnection(UpstreamConn* c) override;
  void onPoolSlot() override;
  // An attempt has its connection: count it and start its per-try timer.
  void beginAttempt();
  void logAndCount();
  void cancelTimers();
  void retireStream();

  // FilterCallbacks, for the request filters.
  Stream& stream() override { return *stream_; }
  core::Rng& rng() override;
  const core::Clock& clock() const override;
  stats::StatsShard& stats() override;
  const sockaddr_in& downstreamRemote() const override { return info_.peer; }
  istio::HeaderContext headerContext() override;
  void sendLocalReply(int status, std::string_view body, std::string_view flags,
                      const http::HeaderMap* extraHeaders) override;
  void pauseFor(uint64_t ns) override;
  bool countInRedis(std::vector<RedisClient::Increment> keys, uint64_t timeoutNs) override;
  bool hasRedis() const override;
  bool callRateLimitService(const route::Cluster& cluster, std::string_view domain,
                            const std::vector<route::Descriptor>& descriptors, uint64_t timeoutNs) override;
  // Forgets the stream's pending rate limit call (its answer is dropped).
  void cancelRateLimitCall();
  uint64_t unixSeconds() const override;
  void forwardUpstream() override;
  // RedisWaiter: the counts of the stream's global rate limit call.
  void onRedisCounts(uint64_t id, std::span<const int64_t> counts, bool ok) override;

  Worker& wk_;
  DownstreamInfo& info_;
  std::unique_ptr<Stream> stream_;  // the request in progress, if any
  UpstreamConn* up_ = nullptr;
  std::shared_ptr<H2UpstreamStream> h2up_;  // set instead of up_: the attempt is an HTTP/2 stream
  http::ResponseHead resp_;
  // The last stream's head buffers, for the next stream to fill.
  std::string spareHeadBytes_;
  std::vector<http::Header> spareHeaders_;
  bool pausedForUpstream_ = false;
  bool wokenFirst_ = false;  // re-dispatching after a pool wake: queue first again
};

// One downstream HTTP/1.1 connection, and the exchange of its current
// request: requests are handled one at a time, in order (pipelined ones
// wait in the input buffer). A connection whose first bytes are HTTP/2's
// preface (h2c with prior knowledge, or ALPN h2 on TLS) hands its bytes to
// an H2Session instead, which runs one H2Stream exchange per stream.
class DownstreamConn final : public Connection, public DownstreamInfo, public HttpExchange {
 public:
  // `orig`: the address the client dialled when the kernel captured the
  // connection (its port routes instead of the Host port; PASSTHROUGH
  // clusters connect to it), else null. `gatewayKey`: the gateway listener
  // (route::GatewayListener::key) that accepted it, whose route table its
  // requests use; 0 for the outbound listener.
  DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer, const sockaddr_in* orig = nullptr,
                 ConnectionSlot slot = {}, uint64_t gatewayKey = 0);
  ~DownstreamConn() override;
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
  // Drain: close now if idle, else after the current response (HTTP/2:
  // GOAWAY, then close once the streams in flight are done).
  void drain() override;
  void shedIfIdle() override;

  // For the H2Session this connection hands its bytes to.
  Worker& worker() { return Connection::worker_; }
  std::string& inputBuffer() { return input_; }
  void consumeInputBytes(size_t n) { consumeInput(n); }
  void requestSend() { queueSend(); }
  // HTTP/2: the idle timeout runs only while no stream is open.
  void armIdleTimer(uint64_t ns = 0);
  void cancelIdleTimer() { idleTimer_.cancel(); }

 private:
  void onData() override;
  void onPeerClosed(int err) override;
  void onDrained() override;
  void onDestroy() override;
  void onSendProgress() override;
  void beforeSend() override;

  void processInput();
  // Parses the head at the start of input_ into a new stream, routes it
  // and runs the filter chain. False when the connection is done (error
  // reply sent) or more bytes are needed.
  bool startRequest();
  // The connection's first bytes are (or may still become) HTTP/2's
  // preface: true when they are whole and the H2Session took over, or
  // when more bytes are needed to tell.
  bool maybeStartHttp2();
  // The parsed head in head_ asks for `Upgrade: h2c` and may have it (no
  // body, not over TLS, HTTP2-Settings well formed): 101, then HTTP/2 with
  // this request as stream 1. False: it goes on as HTTP/1.1.
  bool maybeUpgradeH2c();
  void onIdleTimeout();
  void onHeadersTimeout();
  void onHandshakeTimeout();

  // HttpExchange: the HTTP/1.1 codec's side.
  std::string_view protocol() const override;
  int64_t pullRequestBody(std::vector<std::string_view>& payload, bool& done) override;
  void releaseRequestBody(size_t n) override { consumeInput(n); }
  void pauseRequestBody() override { pauseReading(); }
  void resumeRequestBody() override;
  void sendContinue() override;
  size_t sendResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields) override;
  void sendResponseBody(std::string_view raw, const std::vector<std::string_view>* payload, bool last) override;
  size_t sendLocalResponse(int status, std::string_view body, const http::HeaderMap* extra) override;
  bool responseBacklogged() const override;
  void onExchangeEnd(bool keepAlive) override;
  void onExchangeCut() override;
  void resetDownstream() override { close(); }
  void startTunnel() override;
  void relayUpstream() override;

  ConnectionSlot slot_;  // this connection's unit of --max-connections
  http::RequestHead head_;     // what the parser fills (reused, keeps capacity)
  std::unique_ptr<H2Session> h2_;  // set: the connection speaks HTTP/2
  bool inProcess_ = false;
  bool firstRequest_ = true;  // nothing parsed yet: the HTTP/2 preface may come
  core::MemberTimer<DownstreamConn, &DownstreamConn::onIdleTimeout> idleTimer_{this};
  core::MemberTimer<DownstreamConn, &DownstreamConn::onHeadersTimeout> headersTimer_{this};
  core::MemberTimer<DownstreamConn, &DownstreamConn::onHandshakeTimeout> handshakeTimer_{this};
};

}  // namespace sluice::proxy
