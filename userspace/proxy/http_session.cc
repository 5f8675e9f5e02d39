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
#include "proxy/exchange.h"
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
  if (!ex_ && input_.empty()) close();
}

void DownstreamConn::shedIfIdle() {
  if (ex_ || !input_.empty() || closing()) return;
  worker_.stats().inc(Counter::DownstreamCxOverloadShed);
  close();
}

void DownstreamConn::onDestroy() {
  if (ex_) abortExchange("DC");
  worker_.stats().dec(Counter::DownstreamCxActive);
  worker_.removeDownstream(this);
}

void DownstreamConn::onIdleTimeout() {
  if (!ex_) close();
}

void DownstreamConn::onHeadersTimeout() {
  if (ex_ || closing()) return;
  worker_.stats().inc(Counter::DownstreamRqHeaderTimeout);
  pauseReading();
  input_.clear();
  write(buildLocalReply(408, "request headers timeout", /*close=*/true, /*isHead=*/false, {}));
  closeAfterFlush();
}

void DownstreamConn::onData() {
  if (ex_) touchStream();
  processInput();
}

void DownstreamConn::onSendProgress() {
  if (ex_) touchStream();
}

void DownstreamConn::touchStream() {
  worker_.timers().schedule(streamTimer_, worker_.engine().options().streamIdleTimeoutNs);
}

void DownstreamConn::onStreamIdle() {
  if (!ex_) return;
  worker_.stats().inc(Counter::DownstreamRqIdleTimeout);
  if (!ex_->respHeadDone && !ex_->respStarted) {
    // As Envoy: 408 while no response head has arrived, a reset after.
    releaseUpstream(false);
    ex_->keepAlive = false;
    localReply(408, "stream timeout", "SI");
    return;
  }
  abortExchange("SI");
  close();
}

void DownstreamConn::onPeerClosed(int err) {
  // The client went away (a FIN or a reset: a half-close cannot be told
  // from a close, and Envoy and nginx treat both as the end): whatever is in
  // flight is cancelled at once, Envoy's "downstream connection
  // termination" (DC). Its upstream connection is closed, not pooled;
  // mirrors that have their whole request finish on their own.
  if (ex_ && ex_->tunnel && err == 0) {
    finishExchange(false);  // the client ended a WebSocket conversation: a normal end
  } else if (ex_) {
    worker_.stats().inc(Counter::DownstreamCxDestroyRemoteActiveRq);
    abortExchange("DC");
  }
  if (err == 0) {
    closeAfterFlush();  // a local reply (e.g. 400) may still be queued
  } else {
    close();
  }
}

void DownstreamConn::onDrained() {
  if (up_ && up_->readingPaused() && ex_ && ex_->respHeadDone) {
    up_->startReading();
    if (ex_->tunnel) {
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
    if (!ex_) {
      if (input_.empty()) return;
      if (!startRequest()) return;
      continue;  // a local reply may have finished the exchange already
    }
    if (ex_->tunnel) {
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
    if (!ex_->reqDone && up_ && up_->connected() && ex_->upstreamSentNs) forwardRequestBody();
    // Bound what pipelined clients can make us hold.
    if (ex_ && input_.size() > kMaxBufferedInput) pauseReading();
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
  if (spare_) {
    ex_ = std::move(spare_);
    ex_->clear();
  } else {
    ex_ = std::make_unique<Exchange>();
  }
  Exchange& ex = *ex_;
  ex.startNs = worker_.clock().nowNs();
  touchStream();
  worker_.stats().inc(Counter::DownstreamRqTotal);
  if (st == http::ParseStatus::Error) {
    worker_.stats().inc(Counter::DownstreamRqBad);
    ex.keepAlive = false;
    ex.reqDone = true;
    input_.clear();
    localReply(err.status, err.reason, "DPE");
    return false;
  }

  ex.snapshot = worker_.snapshot();
  ex.method.assign(head_.method);
  ex.isHead = head_.method == "HEAD";
  ex.http10 = head_.versionMinor == 0;
  ex.keepAlive = head_.keepAlive;
  ex.websocket = wantsWebSocket(head_);
  ex.reqBody.reset(head_.framing);
  ex.reqDone = head_.framing.kind == http::Framing::Kind::None ||
               (head_.framing.kind == http::Framing::Kind::ContentLength && head_.framing.length == 0);
  ex.expectContinue = head_.expectContinue;

  if (worker_.engine().overloaded()) {
    // Envoy's overload manager: new work is refused while memory is short.
    worker_.stats().inc(Counter::DownstreamRqOverload);
    ex.keepAlive = false;
    consumeInput(head_.headBytes);
    localReply(503, "envoy overloaded", "OM", "x-envoy-overloaded: true\r\n");
    return !closing();
  }
  if (head_.method == "CONNECT") {
    // Nothing is tunnelled: what follows the head is not HTTP, so the
    // connection ends with the answer, whatever bytes came with it.
    ex.keepAlive = false;
    consumeInput(head_.headBytes);
    localReply(501, "CONNECT is not supported", "DPE");
    return !closing();
  }
  TargetParts target;
  if (!splitTarget(head_.target, head_.host, target)) {
    ex.keepAlive = ex.keepAlive && ex.reqDone;
    consumeInput(head_.headBytes);
    localReply(400, "invalid request target", "DPE");
    return !closing();
  }
  ex.authority.assign(target.authority);
  ex.path.assign(target.path);
  if (const http::Header* h = head_.find("user-agent")) ex.userAgent.assign(h->value);
  if (const http::Header* h = head_.find("x-forwarded-for")) ex.forwardedFor.assign(h->value);
  const http::Header* rid = head_.find("x-request-id");
  if (rid && !rid->value.empty()) {
    ex.requestId.assign(rid->value);
  } else {
    newRequestId(worker_.rng(), ex.requestId);
  }

  // Route: virtual host by destination port + Host, then the first match.
  const route::Snapshot* snap = ex.snapshot.get();
  const route::VirtualHost* vh = nullptr;
  // The original destination (eBPF capture) outranks the Host/URI port.
  uint32_t port = origPort_ ? origPort_ : target.port;
  if (snap) vh = snap->findVirtualHost(port, lowerHost(target.host), &port);
  route::RequestView view;
  view.method = head_.method;
  view.path = target.path;
  view.authority = target.authority;
  view.port = port;
  view.headers = &head_.headers;
  if (vh) ex.route = vh->match(view, &ex.matched);

  // Everything below that reads the head (its views point into input_)
  // happens before the head's bytes are consumed.
  if (!ex.route) {
    consumeInput(head_.headBytes);
    worker_.stats().inc(Counter::NoRoute);
    if (!ex.reqDone) ex.keepAlive = false;
    localReply(404, "", "NR");
    return !closing();
  }
  const route::Route& route = *ex.route;
  const config::HTTPRoute* spec = route.spec;
  if (spec && (spec->directResponse || spec->redirect)) {
    std::string extra;
    if (spec->redirect) {
      std::string location = redirectLocation(*spec->redirect, target, port);
      // Built from the request: checked before it becomes a header line.
      if (!http::wireError(http::WireField::HeaderValue, location).empty()) {
        consumeInput(head_.headBytes);
        ex.keepAlive = false;
        localReply(400, "invalid redirect target", "DPE");
        return !closing();
      }
      extra = "location: " + location + "\r\n";
    }
    if (route.localResponseHeaders) route.localResponseHeaders->render(headerContext()).append(extra);
    consumeInput(head_.headBytes);
    if (!ex.reqDone) ex.keepAlive = false;
    if (spec->directResponse) {
      localReply(int(spec->directResponse->status), spec->directResponse->body.value_or(""), "-", extra);
    } else {
      localReply(int(spec->redirect->redirectCode), "", "-", extra);
    }
    return !closing();
  }
  if (route.cors && !decideCors(head_.method)) {
    consumeInput(head_.headBytes);
    return !closing();  // a preflight, answered here
  }
  if (route.fault) ex.fault = route.fault->roll(worker_.rng());

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
    if (stickyHash) computeHashKey(*stickyHash, target.path);
  }
  ex.wc = route.pick(ex.hasHashKey ? upstream::hashKey(std::string_view(
                                         reinterpret_cast<const char*>(&ex.hashKey), sizeof(ex.hashKey)))
                                   : worker_.rng().next());
  ex.cluster = ex.wc ? ex.wc->cluster : nullptr;
  if (ex.cluster && ex.cluster->hash && !stickyHash) computeHashKey(*ex.cluster->hash, target.path);
  ex.retry.emplace(route.retry, head_.method, head_.headers, worker_.clock(), worker_.rng());
  ex.keepReplay = route.retry.enabled();

  // The upstream head: rewrite, then the destination's and route's header
  // operations.
  std::optional<std::string> newPath;
  if (route.rewrite) newPath = route.rewrite->rewritePath(target.path, ex.matched);
  if (newPath && (newPath->empty() || newPath->front() != '/' ||
                  !http::wireError(http::WireField::Path, *newPath).empty())) {
    // A regex rewrite's captures come from the request: checked again here.
    consumeInput(head_.headBytes);
    ex.keepAlive = false;
    localReply(400, "rewritten path is not a valid request target", "DPE");
    return !closing();
  }
  std::string_view authority =
      route.rewrite && !route.rewrite->authority().empty() ? std::string_view(route.rewrite->authority())
                                                           : target.authority;
  std::optional<route::HeaderMutation::Rendered> rendered;
  if (ex.wc && ex.wc->requestHeaders) rendered.emplace(ex.wc->requestHeaders->render(headerContext()));
  HeadMutation mutation;
  if (newPath) {
    mutation.path = *newPath;
    mutation.originalPath = target.path;
  }
  if (authority.data() != target.authority.data()) mutation.authority = authority;
  mutation.headers = rendered ? &*rendered : nullptr;
  ex.upstreamHead = buildUpstreamHead(head_, target, ex.requestId, mutation);
  ex.upstreamHead.resize(ex.upstreamHead.size() - 2);  // each attempt adds its count, then the blank line
  if (!route.mirrors.empty() && !ex.websocket)  // a mirror cannot hold a conversation
    chooseMirrors(target, authority, mutation.headers, mutation.path, mutation.originalPath);
  if (ex.wc && ex.wc->responseHeaders) {
    for (const std::string& name : ex.wc->responseHeaders->requestHeaderNames()) {
      for (const http::Header& h : head_.headers) {
        if (http::iequals(h.name, name)) ex.savedRequestHeaders.emplace_back(name, h.value);
      }
    }
  }
  consumeInput(head_.headBytes);

  if (ex.fault.delayNs) {
    // Envoy's fault filter: the request waits on the timer wheel, holding
    // nothing but its memory.
    ex.faultDelayed = true;
    worker_.stats().inc(Counter::FaultDelaysInjected);
    worker_.timers().schedule(faultTimer_, ex.fault.delayNs);
    return !closing();
  }
  continueRequest();
  return !closing();
}

void DownstreamConn::continueRequest() {
  Exchange& ex = *ex_;
  if (ex.fault.abortStatus) {
    worker_.stats().inc(Counter::FaultAbortsInjected);
    ex.pendingShadows.clear();
    if (!ex.reqDone) ex.keepAlive = false;
    std::string extra;
    if (ex.fault.grpcStatus >= 0) {
      extra = fmt::format("content-type: application/grpc\r\ngrpc-status: {}\r\ngrpc-message: fault filter abort\r\n",
                          ex.fault.grpcStatus);
    }
    localReply(ex.fault.abortStatus, ex.fault.grpcStatus >= 0 ? "" : "fault filter abort", "FI", extra);
    return;
  }
  if (!ex.cluster || ex.cluster->missing || ex.cluster->endpoints.empty()) {
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!ex.reqDone) ex.keepAlive = false;
    localReply(503, "no healthy upstream", ex.cluster && !ex.cluster->missing ? "UH" : "NC");
    return;
  }
  ex.limits = worker_.limitsFor(*ex.cluster);
  if (auto t = upstream::acquire(ex.limits, upstream::ClusterLimits::kRequests)) {
    ex.requestToken = std::move(*t);
  } else {
    overflow(false);
    return;
  }
  if (ex.expectContinue) write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
  if (!ex.pendingShadows.empty()) startShadows();
  if (ex.reqDone) onRequestComplete();
  dispatch();
}

void DownstreamConn::onRequestComplete() {
  Exchange& ex = *ex_;
  // Envoy's route timeout runs from the end of the request to the end of
  // the response; the per-try timeout from the start of each attempt (or
  // the end of the request, whichever is later).
  if (ex.route->timeout && ex.route->timeout->count() > 0 && !routeTimer_.armed())
    worker_.timers().schedule(routeTimer_, uint64_t(ex.route->timeout->count()));
  if (ex.route->retry.perTryTimeoutNs && (ex.ep || up_) && !perTryTimer_.armed())
    worker_.timers().schedule(perTryTimer_, ex.route->retry.perTryTimeoutNs);
}

void DownstreamConn::dispatch() {
  Exchange& ex = *ex_;
  // A request woken from the pool picks afresh: its last pick was never tried.
  int avoid = ex.route->retry.ignorePreviousHosts && !wokenFirst_ ? ex.endpoint : -1;
  ex.attemptWrote = false;
  ex.respHeadDone = false;
  // PASSTHROUGH with a captured connection: no balancing, the address the
  // client dialled is the endpoint.
  route::Endpoint passthrough;
  const bool toOriginal = ex.cluster->lb == route::LbPolicy::Passthrough && orig_.sin_port != 0;
  if (toOriginal) {
    char ip[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &orig_.sin_addr, ip, sizeof(ip));
    passthrough.address = ip;
    passthrough.port = ntohs(orig_.sin_port);
    passthrough.sockaddr = orig_;
    passthrough.key = passthrough.address + ":" + std::to_string(passthrough.port);
    ex.endpoint = -1;
  } else {
    const uint64_t* key = ex.hasHashKey ? &ex.hashKey : nullptr;
    ex.endpoint = worker_.pickEndpoint(*ex.cluster, avoid, key);
    // retryIgnorePreviousHosts: like Envoy's previous-hosts predicate, pick
    // again (up to 5 times) while the choice is a host this request already
    // tried.
    if (avoid >= 0) {
      for (int k = 0; k < 5 && ex.endpoint >= 0 && ex.triedBefore(ex.endpoint); ++k)
        ex.endpoint = worker_.pickEndpoint(*ex.cluster, avoid, key);
    }
    if (ex.endpoint >= 0 && ex.endpoint < 64) ex.triedMask |= uint64_t(1) << ex.endpoint;
  }
  if (!toOriginal && ex.endpoint < 0) {  // every host ejected, and no panic threshold
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!ex.reqDone) ex.keepAlive = false;
    localReply(503, "no healthy upstream", "UH");
    return;
  }
  if (!ex.health) ex.health = worker_.healthFor(*ex.cluster);
  const route::Endpoint& ep = toOriginal ? passthrough : ex.cluster->endpoints[size_t(ex.endpoint)];
  EndpointState& state = worker_.endpointState(ep);
  ex.upstreamHost = ep.key;
  ex.upstreamAddr = ep.sockaddr;
  if (!state.idle.empty()) {
    ex.ep = &state;
    up_ = state.idle.back();
    up_->attach(this);
    beginAttempt();
    sendUpstreamHead();
    return;
  }
  // A new connection needs a unit of maxConnections; without one the request
  // waits (within http1MaxPendingRequests) to be woken by a connection or a
  // slot that frees up.
  auto conn = upstream::acquire(ex.limits, upstream::ClusterLimits::kConnections);
  if (!conn) {
    waitForConnection(state);
    return;
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    failAttempt(route::AttemptFailure::ConnectFailure, 503,
                "upstream connect error or disconnect/reset before headers. reset reason: local socket error", "UF");
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  applyKeepalive(fd, ex.cluster->upstream);
  ex.ep = &state;
  up_ = new UpstreamConn(worker_, fd, ep, state, std::move(*conn), ex.cluster->upstream);
  up_->attach(this);
  beginAttempt();
  up_->connect();
}

void DownstreamConn::beginAttempt() {
  Exchange& ex = *ex_;
  ex.pendingToken.reset();
  ex.ep->incActive();
  worker_.stats().inc(Counter::UpstreamRqTotal);
  if (ex.reqDone && ex.route->retry.perTryTimeoutNs)
    worker_.timers().schedule(perTryTimer_, ex.route->retry.perTryTimeoutNs);
}

void DownstreamConn::onUpstreamConnected() {
  if (ex_) sendUpstreamHead();
}

void DownstreamConn::sendUpstreamHead() {
  Exchange& ex = *ex_;
  ex.upstreamSentNs = worker_.clock().nowNs();
  // Istio turns on x-envoy-attempt-count for every route.
  up_->write(std::string_view(ex.upstreamHead));
  char count[64] = "x-envoy-attempt-count: ";
  char* end = std::to_chars(count + 23, count + 50, ex.retry ? ex.retry->attempt() : 1u).ptr;
  std::memcpy(end, "\r\n\r\n", 4);
  up_->write(std::string_view(count, size_t(end + 4 - count)));
  ex.attemptWrote = true;
  // A retry: the body read so far goes again, from the replay buffer.
  if (ex.reqBodySent > 0) up_->write(std::string_view(ex.replay));
  up_->startReading();
  forwardRequestBody();
  // processInput pauses reading once kMaxBufferedInput bytes of body pile up
  // while the connect is in flight; nothing else would resume it, and the
  // request would hang with its body half read.
  if (ex_ && !ex_->reqDone && !closing() && readingPaused() && !pausedForUpstream_) startReading();
}

void DownstreamConn::forwardRequestBody() {
  Exchange& ex = *ex_;
  if (!ex.reqDone && !input_.empty()) {
    const bool chunked = ex.reqBody.framing().kind == http::Framing::Kind::Chunked;
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step = ex.reqBody.consume(input_.data(), input_.size(), chunked ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      worker_.stats().inc(Counter::DownstreamRqBad);
      // The client gets a 400 (the upstream, which saw a truncated body, is
      // closed by localReply); after the response has started it gets a reset.
      ex.keepAlive = false;
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
      if (ex.keepReplay && !ex.replayOverflow) {
        if (ex.replay.size() + bytes.size() > kReplayLimit) {
          // Too big to keep: once sent, this request cannot be retried.
          ex.replayOverflow = true;
          std::string().swap(ex.replay);
          worker_.stats().inc(Counter::RetryOrShadowAbandoned);
        } else {
          ex.replay.append(bytes);
        }
      }
      for (auto& s : ex.shadows) s->feed(bytes, done);
      ex.reqBodySent += step.consumed;
      consumeInput(step.consumed);
    }
    if (done) {
      ex.reqDone = true;
      ex.shadows.clear();  // each has its whole request; they finish on their own
      onRequestComplete();
    }
  }
  if (!ex.reqDone && up_->unsentBytes() > kHighWater) {
    pausedForUpstream_ = true;
    pauseReading();
  }
}

void DownstreamConn::onUpstreamDrained() {
  if (pausedForUpstream_) {
    pausedForUpstream_ = false;
    startReading();
    if (ex_ && ex_->tunnel) {
      processInput();
    } else if (ex_ && !ex_->reqDone && up_) {
      forwardRequestBody();
    }
  }
}

void DownstreamConn::onUpstreamData() {
  if (!ex_ || !up_) return;
  touchStream();
  if (ex_->tunnel) {
    relayUpstream();
    return;
  }
  if (!ex_->respHeadDone && !handleResponseHead()) return;
  forwardResponseBody();
}

void DownstreamConn::startTunnel() {
  Exchange& ex = *ex_;
  // The route and per-try timeouts bound the wait for the upgrade, not the
  // conversation that follows (as Envoy); the stream idle timeout goes on.
  routeTimer_.cancel();
  perTryTimer_.cancel();
  reportOutcome(upstream::Outcome::Success);
  ex.respHeadDone = ex.respStarted = ex.tunnel = true;
  ex.status = 101;
  ex.keepAlive = false;  // the connection ends with the tunnel
  ex.serviceTimeMs = (worker_.clock().nowNs() - ex.upstreamSentNs) / 1'000'000;
  std::string head = buildDownstreamHead(resp_, ex.serviceTimeMs, /*close=*/false, /*http10=*/false,
                                         /*dechunk=*/false);
  head.insert(head.size() - 2, "upgrade: websocket\r\nconnection: upgrade\r\n");
  up_->consume(resp_.headBytes);
  ex.respBytes += head.size();
  write(std::move(head));
  relayUpstream();     // bytes the upstream sent right after its 101
  if (ex_ && ex_->tunnel) processInput();  // and the client's, if it did not wait
}

void DownstreamConn::relayUpstream() {
  std::string& in = up_->input();
  if (!in.empty()) {
    ex_->respBytes += in.size();
    write(std::string_view(in));
    up_->consume(in.size());
  }
  if (unsentBytes() > kHighWater) up_->pauseReading();
}

bool DownstreamConn::handleResponseHead() {
  Exchange& ex = *ex_;
  for (;;) {
    http::ParseError err;
    resp_.headers.clear();
    std::string& in = up_->input();
    http::ParseStatus st = http::parseResponseHead(in.data(), in.size(), limits_, ex.isHead, resp_, err);
    if (st == http::ParseStatus::Incomplete) return false;
    if (st == http::ParseStatus::Error) {
      releaseUpstream(false);
      ex.keepAlive = ex.keepAlive && ex.reqDone;
      localReply(502, "upstream sent an invalid response", "UPE");
      return false;
    }
    if (resp_.status == 101 && ex.websocket && acceptsWebSocket(resp_)) {
      startTunnel();
      return false;
    }
    if (resp_.status == 101) {
      // Only a WebSocket upgrade is forwarded, so any other switch of
      // protocol is the upstream's error; what follows is not HTTP and the
      // connection is not reused.
      releaseUpstream(false);
      ex.keepAlive = ex.keepAlive && ex.reqDone;
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
  if (ex.retry) {
    // A retriable answer is dropped and the request tried again; the last
    // attempt's answer goes to the client whatever it is.
    route::RetryDecision d = ex.retry->onResponse(resp_.status, resp_.headers);
    if (scheduleRetry(d)) {
      perTryTimer_.cancel();
      releaseUpstream(false);
      return false;
    }
    // Otherwise (not retriable, no attempt left, body not replayable,
    // maxRetries reached) this answer is the one the client gets.
  }
  ex.respHeadDone = true;
  ex.status = resp_.status;
  ex.serviceTimeMs = (worker_.clock().nowNs() - ex.upstreamSentNs) / 1'000'000;
  ex.dechunk = ex.http10 && resp_.framing.kind == http::Framing::Kind::Chunked;
  bool untilClose = resp_.framing.kind == http::Framing::Kind::UntilClose;
  ex.closeAfter = !ex.keepAlive || draining_ || ex.dechunk || untilClose;
  ex.respBody.reset(resp_.framing);
  if (ex.retryLimitHit && ex.flags == "-") ex.flags.assign("URX");
  std::optional<route::HeaderMutation::Rendered> rendered;
  std::vector<http::Header> savedRequest;
  if (ex.wc && ex.wc->responseHeaders) {
    route::HeaderContext ctx = headerContext();
    // The request head's bytes are gone by now: %REQ(x)% reads the copies.
    for (const auto& [name, value] : ex.savedRequestHeaders) savedRequest.push_back({name, value});
    ctx.requestHeaders = &savedRequest;
    ctx.responseHeaders = &resp_.headers;
    ctx.upstreamRemote = &ex.upstreamAddr;
    rendered.emplace(ex.wc->responseHeaders->render(ctx));
  }
  std::string extra;
  std::string_view extraView = ex.setCookie;
  if (!ex.corsHeaders.empty()) {
    extra = ex.setCookie + ex.corsHeaders;
    extraView = extra;
  }
  std::string head = buildDownstreamHead(resp_, ex.serviceTimeMs, ex.closeAfter, ex.http10, ex.dechunk,
                                         extraView, rendered ? &*rendered : nullptr);
  up_->consume(resp_.headBytes);
  ex.respBytes += head.size();
  ex.respStarted = true;
  write(std::move(head));
  return true;
}

void DownstreamConn::forwardResponseBody() {
  Exchange& ex = *ex_;
  std::string& in = up_->input();
  if (!ex.respBody.done() && !in.empty()) {
    const bool rechunk = !ex.dechunk && ex.respBody.framing().kind == http::Framing::Kind::Chunked;
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step =
        ex.respBody.consume(in.data(), in.size(), ex.dechunk || rechunk ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      cutResponse("UPE");
      return;
    }
    if (ex.dechunk) {
      for (std::string_view p : payload) write(p);
    } else if (rechunk) {
      std::string encoded;
      appendChunks(payload, step.status == http::BodyFramer::Status::Done, encoded);
      if (!encoded.empty()) write(std::move(encoded));
    } else if (step.consumed > 0) {
      write(std::string_view(in.data(), step.consumed));
    }
    ex.respBytes += step.consumed;
    up_->consume(step.consumed);
  }
  if (ex.respBody.done()) {
    // Leftover bytes after a complete response mean the server broke
    // framing: never reuse such a connection.
    finishExchange(resp_.keepAlive && ex.reqDone && in.empty());
    return;
  }
  if (unsentBytes() > kHighWater) up_->pauseReading();
}

void DownstreamConn::localReply(int status, std::string_view body, std::string_view flags,
                                std::string_view extraHeaders) {
  Exchange& ex = *ex_;
  cancelTimers();
  if (ex.respStarted) {
    // Too late for a clean answer.
    cutResponse(flags);
    return;
  }
  ex.status = status;
  ex.flags.assign(flags);
  ex.closeAfter = !ex.keepAlive || draining_;
  std::string out = buildLocalReply(status, body, ex.closeAfter, ex.isHead, extraHeaders);
  ex.respBytes += out.size();
  ex.respStarted = true;
  write(std::move(out));
  finishExchange(false);
}

void DownstreamConn::finishExchange(bool upstreamReusable) {
  Exchange& ex = *ex_;
  cancelTimers();
  if (ex.retried && ex.status > 0 && ex.status < 500) worker_.stats().inc(Counter::UpstreamRqRetrySuccess);
  releaseUpstream(upstreamReusable);
  logAndCount();
  bool keep = ex.keepAlive && ex.reqDone && !ex.closeAfter && !draining_;
  retireExchange();
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

void DownstreamConn::abortExchange(std::string_view flags) {
  if (!ex_) return;
  if (ex_->status == 0 || !ex_->respStarted) ex_->status = 0;
  ex_->flags.assign(flags);
  cancelTimers();
  releaseUpstream(false);
  logAndCount();
  retireExchange();
}

void DownstreamConn::cutResponse(std::string_view flags) {
  abortExchange(flags);
  const bool flushing = unsentBytes() > 0;
  closeAfterFlush();  // closes now when nothing is queued
  if (flushing) worker_.timers().schedule(idleTimer_, kCutFlushNs);  // fires close(): no exchange left
}

void DownstreamConn::cancelTimers() {
  routeTimer_.cancel();
  retryTimer_.cancel();
  worker_.pool().cancel(*this);
  perTryTimer_.cancel();
  faultTimer_.cancel();
}

void DownstreamConn::retireExchange() {
  streamTimer_.cancel();
  // Mirrors still waiting for body bytes are abandoned; the others finish
  // on their own.
  ex_->shadows.clear();
  ex_->pendingShadows.clear();
  ex_->retry.reset();  // refers to the snapshot's route
  // Drop the snapshot now: an idle keep-alive connection must not keep an
  // old configuration alive. The circuit-breaker units go back now too.
  ex_->snapshot.reset();
  ex_->requestToken.reset();
  ex_->pendingToken.reset();
  ex_->retryToken.reset();
  ex_->limits.reset();
  ex_->health.reset();
  spare_ = std::move(ex_);
}

void DownstreamConn::logAndCount() {
  Exchange& ex = *ex_;
  uint64_t durUs = (worker_.clock().nowNs() - ex.startNs) / 1000;
  int cls = ex.status / 100;
  switch (cls) {
    case 1: worker_.stats().inc(Counter::DownstreamRq1xx); break;
    case 2: worker_.stats().inc(Counter::DownstreamRq2xx); break;
    case 3: worker_.stats().inc(Counter::DownstreamRq3xx); break;
    case 4: worker_.stats().inc(Counter::DownstreamRq4xx); break;
    case 5: worker_.stats().inc(Counter::DownstreamRq5xx); break;
    default: break;
  }
  stats::RequestKeyView key;
  if (ex.cluster) {
    key.destinationService = ex.cluster->serviceHost;
    key.destinationVersion = ex.cluster->subset.empty() ? std::string_view("unknown") : ex.cluster->subset;
    key.cluster = ex.cluster->name;
  } else {
    key.destinationService = "unknown";
    key.destinationVersion = "unknown";
  }
  key.responseCode = uint16_t(ex.status);
  if (ex.faultDelayed) ex.flags = ex.flags == "-" ? std::string("DI") : "DI," + ex.flags;
  key.responseFlags = ex.flags;
  worker_.stats().recordRequest(key, durUs, ex.reqBodySent, ex.respBytes);
  if (worker_.accessLog()) {
    worker_.logLine(fmt::format(
        "[{}] \"{} {} HTTP/1.{}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {}\n",
        formatLogTime(), ex.method, ex.path, ex.http10 ? 0 : 1, ex.status, ex.flags, ex.reqBodySent,
        ex.respBytes, durUs / 1000, ex.respHeadDone ? std::to_string(ex.serviceTimeMs) : "-",
        ex.forwardedFor.empty() ? "-" : ex.forwardedFor, ex.userAgent.empty() ? "-" : ex.userAgent,
        ex.requestId, ex.authority, ex.upstreamHost.empty() ? "-" : ex.upstreamHost,
        ex.cluster ? ex.cluster->name : "-"));
  }
}

}  // namespace sluice::proxy
