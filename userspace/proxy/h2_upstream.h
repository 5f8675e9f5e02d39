// HTTP/2 to upstreams: a cluster whose port speaks HTTP2 or GRPC, or whose
// DestinationRule says h2UpgradePolicy UPGRADE (or useClientProtocol, for
// a client speaking HTTP/2), sends each attempt as a stream on a shared
// connection to the endpoint (nghttp2 client session; the connection is an
// OutboundConnection like every other). A connection takes new streams
// while it has room under the server's SETTINGS_MAX_CONCURRENT_STREAMS and
// the cluster's maxConcurrentStreams, has not been told GOAWAY, and has
// carried fewer than maxRequestsPerConnection; otherwise the next request
// opens another connection, within maxConnections (past it: 503 UO, no
// queue). Response bodies wait in sluiced only up to the stream window
// (256 KiB), opened again as the exchange passes the bytes on.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/header_map.h"
#include "proxy/outbound.h"
#include "upstream/circuit_breaker.h"

namespace sluice::proxy {

class H2UpstreamConn;
class TlsClientTransport;
struct EndpointState;

inline constexpr uint32_t kH2UpstreamStreamWindow = 256 * 1024;
inline constexpr uint32_t kH2UpstreamConnectionWindow = 4 * 1024 * 1024;

// Who a stream reports to: the exchange whose attempt it is (HttpExchange),
// or a mirrored copy (ShadowManager). Each call may end the owner's hold on
// the stream (cancel()); the owner is never destroyed during one.
class H2StreamOwner {
 public:
  // The connection is up (TLS included): the request can be submitted.
  virtual void onUpstreamConnected() = 0;
  virtual void onUpstreamConnectFailed(bool timedOut) = 0;
  // The connection ended under the stream.
  virtual void onUpstreamClosed(int err) = 0;
  // The request bytes written so far are all sent: more may follow.
  virtual void onUpstreamDrained() = 0;
  // The response head (`fields` views valid during the call), more body
  // (or its end), the trailers, a reset (or REFUSED_STREAM) before the end.
  virtual void onH2UpstreamHead(int status, std::vector<http::Header>& fields, bool endStream) = 0;
  virtual void onH2UpstreamData() = 0;
  virtual void onH2UpstreamTrailers(std::vector<http::Header>& fields) = 0;
  virtual void onH2UpstreamReset(uint32_t errorCode) = 0;

 protected:
  ~H2StreamOwner() = default;
};

// One attempt's stream, shared by its connection (while nghttp2 has it
// open) and the exchange (from openStream until it lets go with cancel()).
// Once closed it never touches its connection again, so an exchange may
// still read the end of a response after the connection is gone.
class H2UpstreamStream {
 public:
  H2UpstreamStream(H2UpstreamConn& conn, H2StreamOwner* owner, bool reused)
      : conn_(conn), owner_(owner), reused_(reused) {
    fieldBytes_.reserve(256);
    fields_.reserve(8);
  }
  // The connection is up and the request can be submitted.
  bool ready() const;
  bool submitted() const { return id_ > 0; }
  // The request head (names lower case, pseudo-header fields first);
  // `endStream`: no body follows. False: nghttp2 refused it.
  bool submit(const std::vector<nghttp2_nv>& head, bool endStream);
  // Request body; `end` after its last byte.
  void write(std::string_view bytes, bool end);
  size_t requestBacklog() const { return reqOut_.size() - reqOff_; }
  // Response body received and not yet taken; take() marks `n` of it
  // passed on (the window opens again).
  std::string& responseBody() { return respIn_; }
  void take(size_t n);
  bool responseEnded() const { return respEnded_; }
  // The exchange lets go: a stream not ended is reset (CANCEL).
  void cancel();
  bool reusedConnection() const { return reused_; }
  bool closed() const { return closed_; }

 private:
  friend class H2UpstreamConn;
  H2UpstreamConn& conn_;
  H2StreamOwner* owner_;
  bool reused_;
  int32_t id_ = -1;
  std::string reqOut_;
  size_t reqOff_ = 0;
  bool reqEnded_ = false;
  bool deferred_ = false;
  // Response: names and values back to back (views handed to the exchange
  // stay valid until the next block), and the body.
  std::string fieldBytes_;
  struct FieldPos {
    uint32_t name, nameLen, value, valueLen;
  };
  std::vector<FieldPos> fields_;
  int status_ = 0;
  bool headDone_ = false;
  // Where the trailers' fields start (after the head's).
  size_t trailerField_ = 0;
  std::string respIn_;
  bool respEnded_ = false;
  bool closed_ = false;
  bool live_ = true;  // counted in its connection's attached_ (open, held by an exchange)
};

class H2UpstreamConn final : public OutboundConnection {
 public:
  // `forMirrors`: it carries mirrored requests only (and the router's
  // attempts never share it), so a mirror never takes a stream or a
  // connection the primary traffic of the endpoint would need.
  H2UpstreamConn(Worker& worker, int fd, const route::Endpoint& ep, EndpointState& state,
                 upstream::LimitToken connToken, const route::UpstreamSettings& settings, bool forMirrors = false);

  void connect();
  // TCP and TLS (if any) are up.
  bool ready() const { return connected() && !tlsPending_; }
  // Room for one more stream of a cluster connecting as `s` (the same TLS
  // and keepalive) now, or once connected? `forMirrors`: for a mirror.
  bool canOpen(const route::UpstreamSettings& s, bool forMirrors = false) const;
  std::shared_ptr<H2UpstreamStream> openStream(H2StreamOwner* owner);
  // A side-channel connection (mirrors, rate limit service calls) of the
  // endpoint with room for a stream of a cluster connecting as `s`; null
  // when none has.
  static H2UpstreamConn* sideChannel(const EndpointState& state, const route::UpstreamSettings& s);
  bool reused() const { return streamsOpened_ > 1; }
  nghttp2_session* session() { return session_; }
  void wantSend() { queueSend(); }
  void forget(H2UpstreamStream* s);  // the exchange let go of `s`
  // Drain: a connection no exchange holds a stream of closes (GOAWAY
  // first); one still busy takes no new streams and closes when its last
  // one ends. Overload (`onlyIfIdle`): only an idle one closes.
  void retireWhenIdle(bool onlyIfIdle = false);

 private:
  friend class H2UpstreamStream;
  void onData() override;
  void onPeerClosed(int err) override;
  void onDestroy() override;
  void onConnected() override;
  void onConnectFailed(bool timedOut) override;
  // TLS (the cluster's trafficPolicy.tls, ALPN h2): streams start once the
  // handshake ends, within the connect timeout.
  void onTransportReady() override;
  void onHandshakeTimeout();
  // TCP (and TLS, if any) is up: the waiting streams submit their requests.
  void becomeReady();
  void beforeSend() override;
  void onDrained() override;
  void onIdleTimeout();
  // http2KeepAlive: a PING every interval (none while one is unanswered);
  // an ACK not back within the timeout closes the connection, its streams
  // failing as a connection's do.
  void onPingInterval();
  void onPingTimeout();
  void pump();
  // Every stream's exchange hears the connection is gone.
  void failAll(int err);
  void leavePool();
  void scheduleIdle();
  // The stream's exchange is gone (it let go, or was told the stream ended).
  void detachOwner(H2UpstreamStream& s);
  // The stream no longer keeps the connection busy.
  void unlive(H2UpstreamStream& s);
  // The maxConnections slot goes back before the streams' exchanges hear
  // of the end (their retries may need it); returned for slotFreed().
  std::shared_ptr<upstream::ClusterLimits> giveBackSlot();
  // GOAWAY(NO_ERROR), then close once it is sent.
  void closeGracefully();

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t flags, void* user);
  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onDataChunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data, size_t len, void* user);
  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t errorCode, void* user);
  static int onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static ssize_t readRequest(nghttp2_session*, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                             nghttp2_data_source* source, void* user);

  EndpointState& state_;
  upstream::LimitToken connToken_;
  route::UpstreamSettings settings_;
  sockaddr_in addr_;
  nghttp2_session* session_ = nullptr;
  // Streams by id once submitted; before that (the connection still
  // connecting) in `waiting_`.
  std::unordered_map<int32_t, std::shared_ptr<H2UpstreamStream>> streams_;
  std::vector<std::shared_ptr<H2UpstreamStream>> waiting_;
  uint32_t streamsOpened_ = 0;
  uint32_t attached_ = 0;  // streams an exchange still holds
  // Streams whose request body ran dry (not ended): once pump() has sent
  // what they had, their exchange hears it may send more.
  std::vector<int32_t> wantBody_;
  bool goaway_ = false;
  bool forMirrors_ = false;
  bool inRecv_ = false;
  bool pooled_ = false;  // in state_.h2
  core::MemberTimer<H2UpstreamConn, &H2UpstreamConn::onIdleTimeout> idleTimer_{this};
  core::MemberTimer<H2UpstreamConn, &H2UpstreamConn::onHandshakeTimeout> handshakeTimer_{this};
  core::MemberTimer<H2UpstreamConn, &H2UpstreamConn::onPingInterval> pingTimer_{this};
  core::MemberTimer<H2UpstreamConn, &H2UpstreamConn::onPingTimeout> pingDeadline_{this};
  bool pingOut_ = false;  // a keepalive PING awaits its ACK
  TlsClientTransport* tls_ = nullptr;  // owned by Connection
  bool tlsPending_ = false;
};

}  // namespace sluice::proxy
