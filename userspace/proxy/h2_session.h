// HTTP/2 from clients: a DownstreamConn whose first bytes are the HTTP/2
// preface (h2c with prior knowledge, or a TLS client that chose ALPN h2)
// hands its bytes to an H2Session. nghttp2 does the framing, HPACK and
// flow-control bookkeeping; the connection keeps owning the socket and its
// buffers. Each client stream is an H2Stream: an HttpExchange like the
// HTTP/1.1 one, so routing, filters, retries, timeouts, mirrors and
// counters are the same code.
//
// Bounded memory: a stream's request body waits in sluiced only up to its
// flow-control window (opened again as the upstream takes the bytes), and
// all streams of a connection share a connection window; a response body
// waits up to kH2StreamHighWater per stream before the upstream is read no
// further, and frames are pulled from nghttp2 only while the socket's send
// buffer is below kH2SendBuffer.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/h2.h"
#include "proxy/http_session.h"

namespace sluice::proxy {

class H2Session;

// What sluiced announces and enforces is in http/h2.h.
inline constexpr size_t kH2StreamHighWater = 64 * 1024;
inline constexpr size_t kH2SendBuffer = 128 * 1024;
// Rapid reset (CVE-2023-44487): once a connection has had this many streams
// reset by its client before their response was done, and those are more
// than the streams it let finish, it is sent GOAWAY and closed.
inline constexpr uint32_t kH2PrematureResetMin = 100;

class H2Stream final : public HttpExchange {
 public:
  H2Stream(H2Session& session, DownstreamInfo& info, int32_t id);
  ~H2Stream() override;
  int32_t id() const { return id_; }

  // The request head, field by field; false: the list is over the limit
  // (the stream is reset, its fields dropped).
  bool onHeader(std::string_view name, std::string_view value);
  // The head is whole: the exchange starts (routes, filters, upstream).
  // `endStream`: no body follows.
  void onHeadersEnd(bool endStream);
  void onBody(std::string_view bytes);
  void onBodyEnd();
  // nghttp2 closed the stream (sent or received END_STREAM both ways, or a
  // reset either way), or the connection went (`connectionGone`). An
  // exchange still running is abandoned (DC); a client's reset of one
  // counts toward the rapid-reset rule, whatever its error code.
  void onClosed(uint32_t errorCode, bool connectionGone = false);
  bool closed() const { return closed_; }
  // The exchange is over (nothing of it refers to this object any more).
  bool exchangeOver() const { return !stream_; }
  bool responseDone() const { return responseEnded_; }
  // nghttp2 asks for the response body.
  ssize_t readResponse(uint8_t* buf, size_t length, uint32_t* flags);
  // Response bytes went to the client: a paused upstream may be read again.
  void onResponseDrained();

 private:
  std::string_view protocol() const override { return "HTTP/2"; }
  int64_t pullRequestBody(std::vector<std::string_view>& payload, bool& done) override;
  void releaseRequestBody(size_t n) override;
  void pauseRequestBody() override {}
  void resumeRequestBody() override {}
  void sendContinue() override;
  size_t sendResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields) override;
  void sendResponseBody(std::string_view raw, const std::vector<std::string_view>* payload, bool last) override;
  size_t sendLocalResponse(int status, std::string_view body, const http::HeaderMap* extra) override;
  bool responseBacklogged() const override { return out_.size() - outOff_ > kH2StreamHighWater; }
  void sendResponseTrailers(const http::HeaderMap& trailers) override;
  // The body's end went out: END_STREAM, or the trailers carry it.
  void endData(uint32_t* flags);
  void onExchangeEnd(bool keepAlive) override;
  void onExchangeCut() override;
  void resetDownstream() override;
  // Submits the response HEADERS: `fields` (names lowercased), `endStream`
  // when no body follows. Returns the fields' size.
  size_t submitHead(int status, const http::HeaderMap& fields, const http::Framing* length, bool endStream);
  void resumeData();
  void reset(uint32_t errorCode);
  // --request-headers-timeout: a header block not finished in time ends
  // the connection (its HPACK state cannot be trusted without the rest).
  void onHeadersTimeout();
  // The exchange is over but its response is not all taken: a client that
  // takes none of it for the stream idle timeout gets the stream reset.
  void onSendIdle();

  H2Session& session_;
  int32_t id_;
  http::H2RequestHead reqHead_;  // the request head as it arrives
  std::string reqIn_;  // request body received, not yet taken upstream
  bool reqEnded_ = false;
  std::string out_;  // response body for nghttp2 to take
  size_t outOff_ = 0;
  bool outEnded_ = false;       // the body's last byte is in out_
  std::vector<std::pair<std::string, std::string>> trailers_;  // sent after the body
  bool responseEnded_ = false;  // END_STREAM submitted or in out_
  bool headSent_ = false;
  bool deferred_ = false;  // nghttp2 waits for resumeData()
  bool closed_ = false;
  bool counted_ = false;  // counted as completed or premature-reset

 public:
  // Armed by the session when the header block begins.
  core::MemberTimer<H2Stream, &H2Stream::onHeadersTimeout> headersTimer_{this};

 private:
  core::MemberTimer<H2Stream, &H2Stream::onSendIdle> sendIdleTimer_{this};
};

class H2Session {
 public:
  static constexpr std::string_view kPreface = http::H2RequestHead::kClientPreface;

  H2Session(DownstreamConn& conn, DownstreamInfo& info);
  ~H2Session();
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;

  // HTTP/1.1 `Upgrade: h2c` (RFC 7540, 3.2): `settings` is the decoded
  // HTTP2-Settings payload, and the request that asked (`head`, views valid
  // during the call; it has no body) becomes stream 1, whose answer goes
  // out over HTTP/2. False: the settings are malformed.
  bool upgrade(std::string_view settings, const http::RequestHead& head);
  // New bytes are in the connection's input buffer.
  void onData();
  // Moves frames nghttp2 has ready to the connection's send buffer.
  void pump();
  // SIGTERM: GOAWAY; streams in flight finish, then the connection closes.
  void drain();
  bool idle() const { return streams_.empty(); }
  // nghttp2 could allocate its session (else the connection closes at once).
  bool ok() const { return session_ != nullptr; }
  // The client's socket closed or failed: every exchange still running ends (DC).
  void onPeerClosed(int err);
  // The connection is being destroyed.
  void onConnectionGone();
  // The client's idle timeout passed with no stream open: GOAWAY, then the
  // connection closes.
  void onIdle();
  // A header block was not finished within --request-headers-timeout.
  void onHeadersTimeout();

  // For its streams.
  nghttp2_session* session() { return session_; }
  Worker& worker();
  void wantSend();
  void resumeLater(H2Stream* s) { resume_.push_back(s->id()); }
  // A stream's exchange ended: `completed` (its response went out whole)
  // or reset by the client before that; counts toward the rapid-reset rule.
  void noteStreamEnd(bool completed);

 private:
  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t flags, void* user);
  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onDataChunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data, size_t len, void* user);
  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t errorCode, void* user);
  static int onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int error, void* user);
  H2Stream* find(int32_t id);
  // A fatal session error: counted by kind, then the connection closes
  // after what is queued (a GOAWAY nghttp2 wrote) goes out.
  void fail(ssize_t err);
  // The session is ending: the frames nghttp2 still has (its GOAWAY) are
  // written, bounded.
  void flushLastFrames();
  void reap();
  // The connection has no stream: its idle timeout runs (else it does not).
  void updateIdle();
  void closeIfDone();

  DownstreamConn& conn_;
  DownstreamInfo& info_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<H2Stream>> streams_;
  // Streams nghttp2 closed, freed once no nghttp2 call is on the stack.
  std::vector<std::unique_ptr<H2Stream>> dead_;
  std::vector<int32_t> resume_;  // streams whose response drained below the high water
  bool inRecv_ = false;
  bool pumping_ = false;
  bool failed_ = false;
  bool goaway_ = false;  // GOAWAY submitted: no new streams
  bool idleClosing_ = false;  // the idle timeout sent GOAWAY
  uint32_t completed_ = 0;
  uint32_t premature_ = 0;
};

}  // namespace sluice::proxy
