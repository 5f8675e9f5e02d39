// DownstreamConn, the upstream side of a request: the route and per-try
// timers, choosing an endpoint and a connection (or waiting in the pool),
// sending the head and streaming the body, and the WebSocket tunnel.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

#include "http/h2.h"
#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/http_session.h"
#include "proxy/request_util.h"
#include "proxy/stream.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

void HttpExchange::onRequestComplete() {
  Stream& s = *stream_;
  // Envoy's route timeout runs from the end of the request to the end of
  // the response; the per-try timeout from the start of each attempt (or
  // the end of the request, whichever is later).
  uint64_t timeoutNs = s.route->timeout && s.route->timeout->count() > 0 ? uint64_t(s.route->timeout->count()) : 0;
  if (s.grpc) {
    // As Istio sets Envoy's max_grpc_timeout to the route timeout: a gRPC
    // call's grpc-timeout applies, capped by the route's when it has one.
    if (const http::HeaderMap::Field* t = s.headers.find("grpc-timeout")) {
      if (std::optional<uint64_t> g = http::parseGrpcTimeout(t->value))
        timeoutNs = timeoutNs ? std::min(timeoutNs, std::max<uint64_t>(*g, 1)) : std::max<uint64_t>(*g, 1);
    }
  }
  if (timeoutNs && !stream_->routeTimer.armed()) wk_.timers().schedule(stream_->routeTimer, timeoutNs);
  if (s.route->retry.perTryTimeoutNs && (s.ep || up_) && !stream_->perTryTimer.armed())
    wk_.timers().schedule(stream_->perTryTimer, s.route->retry.perTryTimeoutNs);
}

void HttpExchange::dispatch() {
  Stream& s = *stream_;
  // A request woken from the pool picks afresh: its last pick was never tried.
  int avoid = s.route->retry.ignorePreviousHosts && !wokenFirst_ ? s.endpoint : -1;
  s.attemptWrote = false;
  s.respHeadDone = false;
  // PASSTHROUGH with a captured connection: no balancing, the address the
  // client dialled is the endpoint.
  route::Endpoint passthrough;
  const bool toOriginal = s.cluster->lb == route::LbPolicy::Passthrough && info_.orig.sin_port != 0;
  if (toOriginal) {
    char ip[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &info_.orig.sin_addr, ip, sizeof(ip));
    passthrough.address = ip;
    passthrough.port = ntohs(info_.orig.sin_port);
    passthrough.sockaddr = info_.orig;
    passthrough.key = passthrough.address + ":" + std::to_string(passthrough.port);
    s.endpoint = -1;
  } else {
    upstream::PickContext pick;
    pick.hashKey = s.hasHashKey ? &s.hashKey : nullptr;
    pick.avoid = avoid;
    pick.tried = s.triedMask;
    s.endpoint = wk_.pickEndpoint(*s.cluster, pick);
    if (s.endpoint >= 0 && s.endpoint < 64) s.triedMask |= uint64_t(1) << s.endpoint;
  }
  if (!toOriginal && s.endpoint < 0) {  // every host ejected, and no panic threshold
    wk_.stats().inc(Counter::NoHealthyUpstream);
    if (!s.reqDone) s.keepAlive = false;
    localReply(503, "no healthy upstream", "UH");
    return;
  }
  if (!s.health) s.health = wk_.clusters().healthFor(*s.cluster);
  const route::Endpoint& ep = toOriginal ? passthrough : s.cluster->endpoints[size_t(s.endpoint)];
  EndpointState& state = wk_.endpointState(ep);
  s.upstreamHost = ep.key;
  s.upstreamAddr = ep.sockaddr;
  if (s.upstreamH2) {
    dispatchH2(ep, state);
    return;
  }
  PoolResult r = wk_.pool().newStream(*this, ep, state, *s.cluster, s.limits, s.pendingToken, wokenFirst_);
  switch (r.kind) {
    case PoolResult::Kind::Ready:
    case PoolResult::Kind::Connecting:
      s.ep = &state;
      up_ = r.conn;
      up_->attach(this);
      beginAttempt();
      if (r.kind == PoolResult::Kind::Ready) {
        sendUpstreamHead();
      } else {
        up_->connect();
      }
      return;
    case PoolResult::Kind::Queued:
      return;  // onPoolConnection or onPoolSlot follows
    case PoolResult::Kind::Overflow:
      overflow(false);
      return;
    case PoolResult::Kind::NoSocket:
      failAttempt(route::AttemptFailure::ConnectFailure, 503,
                  "upstream connect error or disconnect/reset before headers. reset reason: local socket error",
                  "UF");
      return;
  }
}

void HttpExchange::beginAttempt() {
  Stream& s = *stream_;
  s.pendingToken.reset();
  s.ep->incActive();
  wk_.stats().inc(Counter::UpstreamRqTotal);
  if (s.reqDone && s.route->retry.perTryTimeoutNs)
    wk_.timers().schedule(stream_->perTryTimer, s.route->retry.perTryTimeoutNs);
}

void HttpExchange::onUpstreamConnected() {
  if (stream_) sendUpstreamHead();
}

void HttpExchange::dispatchH2(const route::Endpoint& ep, EndpointState& state) {
  Stream& s = *stream_;
  H2UpstreamConn* conn = nullptr;
  for (H2UpstreamConn* c : state.h2) {
    if (c->canOpen(s.cluster->upstream)) {
      conn = c;
      break;
    }
  }
  bool fresh = false;
  if (!conn) {
    auto slot = upstream::acquire(s.limits, upstream::ClusterLimits::kConnections);
    if (!slot) {
      // maxConnections, every connection at its stream limit: no queue for
      // HTTP/2 streams, the request overflows at once.
      if (s.limits) s.limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
      wk_.stats().inc(Counter::UpstreamCxOverflow);
      overflow(false);
      return;
    }
    const int fd = OutboundConnection::openSocket(s.cluster->upstream);
    if (fd < 0) {
      if (s.limits) {
        slot->reset();
        wk_.pool().slotFreed(s.limits);
      }
      failAttempt(route::AttemptFailure::ConnectFailure, 503,
                  "upstream connect error or disconnect/reset before headers. reset reason: local socket error",
                  "UF");
      return;
    }
    conn = new H2UpstreamConn(wk_, fd, ep, state, std::move(*slot), s.cluster->upstream);
    fresh = true;
  }
  s.ep = &state;
  h2up_ = conn->openStream(this);
  beginAttempt();
  if (fresh) {
    conn->connect();
  } else if (conn->ready()) {
    sendUpstreamHead();
  }  // else the connection is still connecting (or handshaking): onUpstreamConnected follows
}

void HttpExchange::sendUpstreamHeadH2() {
  Stream& s = *stream_;
  // The head the router built, with this attempt's count, read back as
  // fields: the same operations and rewrites as for HTTP/1.1.
  thread_local std::string text;
  thread_local http::H2RequestFields fields;
  text.assign(s.upstreamHead);
  text.append("x-envoy-attempt-count: ").append(std::to_string(s.retry ? s.retry->attempt() : 1u)).append("\r\n\r\n");
  // gRPC servers insist on TE: trailers, a hop-by-hop field the client
  // sent for this very hop.
  const http::HeaderMap::Field* te = s.headers.find("te");
  if (!fields.build(text, s.cluster->upstream.tls ? "https" : "http",
                    te && http::headerHasToken(te->value, "trailers"))) {
    // Not expected: sluiced wrote this head. Fail the attempt, not the process.
    localReply(500, "internal error building the upstream request", "-");
    return;
  }
  const bool noBody = s.head.framing.kind == http::Framing::Kind::None;
  if (!h2up_->submit(fields.fields(), noBody)) {
    std::shared_ptr<H2UpstreamStream> failed = std::move(h2up_);
    failed->cancel();
    if (s.ep) {
      s.ep->decActive();
      s.ep = nullptr;
    }
    failAttempt(route::AttemptFailure::ResetBeforeRequest, 503,
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error", "UF");
    return;
  }
  s.upstreamSentNs = wk_.clock().nowNs();
  s.attemptWrote = true;
  if (!noBody && (s.reqBodySent > 0 || s.reqDone)) h2up_->write(s.replay, s.reqDone);
  forwardRequestBody();
  if (stream_ && !stream_->reqDone && !pausedForUpstream_) resumeRequestBody();
}

bool HttpExchange::upstreamOpen() const {
  if (up_) return up_->connected();
  return h2up_ && h2up_->submitted() && !h2up_->closed();
}

bool HttpExchange::upstreamBacklogged() const {
  if (up_) return up_->unsentBytes() > kHighWater;
  return h2up_ && h2up_->requestBacklog() > kHighWater;
}

void HttpExchange::sendUpstreamHead() {
  Stream& s = *stream_;
  if (h2up_) {
    sendUpstreamHeadH2();
    return;
  }
  s.upstreamSentNs = wk_.clock().nowNs();
  // Istio turns on x-envoy-attempt-count for every route.
  up_->write(std::string_view(s.upstreamHead));
  char count[64] = "x-envoy-attempt-count: ";
  char* end = std::to_chars(count + 23, count + 50, s.retry ? s.retry->attempt() : 1u).ptr;
  std::memcpy(end, "\r\n\r\n", 4);
  up_->write(std::string_view(count, size_t(end + 4 - count)));
  s.attemptWrote = true;
  // A retry: the body read so far goes again, from the replay buffer.
  if (s.reqBodySent > 0) up_->write(std::string_view(s.replay));
  up_->startReading();
  forwardRequestBody();
  // processInput pauses reading once kMaxBufferedInput bytes of body pile up
  // while the connect is in flight; nothing else would resume it, and the
  // request would hang with its body half read.
  if (stream_ && !stream_->reqDone && !pausedForUpstream_) resumeRequestBody();
}

void HttpExchange::forwardRequestBody() {
  Stream& s = *stream_;
  if (!s.reqDone) {
    std::vector<std::string_view> payload;
    bool done = false;
    const int64_t taken = pullRequestBody(payload, done);
    if (s.grpc) {
      for (std::string_view p : payload) s.reqMessages.feed(p);
    }
    if (taken < 0) {
      wk_.stats().inc(Counter::DownstreamRqBad);
      // The client gets a 400 (the upstream, which saw a truncated body, is
      // closed by localReply); after the response has started it gets a reset.
      s.keepAlive = false;
      localReply(400, "invalid request body", "DPE");
      return;
    }
    if (taken > 0 || done) {
      // The upstream's framing is the request head's (http1RequestHead):
      // chunked bodies are re-encoded, never copied as the client wrote them.
      // Mirrors take the payload and frame it their own way.
      const bool rechunk = s.head.framing.kind == http::Framing::Kind::Chunked && !s.upstreamH2;
      std::string encoded, joined;
      std::string_view plain;
      if (payload.size() == 1) {
        plain = payload.front();
      } else if (!rechunk || !s.shadows.empty()) {
        for (std::string_view p : payload) joined.append(p);
        plain = joined;
      }
      std::string_view bytes = plain;
      if (rechunk) {
        appendChunks(payload, done, encoded);
        bytes = encoded;
      }
      if (h2up_) {
        h2up_->write(bytes, done);
      } else if (!bytes.empty()) {
        up_->write(bytes);
      }
      if (s.keepReplay && !s.replayOverflow) {
        if (s.replay.size() + bytes.size() > kReplayLimit) {
          // Too big to keep: once sent, this request cannot be retried.
          s.replayOverflow = true;
          std::string().swap(s.replay);
          wk_.stats().inc(Counter::RetryOrShadowAbandoned);
        } else {
          s.replay.append(bytes);
        }
      }
      for (auto& m : s.shadows) m->feed(plain, done);
      s.reqBodySent += uint64_t(taken);
      releaseRequestBody(size_t(taken));
    }
    if (done) {
      s.reqDone = true;
      s.shadows.clear();  // each has its whole request; they finish on their own
      onRequestComplete();
    }
  }
  if (!s.reqDone && upstreamBacklogged()) {
    pausedForUpstream_ = true;
    pauseRequestBody();
  }
}

void HttpExchange::onUpstreamDrained() {
  if (pausedForUpstream_) {
    pausedForUpstream_ = false;
    resumeRequestBody();
    if (stream_ && !stream_->tunnel && !stream_->reqDone && (up_ || h2up_)) forwardRequestBody();
  }
}

void HttpExchange::onUpstreamData() {
  if (!stream_ || !up_) return;
  touchStream();
  if (stream_->tunnel) {
    relayUpstream();
    return;
  }
  if (!stream_->respHeadDone && !handleResponseHead()) return;
  forwardResponseBody();
}

void HttpExchange::startTunnel() {
  // Only an HTTP/1.1 client's WebSocket upgrade becomes a tunnel.
  releaseUpstream(false);
  stream_->keepAlive = false;
  localReply(502, "upstream switched protocols unasked", "UPE");
}

}  // namespace sluice::proxy
