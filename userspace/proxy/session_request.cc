// DownstreamConn: the per-request decisions taken from the request head
// before its bytes leave the input buffer – consistent-hash key, CORS,
// mirrors, the context header templates render with – and the start of the
// chosen mirrors.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdio>
#include <ctime>

#include "proxy/engine.h"
#include "proxy/exchange.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"
#include "upstream/consistent_hash.h"

namespace sluice::proxy {

using stats::Counter;

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

// corsPolicy: a preflight the policy answers is replied to here (false);
// otherwise the request goes on (true), with the CORS response headers kept
// for its response.
bool DownstreamConn::decideCors(std::string_view method) {
  Exchange& ex = *ex_;
  route::CorsPolicy::Decision d = ex.route->cors->evaluate(method, head_.headers);
  if (d.kind == route::CorsPolicy::Decision::Kind::NotCors) return true;
  worker_.stats().inc(d.originAllowed ? Counter::CorsOriginValid : Counter::CorsOriginInvalid);
  switch (d.kind) {
    case route::CorsPolicy::Decision::Kind::Preflight:
      if (!ex.reqDone) ex.keepAlive = false;
      localReply(200, "", "-", d.responseHeaders);
      return false;
    case route::CorsPolicy::Decision::Kind::PreflightBare:
      if (!ex.reqDone) ex.keepAlive = false;
      localReply(200, "", "-");
      return false;
    default:
      ex.corsHeaders = std::move(d.responseHeaders);
      return true;
  }
}

namespace {
// Envoy sends a mirrored request with "-shadow" appended to the host part
// of its authority ("reviews:9080" -> "reviews-shadow:9080").
std::string shadowAuthority(std::string_view authority) {
  size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos || authority.find(']', colon) != std::string_view::npos)
    return std::string(authority) + "-shadow";
  return std::string(authority.substr(0, colon)) + "-shadow" + std::string(authority.substr(colon));
}
}  // namespace

// Rolls each mirror's percentage and builds the mirrored head now, while the
// request head is readable; the mirrors start when the request is
// dispatched.
void DownstreamConn::chooseMirrors(const TargetParts& target, std::string_view authority,
                                   const route::HeaderMutation::Rendered* headers, std::string_view path,
                                   std::string_view originalPath) {
  Exchange& ex = *ex_;
  for (const route::Route::Mirror& m : ex.route->mirrors) {
    if (!m.cluster || m.cluster->missing || m.cluster->endpoints.empty()) continue;
    if (m.ppm < 1'000'000 && worker_.rng().below(1'000'000) >= m.ppm) continue;
    std::string shadowHost = shadowAuthority(authority);
    HeadMutation mutation;
    mutation.path = path;
    mutation.originalPath = originalPath;
    mutation.authority = shadowHost;
    mutation.headers = headers;
    ex.pendingShadows.push_back({m.cluster, buildUpstreamHead(head_, target, ex.requestId, mutation)});
  }
}

void DownstreamConn::startShadows() {
  Exchange& ex = *ex_;
  uint64_t timeout = ex.route->timeout && ex.route->timeout->count() > 0 ? uint64_t(ex.route->timeout->count()) : 0;
  for (Exchange::PendingShadow& p : ex.pendingShadows) {
    int i = worker_.pickEndpoint(*p.cluster, -1, nullptr);
    if (i < 0) continue;
    std::unique_ptr<ShadowStream> s =
        worker_.shadows().start(p.cluster->endpoints[size_t(i)], std::move(p.head), !ex.reqDone, timeout,
                                p.cluster->upstream.connectTimeoutNs);
    if (s && !ex.reqDone) ex.shadows.push_back(std::move(s));
  }
  ex.pendingShadows.clear();
}

route::HeaderContext DownstreamConn::headerContext() {
  Exchange& ex = *ex_;
  if (!ex.startRealNs) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ex.startRealNs = uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
  }
  if (!haveLocal_) {
    if (orig_.sin_port) {
      local_ = orig_;  // what the client dialled, as Envoy sees it behind a redirect
    } else {
      socklen_t len = sizeof(local_);
      if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&local_), &len) != 0) local_ = {};
    }
    haveLocal_ = true;
  }
  route::HeaderContext ctx;
  ctx.startTimeRealNs = ex.startRealNs;
  ctx.downstreamRemote = &peer_;
  ctx.downstreamLocal = &local_;
  ctx.protocol = ex.http10 ? "HTTP/1.0" : "HTTP/1.1";
  ctx.requestId = ex.requestId;
  ctx.requestHeaders = &head_.headers;
  return ctx;
}

}  // namespace sluice::proxy
