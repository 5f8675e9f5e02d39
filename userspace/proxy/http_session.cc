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
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {
// Past this many unsent bytes on the far side, stop reading from the near
// side: bodies stream with bounded memory instead of being buffered whole.
constexpr size_t kHighWater = 1 << 20;
// Bytes of pipelined requests we are willing to hold while one is in flight.
constexpr size_t kMaxBufferedInput = 128 * 1024;

using stats::Counter;

}  // namespace


// -------------------------------------------------------------- downstream

DownstreamConn::DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer,
                               const sockaddr_in* orig, ConnectionSlot slot)
    : Connection(worker, fd), slot_(std::move(slot)), peer_(peer), origPort_(orig ? ntohs(orig->sin_port) : 0) {
  if (orig) orig_ = *orig;
  worker_.stats().inc(Counter::DownstreamCxTotal);
  worker_.stats().inc(Counter::DownstreamCxActive);
  worker_.addDownstream(this);
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
  if (err == 0) {
    closeAfterFlush();  // a local reply (e.g. 400) may still be queued
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
  s.websocket = wantsWebSocket(head);
  s.reqBody.reset(head.framing);
  s.reqDone = head.framing.kind == http::Framing::Kind::None ||
              (head.framing.kind == http::Framing::Kind::ContentLength && head.framing.length == 0);
  s.expectContinue = head.expectContinue;
  if (worker_.engine().overloaded()) {
    // Envoy's overload manager: new work is refused while memory is short.
    worker_.stats().inc(Counter::DownstreamRqOverload);
    s.keepAlive = false;
    localReply(503, "envoy overloaded", "OM", "x-envoy-overloaded: true\r\n");
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
  const http::Header* rid = head.find("x-request-id");
  if (rid && !rid->value.empty()) {
    s.requestId = rid->value;
  } else {
    newRequestId(worker_.rng(), s.requestIdStorage);
    s.requestId = s.requestIdStorage;
  }
  return true;
}

bool DownstreamConn::resolveRoute() {
  Stream& s = *stream_;
  s.snapshot = worker_.snapshot();
  // Virtual host by destination port + Host, then the first match. The
  // original destination (eBPF capture) outranks the Host/URI port.
  const route::VirtualHost* vh = nullptr;
  s.port = origPort_ ? origPort_ : s.target.port;
  if (s.snapshot) vh = s.snapshot->findVirtualHost(s.port, lowerHost(s.target.host), &s.port);
  route::RequestView view;
  view.method = s.head.method;
  view.path = s.target.path;
  view.authority = s.target.authority;
  view.port = s.port;
  view.headers = &s.head.headers;
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
                                    std::string_view extraHeaders) {
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

void DownstreamConn::onRequestComplete() {
  Stream& s = *stream_;
  // Envoy's route timeout runs from the end of the request to the end of
  // the response; the per-try timeout from the start of each attempt (or
  // the end of the request, whichever is later).
  if (s.route->timeout && s.route->timeout->count() > 0 && !stream_->routeTimer.armed())
    worker_.timers().schedule(stream_->routeTimer, uint64_t(s.route->timeout->count()));
  if (s.route->retry.perTryTimeoutNs && (s.ep || up_) && !stream_->perTryTimer.armed())
    worker_.timers().schedule(stream_->perTryTimer, s.route->retry.perTryTimeoutNs);
}

void DownstreamConn::dispatch() {
  Stream& s = *stream_;
  // A request woken from the pool picks afresh: its last pick was never tried.
  int avoid = s.route->retry.ignorePreviousHosts && !wokenFirst_ ? s.endpoint : -1;
  s.attemptWrote = false;
  s.respHeadDone = false;
  // PASSTHROUGH with a captured connection: no balancing, the address the
  // client dialled is the endpoint.
  route::Endpoint passthrough;
  const bool toOriginal = s.cluster->lb == route::LbPolicy::Passthrough && orig_.sin_port != 0;
  if (toOriginal) {
    char ip[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &orig_.sin_addr, ip, sizeof(ip));
    passthrough.address = ip;
    passthrough.port = ntohs(orig_.sin_port);
    passthrough.sockaddr = orig_;
    passthrough.key = passthrough.address + ":" + std::to_string(passthrough.port);
    s.endpoint = -1;
  } else {
    upstream::PickContext pick;
    pick.hashKey = s.hasHashKey ? &s.hashKey : nullptr;
    pick.avoid = avoid;
    pick.tried = s.triedMask;
    s.endpoint = worker_.pickEndpoint(*s.cluster, pick);
    if (s.endpoint >= 0 && s.endpoint < 64) s.triedMask |= uint64_t(1) << s.endpoint;
  }
  if (!toOriginal && s.endpoint < 0) {  // every host ejected, and no panic threshold
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!s.reqDone) s.keepAlive = false;
    localReply(503, "no healthy upstream", "UH");
    return;
  }
  if (!s.health) s.health = worker_.clusters().healthFor(*s.cluster);
  const route::Endpoint& ep = toOriginal ? passthrough : s.cluster->endpoints[size_t(s.endpoint)];
  EndpointState& state = worker_.endpointState(ep);
  s.upstreamHost = ep.key;
  s.upstreamAddr = ep.sockaddr;
  if (!state.idle.empty()) {
    s.ep = &state;
    up_ = state.idle.back();
    up_->attach(this);
    beginAttempt();
    sendUpstreamHead();
    return;
  }
  // A new connection needs a unit of maxConnections; without one the request
  // waits (within http1MaxPendingRequests) to be woken by a connection or a
  // slot that frees up.
  auto conn = upstream::acquire(s.limits, upstream::ClusterLimits::kConnections);
  if (!conn) {
    waitForConnection(state);
    return;
  }
  int fd = OutboundConnection::openSocket(s.cluster->upstream);
  if (fd < 0) {
    failAttempt(route::AttemptFailure::ConnectFailure, 503,
                "upstream connect error or disconnect/reset before headers. reset reason: local socket error", "UF");
    return;
  }
  s.ep = &state;
  up_ = new UpstreamConn(worker_, fd, ep, state, std::move(*conn), s.cluster->upstream);
  up_->attach(this);
  beginAttempt();
  up_->connect();
}

void DownstreamConn::beginAttempt() {
  Stream& s = *stream_;
  s.pendingToken.reset();
  s.ep->incActive();
  worker_.stats().inc(Counter::UpstreamRqTotal);
  if (s.reqDone && s.route->retry.perTryTimeoutNs)
    worker_.timers().schedule(stream_->perTryTimer, s.route->retry.perTryTimeoutNs);
}

void DownstreamConn::onUpstreamConnected() {
  if (stream_) sendUpstreamHead();
}

void DownstreamConn::sendUpstreamHead() {
  Stream& s = *stream_;
  s.upstreamSentNs = worker_.clock().nowNs();
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
  if (stream_ && !stream_->reqDone && !closing() && readingPaused() && !pausedForUpstream_) startReading();
}

void DownstreamConn::forwardRequestBody() {
  Stream& s = *stream_;
  if (!s.reqDone && !input_.empty()) {
    const bool chunked = s.reqBody.framing().kind == http::Framing::Kind::Chunked;
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step = s.reqBody.consume(input_.data(), input_.size(), chunked ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      worker_.stats().inc(Counter::DownstreamRqBad);
      // The client gets a 400 (the upstream, which saw a truncated body, is
      // closed by localReply); after the response has started it gets a reset.
      s.keepAlive = false;
      input_.clear();
      localReply(400, "invalid request body", "DPE");
      return;
    }
    bool done = step.status == http::BodyFramer::Status::Done;
    if (step.consumed > 0 || done) {
      std::string_view bytes(input_.data(), step.consumed);
      std::string encoded;
      if (chunked) {
        appendChunks(payload, done, encoded);
        bytes = encoded;
      }
      if (!bytes.empty()) up_->write(bytes);
      if (s.keepReplay && !s.replayOverflow) {
        if (s.replay.size() + bytes.size() > kReplayLimit) {
          // Too big to keep: once sent, this request cannot be retried.
          s.replayOverflow = true;
          std::string().swap(s.replay);
          worker_.stats().inc(Counter::RetryOrShadowAbandoned);
        } else {
          s.replay.append(bytes);
        }
      }
      for (auto& m : s.shadows) m->feed(bytes, done);
      s.reqBodySent += step.consumed;
      consumeInput(step.consumed);
    }
    if (done) {
      s.reqDone = true;
      s.shadows.clear();  // each has its whole request; they finish on their own
      onRequestComplete();
    }
  }
  if (!s.reqDone && up_->unsentBytes() > kHighWater) {
    pausedForUpstream_ = true;
    pauseReading();
  }
}

void DownstreamConn::onUpstreamDrained() {
  if (pausedForUpstream_) {
    pausedForUpstream_ = false;
    startReading();
    if (stream_ && stream_->tunnel) {
      processInput();
    } else if (stream_ && !stream_->reqDone && up_) {
      forwardRequestBody();
    }
  }
}

void DownstreamConn::onUpstreamData() {
  if (!stream_ || !up_) return;
  touchStream();
  if (stream_->tunnel) {
    relayUpstream();
    return;
  }
  if (!stream_->respHeadDone && !handleResponseHead()) return;
  forwardResponseBody();
}

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
  std::string head = buildDownstreamHead(resp_, s.serviceTimeMs, /*close=*/false, /*http10=*/false,
                                         /*dechunk=*/false);
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

bool DownstreamConn::handleResponseHead() {
  Stream& s = *stream_;
  for (;;) {
    http::ParseError err;
    resp_.headers.clear();
    std::string& in = up_->input();
    http::ParseStatus st = http::parseResponseHead(in.data(), in.size(), limits_, s.isHead, resp_, err);
    if (st == http::ParseStatus::Incomplete) return false;
    if (st == http::ParseStatus::Error) {
      releaseUpstream(false);
      s.keepAlive = s.keepAlive && s.reqDone;
      localReply(502, "upstream sent an invalid response", "UPE");
      return false;
    }
    if (resp_.status == 101 && s.websocket && acceptsWebSocket(resp_)) {
      startTunnel();
      return false;
    }
    if (resp_.status == 101) {
      // Only a WebSocket upgrade is forwarded, so any other switch of
      // protocol is the upstream's error; what follows is not HTTP and the
      // connection is not reused.
      releaseUpstream(false);
      s.keepAlive = s.keepAlive && s.reqDone;
      localReply(502, "upstream switched protocols unasked", "UPE");
      return false;
    }
    if (resp_.status >= 100 && resp_.status < 200) {
      // Interim responses: 100 Continue was already answered by us.
      up_->consume(resp_.headBytes);
      continue;
    }
    break;
  }
  reportOutcome(upstream::outcomeOf(resp_.status));
  if (s.retry) {
    // A retriable answer is dropped and the request tried again; the last
    // attempt's answer goes to the client whatever it is.
    route::RetryDecision d = s.retry->onResponse(resp_.status, resp_.headers);
    if (scheduleRetry(d)) {
      stream_->perTryTimer.cancel();
      releaseUpstream(false);
      return false;
    }
    // Otherwise (not retriable, no attempt left, body not replayable,
    // maxRetries reached) this answer is the one the client gets.
  }
  s.respHeadDone = true;
  s.status = resp_.status;
  s.serviceTimeMs = (worker_.clock().nowNs() - s.upstreamSentNs) / 1'000'000;
  s.dechunk = s.http10 && resp_.framing.kind == http::Framing::Kind::Chunked;
  bool untilClose = resp_.framing.kind == http::Framing::Kind::UntilClose;
  s.closeAfter = !s.keepAlive || draining_ || s.dechunk || untilClose;
  s.respBody.reset(resp_.framing);
  if (s.retryLimitHit && s.flags == "-") s.flags.assign("URX");
  std::optional<route::HeaderMutation::Rendered> rendered;
  if (s.wc && s.wc->responseHeaders) {
    istio::HeaderContext ctx = headerContext();
    ctx.responseHeaders = &resp_.headers;
    ctx.upstreamRemote = &s.upstreamAddr;
    rendered.emplace(s.wc->responseHeaders->render(ctx));
  }
  std::string extra;
  std::string_view extraView = s.setCookie;
  if (!s.corsHeaders.empty()) {
    extra = s.setCookie + s.corsHeaders;
    extraView = extra;
  }
  std::string head = buildDownstreamHead(resp_, s.serviceTimeMs, s.closeAfter, s.http10, s.dechunk,
                                         extraView, rendered ? &*rendered : nullptr);
  up_->consume(resp_.headBytes);
  s.respBytes += head.size();
  s.respStarted = true;
  write(std::move(head));
  return true;
}

void DownstreamConn::forwardResponseBody() {
  Stream& s = *stream_;
  std::string& in = up_->input();
  if (!s.respBody.done() && !in.empty()) {
    const bool rechunk = !s.dechunk && s.respBody.framing().kind == http::Framing::Kind::Chunked;
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step =
        s.respBody.consume(in.data(), in.size(), s.dechunk || rechunk ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      cutResponse("UPE");
      return;
    }
    if (s.dechunk) {
      for (std::string_view p : payload) write(p);
    } else if (rechunk) {
      std::string encoded;
      appendChunks(payload, step.status == http::BodyFramer::Status::Done, encoded);
      if (!encoded.empty()) write(std::move(encoded));
    } else if (step.consumed > 0) {
      write(std::string_view(in.data(), step.consumed));
    }
    s.respBytes += step.consumed;
    up_->consume(step.consumed);
  }
  if (s.respBody.done()) {
    // Leftover bytes after a complete response mean the server broke
    // framing: never reuse such a connection.
    finishStream(resp_.keepAlive && s.reqDone && in.empty());
    return;
  }
  if (unsentBytes() > kHighWater) up_->pauseReading();
}

void DownstreamConn::localReply(int status, std::string_view body, std::string_view flags,
                                std::string_view extraHeaders) {
  Stream& s = *stream_;
  cancelTimers();
  if (s.respStarted) {
    // Too late for a clean answer.
    cutResponse(flags);
    return;
  }
  s.status = status;
  s.flags.assign(flags);
  s.closeAfter = !s.keepAlive || draining_;
  std::string out = buildLocalReply(status, body, s.closeAfter, s.isHead, extraHeaders);
  s.respBytes += out.size();
  s.respStarted = true;
  write(std::move(out));
  finishStream(false);
}

void DownstreamConn::finishStream(bool upstreamReusable) {
  Stream& s = *stream_;
  cancelTimers();
  if (s.retried && s.status > 0 && s.status < 500) worker_.stats().inc(Counter::UpstreamRqRetrySuccess);
  releaseUpstream(upstreamReusable);
  logAndCount();
  bool keep = s.keepAlive && s.reqDone && !s.closeAfter && !draining_;
  retireStream();
  if (!keep) {
    closeAfterFlush();
    return;
  }
  worker_.timers().schedule(idleTimer_, worker_.engine().options().idleTimeoutNs);
  if (readingPaused() && !pausedForUpstream_) startReading();
  // Pipelined requests already buffered are picked up by processInput's loop
  // when we were called from it, or here when called from an upstream event.
  if (!input_.empty()) processInput();
}

void DownstreamConn::abortStream(std::string_view flags) {
  if (!stream_) return;
  if (stream_->status == 0 || !stream_->respStarted) stream_->status = 0;
  stream_->flags.assign(flags);
  cancelTimers();
  releaseUpstream(false);
  logAndCount();
  retireStream();
}

void DownstreamConn::cutResponse(std::string_view flags) {
  abortStream(flags);
  const bool flushing = unsentBytes() > 0;
  closeAfterFlush();  // closes now when nothing is queued
  if (flushing) worker_.timers().schedule(idleTimer_, kCutFlushNs);  // fires close(): no exchange left
}

void DownstreamConn::cancelTimers() {
  stream_->routeTimer.cancel();
  stream_->retryTimer.cancel();
  worker_.pool().cancel(*this);
  stream_->perTryTimer.cancel();
  stream_->resumeTimer.cancel();
}

void DownstreamConn::retireStream() {
  stream_->idleTimer.cancel();
  // Mirrors still waiting for body bytes are abandoned; the others finish
  // on their own.
  stream_->shadows.clear();
  stream_->pendingShadows.clear();
  stream_->retry.reset();  // refers to the snapshot's route
  // Drop the snapshot now: an idle keep-alive connection must not keep an
  // old configuration alive. The circuit-breaker units go back now too.
  stream_->snapshot.reset();
  stream_->requestToken.reset();
  stream_->pendingToken.reset();
  stream_->retryToken.reset();
  stream_->limits.reset();
  stream_->health.reset();
  worker_.deleteLater(std::move(stream_));
}

void DownstreamConn::logAndCount() {
  Stream& s = *stream_;
  uint64_t durUs = (worker_.clock().nowNs() - s.startNs) / 1000;
  int cls = s.status / 100;
  switch (cls) {
    case 1: worker_.stats().inc(Counter::DownstreamRq1xx); break;
    case 2: worker_.stats().inc(Counter::DownstreamRq2xx); break;
    case 3: worker_.stats().inc(Counter::DownstreamRq3xx); break;
    case 4: worker_.stats().inc(Counter::DownstreamRq4xx); break;
    case 5: worker_.stats().inc(Counter::DownstreamRq5xx); break;
    default: break;
  }
  stats::RequestKeyView key;
  if (s.cluster) {
    key.destinationService = s.cluster->serviceHost;
    key.destinationVersion = s.cluster->subset.empty() ? std::string_view("unknown") : s.cluster->subset;
    key.cluster = s.cluster->name;
  } else {
    key.destinationService = "unknown";
    key.destinationVersion = "unknown";
  }
  key.responseCode = uint16_t(s.status);
  if (s.faultDelayed) s.flags = s.flags == "-" ? std::string("DI") : "DI," + s.flags;
  key.responseFlags = s.flags;
  worker_.stats().recordRequest(key, durUs, s.reqBodySent, s.respBytes);
  if (worker_.accessLog()) {
    const http::Header* xff = s.head.find("x-forwarded-for");
    const http::Header* ua = s.head.find("user-agent");
    worker_.logLine(fmt::format(
        "[{}] \"{} {} HTTP/1.{}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {}\n",
        formatLogTime(), s.head.method, s.target.path, s.http10 ? 0 : 1, s.status, s.flags, s.reqBodySent,
        s.respBytes, durUs / 1000, s.respHeadDone ? std::to_string(s.serviceTimeMs) : "-",
        xff && !xff->value.empty() ? xff->value : "-", ua && !ua->value.empty() ? ua->value : "-",
        s.requestId, s.target.authority, s.upstreamHost.empty() ? "-" : s.upstreamHost,
        s.cluster ? s.cluster->name : "-"));
  }
}

}  // namespace sluice::proxy
