// DownstreamConn: an HTTP/1.1 client connection (timeouts, draining, the
// client's close), reading requests off it into streams, the HTTP/1.1
// codec's side of HttpExchange, WebSocket tunnels, and the switch to
// HTTP/2 when the first bytes are its preface (h2_session.cc). The
// exchange itself: routing and filters in session_request.cc, the
// upstream side in session_upstream.cc, the response side in
// session_response.cc, failures in session_failures.cc.
#include "proxy/http_session.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <optional>
#include <cstring>

#include "http/wire.h"
#include "proxy/engine.h"
#include "proxy/h2_session.h"
#include "proxy/stream.h"
#include "proxy/request_util.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;


DownstreamConn::DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer, const sockaddr_in* orig,
                               ConnectionSlot slot, uint64_t gatewayKey)
    : Connection(worker, fd),
      DownstreamInfo(peer, orig, gatewayKey),
      HttpExchange(worker, static_cast<DownstreamInfo&>(*this)),
      slot_(std::move(slot)) {
  DownstreamInfo::fd = fd;
  worker_.stats().inc(Counter::DownstreamCxTotal);
  worker_.stats().inc(Counter::DownstreamCxActive);
  worker_.addDownstream(this);
}

DownstreamConn::~DownstreamConn() = default;

bool DownstreamConn::useTls(const route::GatewayTlsServer& server, std::shared_ptr<const tls::ServerContext> ctx,
                            std::string sni, std::string peer, std::string_view hello, uint64_t deadlineNs) {
  tlsServerIdentity = server.credentials.get();
  auto t = std::make_unique<TlsServerTransport>(worker_, std::move(ctx), std::move(sni), std::move(peer));
  tls = t.get();
  setTransport(std::move(t));
  if (!injectReceived(hello)) {
    closeAfterFlush();
    return false;
  }
  if (deadlineNs) {
    const uint64_t now = worker_.clock().nowNs();
    worker_.timers().schedule(handshakeTimer_, deadlineNs > now ? deadlineNs - now : 1);
  }
  return true;
}

void DownstreamConn::onHandshakeTimeout() {
  if (!tls || tls->established() || closing()) return;
  tls->noteHandshakeTimeout();
  close();
}

void DownstreamConn::start() {
  startReading();
  worker_.timers().schedule(idleTimer_, worker_.engine().options().idleTimeoutNs);
}

void DownstreamConn::drain() {
  draining = true;
  if (h2_) {
    h2_->drain();
    return;
  }
  if (!stream_ && input_.empty()) close();
}

void DownstreamConn::shedIfIdle() {
  if (h2_) {
    if (!h2_->idle() || closing()) return;
  } else if (stream_ || !input_.empty() || closing()) {
    return;
  }
  worker_.stats().inc(Counter::DownstreamCxOverloadShed);
  close();
}

void DownstreamConn::onDestroy() {
  if (stream_) abortStream("DC");
  if (h2_) h2_->onConnectionGone();
  worker_.stats().dec(Counter::DownstreamCxActive);
  worker_.removeDownstream(this);
}

void DownstreamConn::onIdleTimeout() {
  if (h2_) {
    h2_->onIdle();  // armed only while no stream is open
    return;
  }
  if (!stream_) close();
}

void DownstreamConn::armIdleTimer(uint64_t ns) {
  worker_.timers().schedule(idleTimer_, ns ? ns : worker_.engine().options().idleTimeoutNs);
}

void DownstreamConn::onHeadersTimeout() {
  if (stream_ || closing()) return;
  worker_.stats().inc(Counter::DownstreamRqHeaderTimeout);
  pauseReading();
  input_.clear();
  write(buildLocalReply(408, "request headers timeout", /*close=*/true, /*isHead=*/false, {}));
  closeAfterFlush();
}

void DownstreamConn::onData() {
  if (h2_) {
    h2_->onData();
    return;
  }
  if (stream_) touchStream();
  processInput();
}

void DownstreamConn::onSendProgress() {
  if (stream_) touchStream();
}

void DownstreamConn::beforeSend() {
  if (h2_) h2_->pump();
}

void DownstreamConn::onPeerClosed(int err) {
  // The client went away (a FIN or a reset: a half-close cannot be told
  // from a close, and Envoy and nginx treat both as the end): whatever is in
  // flight is cancelled at once, Envoy's "downstream connection
  // termination" (DC). Its upstream connection is closed, not pooled;
  // mirrors that have their whole request finish on their own.
  if (h2_) {
    h2_->onPeerClosed(err);
    if (err == 0 || err == -EPROTO) {
      closeAfterFlush();
    } else {
      close();
    }
    return;
  }
  if (stream_ && stream_->tunnel && err == 0) {
    finishStream(false);  // the client ended a WebSocket conversation: a normal end
  } else if (stream_) {
    worker_.stats().inc(Counter::DownstreamCxDestroyRemoteActiveRq);
    abortStream("DC");
  }
  if (err == 0 || err == -EPROTO) {
    // A local reply (e.g. 400), or a TLS alert, may still be queued.
    closeAfterFlush();
  } else {
    close();
  }
}

void DownstreamConn::onDrained() {
  if (h2_) {
    h2_->pump();
    return;
  }
  onDownstreamDrained();
}

void DownstreamConn::processInput() {
  if (inProcess_) return;  // the running loop below picks up new work
  inProcess_ = true;
  struct Guard {
    bool& flag;
    ~Guard() { flag = false; }
  } guard{inProcess_};
  while (!closing()) {
    if (!stream_) {
      if (input_.empty()) return;
      if (firstRequest_ && maybeStartHttp2()) return;
      firstRequest_ = false;
      if (!startRequest()) return;
      continue;  // a local reply may have finished the exchange already
    }
    if (stream_->tunnel) {
      if (!input_.empty() && up_) {
        touchStream();
        up_->write(std::string_view(input_));
        consumeInput(input_.size());
        if (up_->unsentBytes() > kHighWater) {
          pausedForUpstream_ = true;
          pauseReading();
        }
      }
      return;
    }
    if (!stream_->reqDone && upstreamOpen() && stream_->upstreamSentNs) forwardRequestBody();
    // Bound what pipelined clients can make us hold.
    if (stream_ && input_.size() > kMaxBufferedInput) pauseReading();
    return;
  }
}

bool DownstreamConn::startRequest() {
  http::ParseError err;
  head_.headers.clear();
  http::ParseStatus st = http::parseRequestHead(input_.data(), input_.size(), limits, head_, err);
  if (st == http::ParseStatus::Incomplete) {
    // The clock starts at the head's first byte (Envoy's rule), so an idle
    // keep-alive connection is the idle timeout's business, not this one's.
    const uint64_t limit = worker_.engine().options().requestHeadersTimeoutNs;
    if (limit && !headersTimer_.armed()) worker_.timers().schedule(headersTimer_, limit);
    return false;
  }
  headersTimer_.cancel();
  idleTimer_.cancel();
  if (st == http::ParseStatus::Complete && head_.upgrade && maybeUpgradeH2c()) return false;
  stream_ = std::make_unique<Stream>(this);
  Stream& s = *stream_;
  s.startNs = worker_.clock().nowNs();
  if (gatewayKey) s.forwardedProto = tls ? "https" : "http";
  touchStream();
  worker_.stats().inc(Counter::DownstreamRqTotal);
  if (st == http::ParseStatus::Error) {
    worker_.stats().inc(Counter::DownstreamRqBad);
    s.keepAlive = false;
    s.reqDone = true;
    input_.clear();
    localReply(err.status, err.reason, "DPE");
    return false;
  }
  // The head's bytes and header list reuse the previous request's buffers.
  s.headBytes.swap(spareHeadBytes_);
  s.head.headers.swap(spareHeaders_);
  s.adoptHead(head_, input_.data());
  consumeInput(head_.headBytes);
  if (!acceptHead() || !resolveRoute()) return !closing();
  runFilters();
  return !closing();
}

bool DownstreamConn::maybeStartHttp2() {
  const std::string_view preface = H2Session::kPreface;
  const size_t n = std::min(input_.size(), preface.size());
  if (std::string_view(input_).substr(0, n) != preface.substr(0, n)) return false;
  if (n < preface.size()) {
    // Not enough to tell yet; a client that stops here is the headers
    // timeout's business, as any partial head.
    const uint64_t limit = worker_.engine().options().requestHeadersTimeoutNs;
    if (limit && !headersTimer_.armed()) worker_.timers().schedule(headersTimer_, limit);
    return true;
  }
  headersTimer_.cancel();
  firstRequest_ = false;
  h2_ = std::make_unique<H2Session>(*this, static_cast<DownstreamInfo&>(*this));
  if (!h2_->ok()) {
    close();
    return true;
  }
  h2_->onData();
  return true;
}

namespace {
// RFC 4648 base64url, padding optional (HTTP2-Settings); false on any other byte.
bool base64UrlDecode(std::string_view in, std::string& out) {
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else if (c == '=') break;
    else return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return true;
}
}  // namespace

bool DownstreamConn::maybeUpgradeH2c() {
  if (tls || h2_ || head_.framing.kind != http::Framing::Kind::None) return false;
  const http::Header* upgrade = head_.find("upgrade");
  const http::Header* settingsField = head_.find("http2-settings");
  if (!upgrade || !settingsField || !http::headerHasToken(upgrade->value, "h2c")) return false;
  std::string settings;
  if (!base64UrlDecode(settingsField->value, settings) || settings.size() % 6 != 0) return false;
  write(std::string_view("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"));
  h2_ = std::make_unique<H2Session>(*this, static_cast<DownstreamInfo&>(*this));
  // The stream copies the head's fields before its bytes go.
  if (!h2_->ok() || !h2_->upgrade(settings, head_)) {
    close();
    return true;
  }
  consumeInput(head_.headBytes);
  h2_->onData();  // the client's preface, if it came already
  return true;
}

// ------------------------------------------------- the HTTP/1.1 codec's side

std::string_view DownstreamConn::protocol() const { return stream_ && stream_->http10 ? "HTTP/1.0" : "HTTP/1.1"; }

int64_t DownstreamConn::pullRequestBody(std::vector<std::string_view>& payload, bool& done) {
  Stream& s = *stream_;
  if (input_.empty()) return 0;
  const bool chunked = s.reqBody.framing().kind == http::Framing::Kind::Chunked;
  http::BodyFramer::Step step = s.reqBody.consume(input_.data(), input_.size(), chunked ? &payload : nullptr);
  if (step.status == http::BodyFramer::Status::Error) {
    input_.clear();
    return -1;
  }
  done = step.status == http::BodyFramer::Status::Done;
  if (!chunked && step.consumed > 0) payload.emplace_back(input_.data(), step.consumed);
  return int64_t(step.consumed);
}

bool DownstreamConn::responseBacklogged() const { return unsentBytes() > kHighWater; }

void DownstreamConn::resumeRequestBody() {
  if (!closing() && readingPaused()) startReading();
  if (stream_ && stream_->tunnel) processInput();
}

void DownstreamConn::sendContinue() { write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n")); }

size_t DownstreamConn::sendResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields) {
  const Stream& s = *stream_;
  std::string head = http1ResponseHead(resp, fields, s.closeAfter, s.http10, s.dechunk);
  const size_t n = head.size();
  write(std::move(head));
  return n;
}

void DownstreamConn::sendResponseBody(std::string_view raw, const std::vector<std::string_view>* payload,
                                      bool last) {
  const Stream& s = *stream_;
  if (s.dechunk) {
    // An HTTP/1.0 client: the payload as it is, ended by the close.
    for (std::string_view p : *payload) write(p);
  } else if (payload) {
    std::string encoded;
    appendChunks(*payload, last, encoded);
    if (!encoded.empty()) write(std::move(encoded));
  } else if (!raw.empty()) {
    write(raw);
  }
}

size_t DownstreamConn::sendLocalResponse(int status, std::string_view body, const http::HeaderMap* extra) {
  const Stream& s = *stream_;
  std::string out = buildLocalReply(status, body, s.closeAfter, s.isHead, extra);
  const size_t n = out.size();
  write(std::move(out));
  return n;
}

void DownstreamConn::onExchangeEnd(bool keepAlive) {
  if (!keepAlive) {
    closeAfterFlush();
    return;
  }
  worker_.timers().schedule(idleTimer_, worker_.engine().options().idleTimeoutNs);
  if (readingPaused() && !pausedForUpstream_) startReading();
  // Pipelined requests already buffered are picked up by processInput's loop
  // when we were called from it, or here when called from an upstream event.
  if (!input_.empty()) processInput();
}

void DownstreamConn::onExchangeCut() {
  // The bytes already queued (earlier pipelined answers, this one's head
  // and body so far) still go out, then the connection closes; a client
  // that stopped reading gets kCutFlushNs to take them.
  const bool flushing = unsentBytes() > 0;
  closeAfterFlush();  // closes now when nothing is queued
  if (flushing) worker_.timers().schedule(idleTimer_, kCutFlushNs);  // fires close(): no exchange left
}

// ------------------------------------------------------- WebSocket tunnels

void DownstreamConn::startTunnel() {
  Stream& s = *stream_;
  // The route and per-try timeouts bound the wait for the upgrade, not the
  // conversation that follows (as Envoy); the stream idle timeout goes on.
  stream_->routeTimer.cancel();
  stream_->perTryTimer.cancel();
  reportOutcome(upstream::Outcome::Success);
  s.respHeadDone = s.respStarted = s.tunnel = true;
  s.status = 101;
  s.keepAlive = false;  // the connection ends with the tunnel
  s.serviceTimeMs = (worker_.clock().nowNs() - s.upstreamSentNs) / 1'000'000;
  const std::string serviceTime = std::to_string(s.serviceTimeMs);
  http::HeaderMap respHeaders(std::move(resp_.headers));
  std::string head = buildDownstreamHead(resp_, respHeaders, serviceTime, /*close=*/false, /*http10=*/false,
                                         /*dechunk=*/false);
  resp_.headers = respHeaders.takeFields();
  head.insert(head.size() - 2, "upgrade: websocket\r\nconnection: upgrade\r\n");
  up_->consume(resp_.headBytes);
  s.respBytes += head.size();
  write(std::move(head));
  relayUpstream();     // bytes the upstream sent right after its 101
  if (stream_ && stream_->tunnel) processInput();  // and the client's, if it did not wait
}

void DownstreamConn::relayUpstream() {
  std::string& in = up_->input();
  if (!in.empty()) {
    stream_->respBytes += in.size();
    write(std::string_view(in));
    up_->consume(in.size());
  }
  if (unsentBytes() > kHighWater) up_->pauseReading();
}

}  // namespace sluice::proxy
