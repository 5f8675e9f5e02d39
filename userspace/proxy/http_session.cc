// DownstreamConn: the connection (timeouts, draining, the client's close),
// reading requests off it into streams, routing them and running the
// request filters. The upstream side is in session_upstream.cc, the
// response side in session_response.cc, failures in session_failures.cc.
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
#include "proxy/stream.h"
#include "proxy/request_util.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;


// -------------------------------------------------------------- downstream

DownstreamConn::DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer,
                               const sockaddr_in* orig, ConnectionSlot slot, uint64_t gatewayKey)
    : Connection(worker, fd), slot_(std::move(slot)), peer_(peer), origPort_(orig ? ntohs(orig->sin_port) : 0),
      gatewayKey_(gatewayKey) {
  if (orig) orig_ = *orig;
  worker_.stats().inc(Counter::DownstreamCxTotal);
  worker_.stats().inc(Counter::DownstreamCxActive);
  worker_.addDownstream(this);
}

bool DownstreamConn::useTls(const route::GatewayTlsServer& server, std::shared_ptr<const tls::ServerContext> ctx,
                            std::string sni, std::string peer, std::string_view hello, uint64_t deadlineNs) {
  tlsServerIdentity_ = server.credentials.get();
  auto t = std::make_unique<TlsServerTransport>(worker_, std::move(ctx), std::move(sni), std::move(peer));
  tls_ = t.get();
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
  if (!tls_ || tls_->established() || closing()) return;
  tls_->noteHandshakeTimeout();
  close();
}

void DownstreamConn::start() {
  startReading();
  worker_.timers().schedule(idleTimer_, worker_.engine().options().idleTimeoutNs);
}

void DownstreamConn::drain() {
  draining_ = true;
  if (!stream_ && input_.empty()) close();
}

void DownstreamConn::shedIfIdle() {
  if (stream_ || !input_.empty() || closing()) return;
  worker_.stats().inc(Counter::DownstreamCxOverloadShed);
  close();
}

void DownstreamConn::onDestroy() {
  if (stream_) abortStream("DC");
  worker_.stats().dec(Counter::DownstreamCxActive);
  worker_.removeDownstream(this);
}

void DownstreamConn::onIdleTimeout() {
  if (!stream_) close();
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
  if (stream_) touchStream();
  processInput();
}

void DownstreamConn::onSendProgress() {
  if (stream_) touchStream();
}

void DownstreamConn::touchStream() {
  if (stream_) worker_.timers().schedule(stream_->idleTimer, worker_.engine().options().streamIdleTimeoutNs);
}

void DownstreamConn::onStreamIdle() {
  if (!stream_) return;
  worker_.stats().inc(Counter::DownstreamRqIdleTimeout);
  if (!stream_->respHeadDone && !stream_->respStarted) {
    // As Envoy: 408 while no response head has arrived, a reset after.
    releaseUpstream(false);
    stream_->keepAlive = false;
    localReply(408, "stream timeout", "SI");
    return;
  }
  abortStream("SI");
  close();
}

void DownstreamConn::onPeerClosed(int err) {
  // The client went away (a FIN or a reset: a half-close cannot be told
  // from a close, and Envoy and nginx treat both as the end): whatever is in
  // flight is cancelled at once, Envoy's "downstream connection
  // termination" (DC). Its upstream connection is closed, not pooled;
  // mirrors that have their whole request finish on their own.
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
  if (up_ && up_->readingPaused() && stream_ && stream_->respHeadDone) {
    up_->startReading();
    if (stream_->tunnel) {
      relayUpstream();
    } else {
      forwardResponseBody();
    }
  }
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
    if (!stream_->reqDone && up_ && up_->connected() && stream_->upstreamSentNs) forwardRequestBody();
    // Bound what pipelined clients can make us hold.
    if (stream_ && input_.size() > kMaxBufferedInput) pauseReading();
    return;
  }
}

bool DownstreamConn::startRequest() {
  http::ParseError err;
  head_.headers.clear();
  http::ParseStatus st = http::parseRequestHead(input_.data(), input_.size(), limits_, head_, err);
  if (st == http::ParseStatus::Incomplete) {
    // The clock starts at the head's first byte (Envoy's rule), so an idle
    // keep-alive connection is the idle timeout's business, not this one's.
    const uint64_t limit = worker_.engine().options().requestHeadersTimeoutNs;
    if (limit && !headersTimer_.armed()) worker_.timers().schedule(headersTimer_, limit);
    return false;
  }
  headersTimer_.cancel();
  idleTimer_.cancel();
  stream_ = std::make_unique<Stream>(this);
  Stream& s = *stream_;
  s.startNs = worker_.clock().nowNs();
  if (gatewayKey_) s.forwardedProto = tls_ ? "https" : "http";
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

bool DownstreamConn::acceptHead() {
  Stream& s = *stream_;
  const http::RequestHead& head = s.head;
  s.isHead = head.method == "HEAD";
  s.http10 = head.versionMinor == 0;
  s.keepAlive = head.keepAlive;
  s.websocket = wantsWebSocket(head, s.headers);
  s.reqBody.reset(head.framing);
  s.reqDone = head.framing.kind == http::Framing::Kind::None ||
              (head.framing.kind == http::Framing::Kind::ContentLength && head.framing.length == 0);
  s.expectContinue = head.expectContinue;
  if (worker_.engine().overloaded()) {
    // Envoy's overload manager: new work is refused while memory is short.
    worker_.stats().inc(Counter::DownstreamRqOverload);
    s.keepAlive = false;
    http::HeaderMap extra;
    extra.add("x-envoy-overloaded", "true");
    localReply(503, "envoy overloaded", "OM", &extra);
    return false;
  }
  if (head.method == "CONNECT") {
    // Nothing is tunnelled: what follows the head is not HTTP, so the
    // connection ends with the answer, whatever bytes came with it.
    s.keepAlive = false;
    localReply(501, "CONNECT is not supported", "DPE");
    return false;
  }
  if (!splitTarget(head.target, head.host, s.target)) {
    s.keepAlive = s.keepAlive && s.reqDone;
    localReply(400, "invalid request target", "DPE");
    return false;
  }
  const http::HeaderMap::Field* rid = s.headers.find("x-request-id");
  if (rid && !rid->value.empty()) {
    s.requestId = rid->value;
  } else {
    newRequestId(worker_.rng(), s.requestIdStorage);
    s.requestId = std::string_view(s.requestIdStorage, sizeof(s.requestIdStorage));
  }
  return true;
}

const route::VirtualHost* DownstreamConn::findVirtualHost() {
  Stream& s = *stream_;
  if (!s.snapshot) return nullptr;
  if (gatewayKey_) {
    // The server's port, not the one listened on (--gateway-port-offset):
    // match blocks and redirects name the server's.
    const route::GatewayListener* l = s.snapshot->findGatewayListener(gatewayKey_);
    if (!l) return nullptr;  // the listener left the configuration
    s.port = l->port;
    if (!l->tls()) return l->routes.find(lowerHost(s.target.host));
    // HTTPS: the table of the server the ClientHello chose (chosen again
    // under this snapshot, by the same SNI).
    const route::GatewayTlsServer* server = tls_ ? l->selectServer(tls_->serverName()) : nullptr;
    if (!server || server->credentials.get() != tlsServerIdentity_) {
      // The configuration moved this SNI to another server (or changed its
      // TLS): not answered under terms the handshake did not agree to. The
      // connection closes; the client's next one handshakes anew.
      s.keepAlive = false;
      return nullptr;
    }
    return server->routes.find(lowerHost(s.target.host));
  }
  // The original destination (eBPF capture) outranks the Host/URI port.
  s.port = origPort_ ? origPort_ : s.target.port;
  return s.snapshot->findVirtualHost(s.port, lowerHost(s.target.host), &s.port);
}

bool DownstreamConn::resolveRoute() {
  Stream& s = *stream_;
  s.snapshot = worker_.snapshot();
  // Virtual host, then the first route whose match blocks accept the request.
  const route::VirtualHost* vh = findVirtualHost();
  if (vh && vh->httpsRedirect) {
    // Gateway server tls.httpsRedirect: the same URL over https.
    route::Redirect toHttps;
    toHttps.scheme = "https";
    toHttps.derivePort = route::Redirect::DerivePort::FromProtocolDefault;
    std::string location = redirectLocation(toHttps, s.target, s.port);
    if (!http::wireError(http::WireField::HeaderValue, location).empty()) {
      s.keepAlive = false;
      sendLocalReply(400, "invalid redirect target", "DPE", nullptr);
    } else {
      http::HeaderMap extra;
      extra.add("location", location);
      sendLocalReply(301, "", "-", &extra);
    }
    return false;
  }
  route::RequestView view;
  view.method = s.head.method;
  view.path = s.target.path;
  view.authority = s.target.authority;
  view.port = s.port;
  view.headers = &s.headers;
  if (vh) s.route = vh->match(view, &s.matched);
  if (!s.route) {
    worker_.stats().inc(Counter::NoRoute);
    if (!s.reqDone) s.keepAlive = false;
    localReply(404, "", "NR");
    return false;
  }
  const route::Route& route = *s.route;
  // sluice.io/sticky-weighted-split: the destination's consistent-hash key
  // also makes the weighted choice, so one user stays on one side of a
  // canary while the split still holds across users. The key is mixed once
  // more so the split and the ring position inside the subset stay
  // independent.
  const route::HashPolicy* stickyHash = nullptr;
  if (route.stickySplit) {
    for (const route::WeightedCluster& w : route.clusters) {
      if (w.cluster && w.cluster->hash) {
        stickyHash = &*w.cluster->hash;
        break;
      }
    }
    if (stickyHash) computeHashKey(*stickyHash, s.target.path);
  }
  s.wc = route.pick(s.hasHashKey ? upstream::hashKey(std::string_view(
                                       reinterpret_cast<const char*>(&s.hashKey), sizeof(s.hashKey)))
                                 : worker_.rng().next());
  s.cluster = s.wc ? s.wc->cluster : nullptr;
  if (s.cluster && s.cluster->hash && !stickyHash) computeHashKey(*s.cluster->hash, s.target.path);
  return true;
}

void DownstreamConn::runFilters() {
  const std::span<const RequestFilter* const> chain = requestFilters();
  while (stream_ && stream_->filterIndex < chain.size()) {
    if (chain[stream_->filterIndex]->onRequestHead(*this) == FilterStatus::Stop) return;
    ++stream_->filterIndex;
  }
}

void DownstreamConn::onFilterResume() {
  if (!stream_) return;
  const std::span<const RequestFilter* const> chain = requestFilters();
  if (chain[stream_->filterIndex]->onResume(*this) == FilterStatus::Stop) return;
  ++stream_->filterIndex;
  runFilters();
}

core::Rng& DownstreamConn::rng() { return worker_.rng(); }
const core::Clock& DownstreamConn::clock() const { return worker_.clock(); }
stats::StatsShard& DownstreamConn::stats() { return worker_.stats(); }

void DownstreamConn::pauseFor(uint64_t ns) { worker_.timers().schedule(stream_->resumeTimer, ns); }

void DownstreamConn::sendLocalReply(int status, std::string_view body, std::string_view flags,
                                    const http::HeaderMap* extraHeaders) {
  // The body was not read: the connection cannot carry another request.
  if (!stream_->reqDone) stream_->keepAlive = false;
  localReply(status, body, flags, extraHeaders);
}

void DownstreamConn::forwardUpstream() {
  Stream& s = *stream_;
  if (!s.cluster || s.cluster->missing || s.cluster->endpoints.empty()) {
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!s.reqDone) s.keepAlive = false;
    localReply(503, "no healthy upstream", s.cluster && !s.cluster->missing ? "UH" : "NC");
    return;
  }
  s.limits = worker_.clusters().limitsFor(*s.cluster);
  if (auto t = upstream::acquire(s.limits, upstream::ClusterLimits::kRequests)) {
    s.requestToken = std::move(*t);
  } else {
    overflow(false);
    return;
  }
  if (s.expectContinue) write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
  if (!s.pendingShadows.empty()) startShadows();
  if (s.reqDone) onRequestComplete();
  dispatch();
}

}  // namespace sluice::proxy
