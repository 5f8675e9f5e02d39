#include "proxy/http_session.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <cstring>

#include "proxy/engine.h"
#include "proxy/request_util.h"
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {
// A request waiting for a connection slot looks again this often.
constexpr uint64_t kPendingPollNs = 1'000'000;

// Past this many unsent bytes on the far side, stop reading from the near
// side: bodies stream with bounded memory instead of being buffered whole.
constexpr size_t kHighWater = 1 << 20;
// Bytes of pipelined requests we are willing to hold while one is in flight.
constexpr size_t kMaxBufferedInput = 128 * 1024;

using stats::Counter;

}  // namespace

struct DownstreamConn::Exchange {
  std::shared_ptr<const route::Snapshot> snapshot;
  const route::Route* route = nullptr;
  const route::Cluster* cluster = nullptr;
  std::string method, authority, path, requestId, userAgent, forwardedFor;
  std::string upstreamHead;
  bool isHead = false;
  bool http10 = false;
  bool keepAlive = true;
  http::BodyFramer reqBody;
  bool reqDone = false;
  uint64_t reqBodySent = 0;
  http::BodyFramer respBody;
  bool respHeadDone = false;
  bool respStarted = false;  // bytes of the response went downstream
  bool dechunk = false;
  bool closeAfter = false;
  int endpoint = -1;
  EndpointState* ep = nullptr;
  // Outlier state of `cluster` when it has any: every attempt's outcome goes
  // there.
  std::shared_ptr<upstream::ClusterHealth> health;
  // Connection-pool circuit breakers of `cluster`: this request's unit of
  // http2MaxRequests, of http1MaxPendingRequests while it waits for a
  // connection, of maxRetries once it has been retried.
  std::shared_ptr<upstream::ClusterLimits> limits;
  upstream::LimitToken requestToken, pendingToken, retryToken;
  // Consistent hashing: this request's key, and the cookie to hand out when
  // the hash cookie was missing and the policy generates one.
  bool hasHashKey = false;
  uint64_t hashKey = 0;
  std::string setCookie;
  std::string upstreamHost;
  int retriesLeft = 2;        // Istio's default policy: attempts 2 on connect-failure
  bool raceRetried = false;   // one silent retry for a reused connection closed under us
  uint64_t startNs = 0;
  uint64_t upstreamSentNs = 0;
  uint64_t serviceTimeMs = 0;
  int status = 0;
  std::string flags = "-";
  uint64_t respBytes = 0;

  // Back to the state of a new exchange, keeping the strings' capacity: one
  // Exchange per connection is reused request after request.
  void clear() {
    snapshot.reset();
    route = nullptr;
    cluster = nullptr;
    for (std::string* str : {&method, &authority, &path, &requestId, &userAgent, &forwardedFor,
                             &upstreamHead, &upstreamHost}) {
      str->clear();
    }
    isHead = http10 = false;
    keepAlive = true;
    reqBody.reset({});
    reqDone = false;
    reqBodySent = 0;
    respBody.reset({});
    respHeadDone = respStarted = dechunk = closeAfter = false;
    endpoint = -1;
    ep = nullptr;
    health.reset();
    limits.reset();
    requestToken.reset();
    pendingToken.reset();
    retryToken.reset();
    hasHashKey = false;
    hashKey = 0;
    setCookie.clear();
    retriesLeft = 2;
    raceRetried = false;
    startNs = upstreamSentNs = serviceTimeMs = 0;
    status = 0;
    flags.assign("-");
    respBytes = 0;
  }
};

// ---------------------------------------------------------------- upstream

// tcp.tcpKeepalive on an upstream socket: probes after `time` idle, every
// `interval`, `probes` of them; unset fields keep the kernel's values.
void applyKeepalive(int fd, const route::UpstreamSettings& s) {
  if (!s.keepalive) return;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  auto secs = [](uint64_t ns) { return int(std::max<uint64_t>(1, ns / 1'000'000'000)); };
  if (s.keepalive->timeNs) {
    int v = secs(s.keepalive->timeNs);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
  }
  if (s.keepalive->intervalNs) {
    int v = secs(s.keepalive->intervalNs);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
  }
  if (s.keepalive->probes) {
    int v = int(s.keepalive->probes);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
  }
}

UpstreamConn::UpstreamConn(Worker& worker, int fd, const route::Endpoint& ep, EndpointState& state,
                           upstream::LimitToken connToken, const route::UpstreamSettings& settings)
    : Connection(worker, fd),
      state_(state),
      connToken_(std::move(connToken)),
      settings_(settings),
      createdNs_(worker.clock().nowNs()),
      addr_(ep.sockaddr),
      key_(ep.key) {
  worker_.stats().inc(Counter::UpstreamCxTotal);
  worker_.stats().inc(Counter::UpstreamCxActive);
}

void UpstreamConn::connect() {
  io_uring_sqe* s = worker_.ring().sqeFor(connectOp_);
  io_uring_prep_connect(s, fd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_));
  track(connectOp_);
  uint64_t timeout = settings_.connectTimeoutNs ? settings_.connectTimeoutNs
                                                : worker_.engine().options().connectTimeoutNs;
  worker_.timers().schedule(connectTimer_, timeout);
}

void UpstreamConn::onOtherCompletion(uint8_t op, int32_t res) {
  if (op != kConnect) return;
  connectTimer_.cancel();
  if (res < 0) {
    worker_.stats().inc(Counter::UpstreamCxConnectFail);
    DownstreamConn* o = owner_;
    owner_ = nullptr;
    close();
    if (o) o->onUpstreamConnectFailed(false);
    return;
  }
  connected_ = true;
  if (owner_) owner_->onUpstreamConnected();
}

void UpstreamConn::onConnectTimeout() {
  worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
  worker_.stats().inc(Counter::UpstreamCxConnectFail);
  DownstreamConn* o = owner_;
  owner_ = nullptr;
  close();
  if (o) o->onUpstreamConnectFailed(true);
}

void UpstreamConn::attach(DownstreamConn* owner) {
  if (pooled_) removeFromPool();
  idleTimer_.cancel();
  owner_ = owner;
  if (requestsServed > 0) {
    reused_ = true;
    worker_.stats().inc(Counter::UpstreamCxReused);
  }
}

void UpstreamConn::release() {
  owner_ = nullptr;
  ++requestsServed;
  if (const upstream::ClusterLimits* l = connToken_.limits()) {
    // maxRequestsPerConnection used up, or requests of this cluster waiting
    // for a connection slot (possibly on another worker, which cannot use
    // this one): close, so the slot is free.
    uint32_t perConn = l->limits().maxRequestsPerConnection;
    if ((perConn && requestsServed >= perConn) || l->inUse(upstream::ClusterLimits::kPending) > 0) {
      close();
      return;
    }
  }
  // tcp.maxConnectionDuration: an old connection is not reused.
  if (settings_.maxConnectionDurationNs &&
      worker_.clock().nowNs() - createdNs_ >= settings_.maxConnectionDurationNs) {
    close();
    return;
  }
  pooled_ = true;
  state_.idle.push_back(this);
  // Keep reading while idle: a close from the server (or stray bytes) must
  // take the connection out of the pool before a request is sent on it.
  startReading();
  worker_.timers().schedule(idleTimer_, settings_.idleTimeoutNs ? settings_.idleTimeoutNs
                                                                : worker_.engine().options().idleTimeoutNs);
}

void UpstreamConn::removeFromPool() {
  auto& idle = state_.idle;
  for (size_t i = 0; i < idle.size(); ++i) {
    if (idle[i] == this) {
      idle[i] = idle.back();
      idle.pop_back();
      break;
    }
  }
  pooled_ = false;
}

void UpstreamConn::onIdleTimeout() {
  if (pooled_) {
    removeFromPool();
    close();
  }
}

void UpstreamConn::onData() {
  if (owner_) {
    owner_->onUpstreamData();
  } else if (pooled_) {
    // An idle HTTP/1.1 connection must be silent; bytes here mean the
    // server is confused. Drop the connection rather than mis-attribute them.
    removeFromPool();
    close();
  }
}

void UpstreamConn::onPeerClosed(int err) {
  if (pooled_) removeFromPool();
  DownstreamConn* o = owner_;
  owner_ = nullptr;
  close();
  if (o) o->onUpstreamClosed(err);
}

void UpstreamConn::onSendProgress() {
  if (owner_) owner_->touchStream();
}

void UpstreamConn::onDrained() {
  if (owner_) owner_->onUpstreamDrained();
}

void UpstreamConn::onDestroy() {
  if (pooled_) removeFromPool();
  worker_.stats().dec(Counter::UpstreamCxActive);
}

// -------------------------------------------------------------- downstream

DownstreamConn::DownstreamConn(Worker& worker, int fd, const sockaddr_in& peer,
                               const sockaddr_in* orig)
    : Connection(worker, fd), peer_(peer), origPort_(orig ? ntohs(orig->sin_port) : 0) {
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

void DownstreamConn::onDestroy() {
  if (ex_) abortExchange("DC");
  worker_.stats().dec(Counter::DownstreamCxActive);
  worker_.removeDownstream(this);
}

void DownstreamConn::onIdleTimeout() {
  if (!ex_) close();
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
  // A clean EOF after a complete request is a half-close (`curl` with
  // --no-keepalive over some tools, `nc -N`): answer it, then close. An EOF
  // mid-request or a reset means the client went away: whatever is in
  // flight is abandoned, Envoy's "downstream connection termination" (DC).
  if (err == 0 && ex_ && ex_->reqDone) {
    halfClosed_ = true;
    return;
  }
  if (ex_) abortExchange("DC");
  if (err == 0) {
    closeAfterFlush();  // a local reply (e.g. 400) may still be queued
  } else {
    close();
  }
}

void DownstreamConn::onDrained() {
  if (up_ && up_->readingPaused() && ex_ && ex_->respHeadDone) {
    up_->startReading();
    forwardResponseBody();
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
  if (st == http::ParseStatus::Incomplete) return false;
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
  ex.reqBody.reset(head_.framing);
  ex.reqDone = head_.framing.kind == http::Framing::Kind::None;

  TargetParts target;
  if (!splitTarget(head_.target, head_.host, target)) {
    ex.keepAlive = ex.keepAlive && ex.reqDone;
    consumeInput(head_.headBytes);
    localReply(head_.method == "CONNECT" ? 501 : 400,
               head_.method == "CONNECT" ? "CONNECT is not supported" : "invalid request target",
               "DPE");
    return !closing();
  }
  ex.authority.assign(target.authority);
  ex.path.assign(target.path);
  if (const http::Header* h = head_.find("user-agent")) ex.userAgent.assign(h->value);
  if (const http::Header* h = head_.find("x-forwarded-for")) ex.forwardedFor.assign(h->value);
  const http::Header* rid = head_.find("x-request-id");
  ex.requestId = rid && !rid->value.empty() ? std::string(rid->value) : newRequestId(worker_.rng());

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
  if (vh) ex.route = vh->match(view);

  bool expect = head_.expectContinue;
  ex.upstreamHead = buildUpstreamHead(head_, target, ex.requestId);
  consumeInput(head_.headBytes);

  if (!ex.route) {
    worker_.stats().inc(Counter::NoRoute);
    if (!ex.reqDone) ex.keepAlive = false;
    localReply(404, "", "NR");
    return !closing();
  }
  const config::HTTPRoute* spec = ex.route->spec;
  if (spec && (spec->directResponse || spec->redirect)) {
    if (!ex.reqDone) ex.keepAlive = false;
    if (spec->directResponse) {
      localReply(int(spec->directResponse->status), spec->directResponse->body.value_or(""), "-");
    } else {
      std::string location = redirectLocation(*spec->redirect, target, port);
      localReply(int(spec->redirect->redirectCode), "", "-", "location: " + location + "\r\n");
    }
    return !closing();
  }
  // sluice.io/sticky-weighted-split: the destination's consistent-hash key
  // also makes the weighted choice, so one user stays on one side of a
  // canary while the split still holds across users. The key is mixed once
  // more so the split and the ring position inside the subset stay
  // independent.
  const route::HashPolicy* stickyHash = nullptr;
  if (ex.route->stickySplit) {
    for (const route::WeightedCluster& w : ex.route->clusters) {
      if (w.cluster && w.cluster->hash) {
        stickyHash = &*w.cluster->hash;
        break;
      }
    }
    if (stickyHash) computeHashKey(*stickyHash, target.path);
  }
  const route::WeightedCluster* wc =
      ex.route->pick(ex.hasHashKey ? upstream::hashKey(std::string_view(
                                         reinterpret_cast<const char*>(&ex.hashKey), sizeof(ex.hashKey)))
                                   : worker_.rng().next());
  ex.cluster = wc ? wc->cluster : nullptr;
  if (!ex.cluster || ex.cluster->missing || ex.cluster->endpoints.empty()) {
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!ex.reqDone) ex.keepAlive = false;
    if (ex.cluster && !ex.cluster->missing) {
      localReply(503, "no healthy upstream", "UH");
    } else {
      localReply(503, "no healthy upstream", "NC");
    }
    return !closing();
  }
  if (ex.cluster->hash && !stickyHash) computeHashKey(*ex.cluster->hash, target.path);
  ex.limits = worker_.limitsFor(*ex.cluster);
  if (auto t = upstream::acquire(ex.limits, upstream::ClusterLimits::kRequests)) {
    ex.requestToken = std::move(*t);
  } else {
    overflow(false);
    return !closing();
  }
  if (expect) write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
  if (ex.route->timeout && ex.route->timeout->count() > 0) {
    worker_.timers().schedule(routeTimer_, uint64_t(ex.route->timeout->count()));
  }
  dispatch();
  return !closing();
}

void DownstreamConn::dispatch() {
  Exchange& ex = *ex_;
  int avoid = ex.endpoint;
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
    ex.endpoint = worker_.pickEndpoint(*ex.cluster, avoid, ex.hasHashKey ? &ex.hashKey : nullptr);
  }
  if (!toOriginal && ex.endpoint < 0) {  // every host ejected, and no panic threshold
    worker_.stats().inc(Counter::NoHealthyUpstream);
    if (!ex.reqDone) ex.keepAlive = false;
    localReply(503, "no healthy upstream", "UH");
    return;
  }
  if (!ex.health) ex.health = worker_.healthFor(*ex.cluster);
  const route::Endpoint& ep = toOriginal ? passthrough : ex.cluster->endpoints[size_t(ex.endpoint)];
  ex.ep = &worker_.endpointState(ep);
  ex.ep->incActive();
  ex.upstreamHost = ep.key;
  worker_.stats().inc(Counter::UpstreamRqTotal);
  if (!ex.ep->idle.empty()) {
    ex.pendingToken.reset();
    up_ = ex.ep->idle.back();
    up_->attach(this);
    sendUpstreamHead();
    return;
  }
  // A new connection needs a unit of maxConnections; without one the request
  // waits (within http1MaxPendingRequests) for a connection to free up.
  auto conn = upstream::acquire(ex.limits, upstream::ClusterLimits::kConnections);
  if (!conn) {
    ex.limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
    worker_.stats().inc(Counter::UpstreamCxOverflow);
    ex.ep->decActive();
    ex.ep = nullptr;
    ex.endpoint = -1;
    if (!ex.pendingToken) {
      auto pending = upstream::acquire(ex.limits, upstream::ClusterLimits::kPending);
      if (!pending) {
        overflow(false);
        return;
      }
      ex.pendingToken = std::move(*pending);
    }
    worker_.timers().schedule(pendingTimer_, kPendingPollNs);
    return;
  }
  ex.pendingToken.reset();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ex.ep->decActive();
    ex.ep = nullptr;
    retryOrFail("UF", 503, "upstream connect error or disconnect/reset before headers. reset reason: local socket error");
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  applyKeepalive(fd, ex.cluster->upstream);
  up_ = new UpstreamConn(worker_, fd, ep, *ex.ep, std::move(*conn), ex.cluster->upstream);
  up_->attach(this);
  up_->connect();
}

void DownstreamConn::onUpstreamConnected() {
  if (ex_) sendUpstreamHead();
}

void DownstreamConn::sendUpstreamHead() {
  Exchange& ex = *ex_;
  ex.upstreamSentNs = worker_.clock().nowNs();
  up_->write(std::string_view(ex.upstreamHead));
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
    http::BodyFramer::Step step = ex.reqBody.consume(input_.data(), input_.size());
    if (step.status == http::BodyFramer::Status::Error) {
      worker_.stats().inc(Counter::DownstreamRqBad);
      // The client gets a 400 (the upstream, which saw a truncated body, is
      // closed by localReply); after the response has started it gets a reset.
      ex.keepAlive = false;
      input_.clear();
      localReply(400, "invalid request body", "DPE");
      return;
    }
    if (step.consumed > 0) {
      up_->write(std::string_view(input_.data(), step.consumed));
      ex.reqBodySent += step.consumed;
      consumeInput(step.consumed);
    }
    if (step.status == http::BodyFramer::Status::Done) ex.reqDone = true;
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
    if (ex_ && !ex_->reqDone && up_) forwardRequestBody();
  }
}

void DownstreamConn::onUpstreamData() {
  if (!ex_ || !up_) return;
  touchStream();
  if (!ex_->respHeadDone && !handleResponseHead()) return;
  forwardResponseBody();
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
    if (resp_.status >= 100 && resp_.status < 200) {
      // Interim responses: 100 Continue was already answered by us.
      up_->consume(resp_.headBytes);
      continue;
    }
    break;
  }
  ex.respHeadDone = true;
  ex.status = resp_.status;
  reportOutcome(upstream::outcomeOf(resp_.status));
  ex.serviceTimeMs = (worker_.clock().nowNs() - ex.upstreamSentNs) / 1'000'000;
  ex.dechunk = ex.http10 && resp_.framing.kind == http::Framing::Kind::Chunked;
  bool untilClose = resp_.framing.kind == http::Framing::Kind::UntilClose;
  ex.closeAfter = !ex.keepAlive || draining_ || halfClosed_ || ex.dechunk || untilClose;
  ex.respBody.reset(resp_.framing);
  std::string head =
      buildDownstreamHead(resp_, ex.serviceTimeMs, ex.closeAfter, ex.http10, ex.dechunk, ex.setCookie);
  up_->consume(resp_.headBytes);
  ex.respBytes += head.size();
  ex.respStarted = true;
  routeTimer_.cancel();
  write(std::move(head));
  return true;
}

void DownstreamConn::forwardResponseBody() {
  Exchange& ex = *ex_;
  std::string& in = up_->input();
  if (!ex.respBody.done() && !in.empty()) {
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step =
        ex.respBody.consume(in.data(), in.size(), ex.dechunk ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      abortExchange("UPE");
      close();
      return;
    }
    if (ex.dechunk) {
      for (std::string_view p : payload) write(p);
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

void DownstreamConn::onUpstreamClosed(int err) {
  const bool wasReused = up_ && up_->reused();
  up_ = nullptr;  // the connection closed itself
  if (!ex_) return;
  Exchange& ex = *ex_;
  if (ex.ep) {
    ex.ep->decActive();
    ex.ep = nullptr;
  }
  if (ex.respHeadDone) {
    if (err == 0 && ex.respBody.framing().kind == http::Framing::Kind::UntilClose) {
      finishExchange(false);
    } else {
      abortExchange("UC");
      close();
    }
    return;
  }
  worker_.stats().inc(Counter::UpstreamRqResetBeforeResponse);
  // A pooled connection the server closed just as we reused it: the request
  // never reached the application, so send it again on a new connection.
  // A fresh connection closed by the server means the application saw the
  // request and refused it: sending it again would duplicate it (Istio's
  // default retryOn has no "reset").
  if (wasReused && !ex.raceRetried && ex.reqBodySent == 0) {
    ex.raceRetried = true;
    worker_.stats().inc(Counter::UpstreamRqRetry);
    ex.endpoint = -1;
    dispatch();
    return;
  }
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  if (!ex.reqDone) ex.keepAlive = false;
  localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", "UC");
}

void DownstreamConn::onUpstreamConnectFailed(bool timeout) {
  up_ = nullptr;
  if (!ex_) return;
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  if (ex_->ep) {
    ex_->ep->decActive();
    ex_->ep = nullptr;
  }
  retryOrFail("UF", 503,
              timeout ? "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
                      : "upstream connect error or disconnect/reset before headers. reset reason: connection failure");
}

void DownstreamConn::retryOrFail(std::string_view flags, int status, std::string_view body) {
  Exchange& ex = *ex_;
  bool mayRetry = ex.retriesLeft > 0 && ex.reqBodySent == 0;
  if (mayRetry && !ex.retryToken) {
    // maxRetries bounds retries in flight across the cluster.
    if (auto t = upstream::acquire(ex.limits, upstream::ClusterLimits::kRetries)) {
      ex.retryToken = std::move(*t);
    } else {
      ex.limits->rqRetryOverflow.fetch_add(1, std::memory_order_relaxed);
      worker_.stats().inc(Counter::UpstreamRqRetryOverflow);
      mayRetry = false;
    }
  }
  if (mayRetry) {
    ex.retriesLeft--;
    worker_.stats().inc(Counter::UpstreamRqRetry);
    // Envoy's back-off: full jitter over a 25 ms base.
    uint64_t backoffNs = worker_.rng().below(25'000'000) + 1;
    worker_.timers().schedule(retryTimer_, backoffNs);
    return;
  }
  if (!ex.reqDone) ex.keepAlive = false;
  ex.flags = std::string(flags) == "UF" && ex.retriesLeft < 2 ? "URX,UF" : std::string(flags);
  localReply(status, body, ex.flags);
}

void DownstreamConn::onRetryTimer() {
  if (ex_ && !up_) dispatch();
}

void DownstreamConn::onPendingTimer() {
  if (ex_ && !up_ && ex_->pendingToken) dispatch();
}

// A connection-pool circuit breaker tripped: answer at once, as Envoy does.
void DownstreamConn::overflow(bool) {
  Exchange& ex = *ex_;
  if (ex.limits) ex.limits->rqPendingOverflow.fetch_add(1, std::memory_order_relaxed);
  worker_.stats().inc(Counter::UpstreamRqPendingOverflow);
  ex.pendingToken.reset();
  if (!ex.reqDone) ex.keepAlive = false;
  localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", "UO",
             "x-envoy-overloaded: true\r\n");
}

void DownstreamConn::onRouteTimeout() {
  if (!ex_ || ex_->respStarted) return;
  worker_.stats().inc(Counter::UpstreamRqTimeout);
  if (up_) reportOutcome(upstream::Outcome::LocalOriginFailure);  // the host never answered
  releaseUpstream(false);
  retryTimer_.cancel();
  if (!ex_->reqDone) ex_->keepAlive = false;
  localReply(504, "upstream request timeout", "UT");
}

namespace {
// The value of `name` in Cookie headers ("a=1; b=2"), if any.
std::optional<std::string_view> cookieValue(const std::vector<http::Header>& headers, std::string_view name) {
  for (const http::Header& h : headers) {
    if (!http::iequals(h.name, "cookie")) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = v.find(';');
      std::string_view pair = v.substr(0, semi);
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
      if (semi == std::string_view::npos) break;
      v.remove_prefix(semi + 1);
    }
  }
  return std::nullopt;
}

std::optional<std::string_view> queryValue(std::string_view path, std::string_view name) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = path.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}
}  // namespace

// DestinationRule consistentHash: what this request hashes on. No key (no
// such header, say) leaves the choice to chance, as Envoy does; a missing
// cookie with a ttl is generated and set on the response, so the client's
// next request lands on the same host.
void DownstreamConn::computeHashKey(const route::HashPolicy& hp, std::string_view path) {
  Exchange& ex = *ex_;
  std::optional<std::string_view> key;
  switch (hp.kind) {
    case route::HashPolicy::Kind::Header:
      if (const http::Header* h = head_.find(hp.name)) key = h->value;
      break;
    case route::HashPolicy::Kind::QueryParam:
      key = queryValue(path, hp.name);
      break;
    case route::HashPolicy::Kind::SourceIp: {
      ex.hasHashKey = true;
      ex.hashKey = upstream::hashKey(std::string_view(reinterpret_cast<const char*>(&peer_.sin_addr),
                                                      sizeof(peer_.sin_addr)));
      return;
    }
    case route::HashPolicy::Kind::Cookie:
      key = cookieValue(head_.headers, hp.name);
      if (!key && hp.cookieTtl) {
        char value[17];
        std::snprintf(value, sizeof(value), "%016llx", static_cast<unsigned long long>(worker_.rng().next()));
        ex.hasHashKey = true;
        ex.hashKey = upstream::hashKey(value);
        ex.setCookie = "set-cookie: " + hp.name + "=" + value;
        if (!hp.cookiePath.empty()) ex.setCookie += "; Path=" + hp.cookiePath;
        // A ttl of 0 makes a session cookie.
        if (hp.cookieTtl->count() > 0)
          ex.setCookie += "; Max-Age=" + std::to_string(std::max<int64_t>(1, hp.cookieTtl->count() / 1'000'000'000));
        ex.setCookie += "; HttpOnly\r\n";
        return;
      }
      break;
  }
  if (key) {
    ex.hasHashKey = true;
    ex.hashKey = upstream::hashKey(*key);
  }
}

void DownstreamConn::reportOutcome(upstream::Outcome o) {
  Exchange* ex = ex_.get();
  if (ex && ex->health && ex->endpoint >= 0)
    ex->health->report(size_t(ex->endpoint), o, worker_.clock().nowNs());
}

void DownstreamConn::releaseUpstream(bool reusable) {
  Exchange* ex = ex_.get();
  if (ex && ex->ep) {
    ex->ep->decActive();
    ex->ep = nullptr;
  }
  if (!up_) return;
  UpstreamConn* up = up_;
  up_ = nullptr;
  if (reusable && !draining_) {
    up->release();
  } else {
    up->detach();
    up->close();
  }
}

void DownstreamConn::localReply(int status, std::string_view body, std::string_view flags,
                                std::string_view extraHeaders) {
  Exchange& ex = *ex_;
  routeTimer_.cancel();
  retryTimer_.cancel();
  pendingTimer_.cancel();
  if (ex.respStarted) {
    // Too late for a clean answer: the client sees a reset.
    abortExchange(flags);
    close();
    return;
  }
  ex.status = status;
  ex.flags.assign(flags);
  ex.closeAfter = !ex.keepAlive || draining_ || halfClosed_;
  std::string out = buildLocalReply(status, body, ex.closeAfter, ex.isHead, extraHeaders);
  ex.respBytes += out.size();
  ex.respStarted = true;
  write(std::move(out));
  finishExchange(false);
}

void DownstreamConn::finishExchange(bool upstreamReusable) {
  Exchange& ex = *ex_;
  routeTimer_.cancel();
  retryTimer_.cancel();
  pendingTimer_.cancel();
  releaseUpstream(upstreamReusable);
  logAndCount();
  bool keep = ex.keepAlive && ex.reqDone && !ex.closeAfter && !draining_ && !halfClosed_;
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
  routeTimer_.cancel();
  retryTimer_.cancel();
  releaseUpstream(false);
  logAndCount();
  retireExchange();
}

void DownstreamConn::retireExchange() {
  streamTimer_.cancel();
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
