// HttpExchange, the request side: the checks of a request head, routing,
// the filter chain, the consistent-hash key of a request, the context
// header templates render with, and the start of the mirrors the router
// chose.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdio>
#include <ctime>

#include "proxy/engine.h"
#include "proxy/stream.h"
#include "http/wire.h"
#include "proxy/http_session.h"
#include "proxy/request_util.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"
#include "upstream/consistent_hash.h"

namespace sluice::proxy {

using stats::Counter;

HttpExchange::HttpExchange(Worker& worker, DownstreamInfo& info) : wk_(worker), info_(info) {}
HttpExchange::~HttpExchange() {
  // Backstop: no rate limit answer may reach an exchange that is gone.
  if (RedisClient* redis = wk_.redis()) redis->cancel(this);
  wk_.rls().cancel(this);
}

namespace {
// The value of `name` in Cookie headers ("a=1; b=2"), if any.
std::optional<std::string_view> cookieValue(const http::HeaderMap& headers, std::string_view name) {
  for (const http::HeaderMap::Field& h : headers) {
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
void HttpExchange::computeHashKey(const route::HashPolicy& hp, std::string_view path) {
  Stream& s = *stream_;
  std::optional<std::string_view> key;
  switch (hp.kind) {
    case route::HashPolicy::Kind::Header:
      if (const http::HeaderMap::Field* h = s.headers.find(hp.name)) key = h->value;
      break;
    case route::HashPolicy::Kind::QueryParam:
      key = queryValue(path, hp.name);
      break;
    case route::HashPolicy::Kind::SourceIp: {
      s.hasHashKey = true;
      s.hashKey = upstream::hashKey(std::string_view(reinterpret_cast<const char*>(&info_.peer.sin_addr),
                                                      sizeof(info_.peer.sin_addr)));
      return;
    }
    case route::HashPolicy::Kind::Cookie:
      key = cookieValue(s.headers, hp.name);
      if (!key && hp.cookieTtl) {
        char value[17];
        std::snprintf(value, sizeof(value), "%016llx", static_cast<unsigned long long>(wk_.rng().next()));
        s.hasHashKey = true;
        s.hashKey = upstream::hashKey(value);
        s.setCookie = hp.name + "=" + value;
        if (!hp.cookiePath.empty()) s.setCookie += "; Path=" + hp.cookiePath;
        // A ttl of 0 makes a session cookie.
        if (hp.cookieTtl->count() > 0)
          s.setCookie += "; Max-Age=" + std::to_string(std::max<int64_t>(1, hp.cookieTtl->count() / 1'000'000'000));
        s.setCookie += "; HttpOnly";
        return;
      }
      break;
  }
  if (key) {
    s.hasHashKey = true;
    s.hashKey = upstream::hashKey(*key);
  }
}

void HttpExchange::startShadows() {
  Stream& s = *stream_;
  uint64_t timeout = s.route->timeout && s.route->timeout->count() > 0 ? uint64_t(s.route->timeout->count()) : 0;
  const http::HeaderMap::Field* te = s.headers.find("te");
  for (Stream::PendingShadow& p : s.pendingShadows) {
    int i = wk_.pickEndpoint(*p.cluster);
    if (i < 0) continue;
    ShadowRequest rq{.head = std::move(p.head),
                     .hasBody = !s.reqDone,
                     .chunked = s.head.framing.kind == http::Framing::Kind::Chunked,
                     .clientHttp2 = protocol() == "HTTP/2",
                     .teTrailers = te && http::headerHasToken(te->value, "trailers"),
                     .timeoutNs = timeout};
    std::unique_ptr<ShadowStream> m = wk_.shadows().start(p.cluster->endpoints[size_t(i)], std::move(rq),
                                                          p.cluster->upstream, wk_.clusters().limitsFor(*p.cluster));
    if (m && !s.reqDone) s.shadows.push_back(std::move(m));
  }
  s.pendingShadows.clear();
}

istio::HeaderContext HttpExchange::headerContext() {
  Stream& s = *stream_;
  if (!s.startRealNs) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    // When the request began: a fault delay may have passed since.
    s.startRealNs = uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec) -
                    (wk_.clock().nowNs() - s.startNs);
  }
  if (!info_.haveLocal) {
    if (info_.orig.sin_port) {
      info_.local = info_.orig;  // what the client dialled, as Envoy sees it behind a redirect
    } else {
      socklen_t len = sizeof(info_.local);
      if (::getsockname(info_.fd, reinterpret_cast<sockaddr*>(&info_.local), &len) != 0) info_.local = {};
    }
    info_.haveLocal = true;
  }
  istio::HeaderContext ctx;
  ctx.startTimeRealNs = s.startRealNs;
  ctx.downstreamRemote = &info_.peer;
  ctx.downstreamLocal = &info_.local;
  ctx.protocol = protocol();
  ctx.requestId = s.requestId;
  ctx.requestHeaders = &s.headers;
  return ctx;
}

void HttpExchange::touchStream() {
  if (stream_) wk_.timers().schedule(stream_->idleTimer, wk_.engine().options().streamIdleTimeoutNs);
}

void HttpExchange::onStreamIdle() {
  if (!stream_) return;
  wk_.stats().inc(Counter::DownstreamRqIdleTimeout);
  if (!stream_->respHeadDone && !stream_->respStarted) {
    // As Envoy: 408 while no response head has arrived, a reset after.
    releaseUpstream(false);
    stream_->keepAlive = false;
    localReply(408, "stream timeout", "SI");
    return;
  }
  abortStream("SI");
  resetDownstream();
}

bool HttpExchange::acceptHead() {
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
  if (wk_.engine().overloaded()) {
    // Envoy's overload manager: new work is refused while memory is short.
    wk_.stats().inc(Counter::DownstreamRqOverload);
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
  // One pass for the two fields every request is asked about.
  const http::HeaderMap::Field* rid = nullptr;
  bool seenType = false;
  for (const http::HeaderMap::Field& f : s.headers) {
    if (f.name.size() == 12 && !rid && http::iequals(f.name, "x-request-id")) {
      rid = &f;
    } else if (f.name.size() == 12 && !seenType && http::iequals(f.name, "content-type")) {
      seenType = true;
      s.grpc = http::isGrpcContentType(f.value);
    }
  }
  if (rid && !rid->value.empty()) {
    s.requestId = rid->value;
  } else {
    newRequestId(wk_.rng(), s.requestIdStorage);
    s.requestId = std::string_view(s.requestIdStorage, sizeof(s.requestIdStorage));
  }
  return true;
}

const route::VirtualHost* HttpExchange::findVirtualHost() {
  Stream& s = *stream_;
  if (!s.snapshot) return nullptr;
  if (info_.gatewayKey) {
    // The server's port, not the one listened on (--gateway-port-offset):
    // match blocks and redirects name the server's.
    const route::GatewayListener* l = s.snapshot->findGatewayListener(info_.gatewayKey);
    if (!l) return nullptr;  // the listener left the configuration
    s.port = l->port;
    s.onGateway = true;
    if (!l->tls()) return l->routes.find(lowerHost(s.target.host));
    // HTTPS: the table of the server the ClientHello chose (chosen again
    // under this snapshot, by the same SNI).
    const route::GatewayTlsServer* server = info_.tls ? l->selectServer(info_.tls->serverName()) : nullptr;
    if (!server || server->credentials.get() != info_.tlsServerIdentity) {
      // The configuration moved this SNI to another server (or changed its
      // TLS): not answered under terms the handshake did not agree to. The
      // connection closes; the client's next one handshakes anew.
      s.keepAlive = false;
      return nullptr;
    }
    return server->routes.find(lowerHost(s.target.host));
  }
  // The original destination (eBPF capture) outranks the Host/URI port.
  s.port = info_.origPort ? info_.origPort : s.target.port;
  return s.snapshot->findVirtualHost(s.port, lowerHost(s.target.host), &s.port);
}

bool HttpExchange::resolveRoute() {
  Stream& s = *stream_;
  s.snapshot = wk_.snapshot();
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
  view.scheme = info_.tls ? "https" : "http";  // :scheme, as the client reached us
  view.port = s.port;
  view.headers = &s.headers;
  s.vhost = vh;
  if (vh) s.route = vh->match(view, &s.matched);
  if (!s.route) {
    wk_.stats().inc(Counter::NoRoute);
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
                                 : wk_.rng().next());
  s.cluster = s.wc ? s.wc->cluster : nullptr;
  if (s.cluster && s.cluster->hash && !stickyHash) computeHashKey(*s.cluster->hash, s.target.path);
  return true;
}

void HttpExchange::runFilters() {
  const std::span<const RequestFilter* const> chain = requestFilters();
  while (stream_ && stream_->filterIndex < chain.size()) {
    if (chain[stream_->filterIndex]->onRequestHead(*this) == FilterStatus::Stop) return;
    ++stream_->filterIndex;
  }
}

void HttpExchange::onFilterResume() {
  if (!stream_) return;
  if (stream_->rateLimit.state == Stream::RateLimitCall::State::Pending) {
    // The filter's timeout came before the answer: the answer, when it
    // comes, is dropped.
    cancelRateLimitCall();
    stream_->rateLimit.state = Stream::RateLimitCall::State::Failed;
  }
  const std::span<const RequestFilter* const> chain = requestFilters();
  if (chain[stream_->filterIndex]->onResume(*this) == FilterStatus::Stop) return;
  ++stream_->filterIndex;
  runFilters();
}

core::Rng& HttpExchange::rng() { return wk_.rng(); }
const core::Clock& HttpExchange::clock() const { return wk_.clock(); }
stats::StatsShard& HttpExchange::stats() { return wk_.stats(); }

void HttpExchange::pauseFor(uint64_t ns) { wk_.timers().schedule(stream_->resumeTimer, ns); }

bool HttpExchange::countInRedis(std::vector<RedisClient::Increment> keys, uint64_t timeoutNs) {
  RedisClient* redis = wk_.redis();
  const uint64_t id = redis ? redis->increment(std::move(keys), this) : 0;
  if (!id) return false;
  stream_->rateLimit.id = id;
  stream_->rateLimit.viaService = false;
  // The filter's timeout; none (0): the stream idle timeout bounds the
  // wait, and the client drops a Redis that stops answering.
  if (timeoutNs) wk_.timers().schedule(stream_->resumeTimer, timeoutNs);
  return true;
}

uint64_t HttpExchange::unixSeconds() const { return uint64_t(::time(nullptr)); }

bool HttpExchange::hasRedis() const { return wk_.redis() != nullptr; }

bool HttpExchange::callRateLimitService(const route::Cluster& cluster, std::string_view domain,
                                        const std::vector<route::Descriptor>& descriptors, uint64_t timeoutNs) {
  // The call's own deadline: the filter's timeout, or (none) the stream
  // idle timeout, so a service that never answers holds nothing forever.
  const uint64_t deadline = timeoutNs ? timeoutNs : wk_.engine().options().streamIdleTimeoutNs;
  const uint64_t id = wk_.rls().call(cluster, domain, descriptors, deadline, this);
  if (!id) return false;
  stream_->rateLimit.id = id;
  stream_->rateLimit.viaService = true;
  if (timeoutNs) wk_.timers().schedule(stream_->resumeTimer, timeoutNs);
  return true;
}

void HttpExchange::cancelRateLimitCall() {
  if (stream_->rateLimit.viaService) {
    wk_.rls().cancel(stream_->rateLimit.id);
  } else if (RedisClient* redis = wk_.redis()) {
    redis->cancel(stream_->rateLimit.id);
  }
}

void HttpExchange::onRedisCounts(uint64_t id, std::span<const int64_t> counts, bool ok) {
  if (!stream_ || stream_->rateLimit.state != Stream::RateLimitCall::State::Pending || stream_->rateLimit.id != id)
    return;  // not this stream's call (cancelled calls are not delivered; this is a second line)
  Stream::RateLimitCall& call = stream_->rateLimit;
  call.state = ok ? Stream::RateLimitCall::State::Counted : Stream::RateLimitCall::State::Failed;
  call.counts.assign(counts.begin(), counts.end());
  stream_->resumeTimer.cancel();
  onFilterResume();
}

void HttpExchange::sendLocalReply(int status, std::string_view body, std::string_view flags,
                                    const http::HeaderMap* extraHeaders) {
  // The body was not read: the connection cannot carry another request.
  if (!stream_->reqDone) stream_->keepAlive = false;
  localReply(status, body, flags, extraHeaders);
}

void HttpExchange::forwardUpstream() {
  Stream& s = *stream_;
  if (!s.cluster || s.cluster->missing || s.cluster->endpoints.empty()) {
    wk_.stats().inc(Counter::NoHealthyUpstream);
    if (!s.reqDone) s.keepAlive = false;
    localReply(503, "no healthy upstream", s.cluster && !s.cluster->missing ? "UH" : "NC");
    return;
  }
  s.limits = wk_.clusters().limitsFor(*s.cluster);
  if (auto t = upstream::acquire(s.limits, upstream::ClusterLimits::kRequests)) {
    s.requestToken = std::move(*t);
  } else {
    overflow(false);
    return;
  }
  using Protocol = route::UpstreamSettings::Protocol;
  const Protocol proto = s.cluster->upstream.protocol;
  // A WebSocket upgrade needs HTTP/1.1 to the upstream whatever the policy.
  s.upstreamH2 = !s.websocket && s.cluster->lb != route::LbPolicy::Passthrough &&
                 (proto == Protocol::Http2 || (proto == Protocol::ClientProtocol && protocol() == "HTTP/2"));
  if (s.expectContinue) sendContinue();
  if (!s.pendingShadows.empty()) startShadows();
  if (s.reqDone) onRequestComplete();
  dispatch();
}

}  // namespace sluice::proxy
