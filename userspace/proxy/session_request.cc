// DownstreamConn: the consistent-hash key of a request, the context header
// templates render with, and the start of the mirrors the router chose.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdio>
#include <ctime>

#include "proxy/engine.h"
#include "proxy/stream.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"
#include "upstream/consistent_hash.h"

namespace sluice::proxy {

using stats::Counter;

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
void DownstreamConn::computeHashKey(const route::HashPolicy& hp, std::string_view path) {
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
      s.hashKey = upstream::hashKey(std::string_view(reinterpret_cast<const char*>(&peer_.sin_addr),
                                                      sizeof(peer_.sin_addr)));
      return;
    }
    case route::HashPolicy::Kind::Cookie:
      key = cookieValue(s.headers, hp.name);
      if (!key && hp.cookieTtl) {
        char value[17];
        std::snprintf(value, sizeof(value), "%016llx", static_cast<unsigned long long>(worker_.rng().next()));
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

void DownstreamConn::startShadows() {
  Stream& s = *stream_;
  uint64_t timeout = s.route->timeout && s.route->timeout->count() > 0 ? uint64_t(s.route->timeout->count()) : 0;
  for (Stream::PendingShadow& p : s.pendingShadows) {
    int i = worker_.pickEndpoint(*p.cluster);
    if (i < 0) continue;
    std::unique_ptr<ShadowStream> m =
        worker_.shadows().start(p.cluster->endpoints[size_t(i)], std::move(p.head), !s.reqDone, timeout,
                                p.cluster->upstream, worker_.clusters().limitsFor(*p.cluster));
    if (m && !s.reqDone) s.shadows.push_back(std::move(m));
  }
  s.pendingShadows.clear();
}

istio::HeaderContext DownstreamConn::headerContext() {
  Stream& s = *stream_;
  if (!s.startRealNs) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    // When the request began: a fault delay may have passed since.
    s.startRealNs = uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec) -
                    (worker_.clock().nowNs() - s.startNs);
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
  istio::HeaderContext ctx;
  ctx.startTimeRealNs = s.startRealNs;
  ctx.downstreamRemote = &peer_;
  ctx.downstreamLocal = &local_;
  ctx.protocol = s.http10 ? "HTTP/1.0" : "HTTP/1.1";
  ctx.requestId = s.requestId;
  ctx.requestHeaders = &s.headers;
  return ctx;
}

}  // namespace sluice::proxy
