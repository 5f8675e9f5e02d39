// The router: the last filter. It prepares what the upstream will see – the
// retry state, the path and authority rewrite, the destination's request
// header operations, the head itself and the mirrored heads – then hands
// the stream to the session's upstream side (forwardUpstream), which picks
// a host and a connection and runs the attempts.
#include "http/wire.h"
#include "proxy/filters/filters.h"
#include "proxy/request_util.h"
#include "proxy/stream.h"

namespace sluice::proxy {

namespace {

// Envoy sends a mirrored request with "-shadow" appended to the host part
// of its authority ("reviews:9080" -> "reviews-shadow:9080").
std::string shadowAuthority(std::string_view authority) {
  size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos || authority.find(']', colon) != std::string_view::npos)
    return std::string(authority) + "-shadow";
  return std::string(authority.substr(0, colon)) + "-shadow" + std::string(authority.substr(colon));
}

// Rolls each mirror's percentage and builds its head; the mirrors start
// when the request is dispatched.
void chooseMirrors(FilterCallbacks& cb, Stream& s, const HeadMutation& upstream, std::string_view authority) {
  for (const route::Route::Mirror& m : s.route->mirrors) {
    if (!m.cluster || m.cluster->missing || m.cluster->endpoints.empty()) continue;
    if (m.ppm < 1'000'000 && cb.rng().below(1'000'000) >= m.ppm) continue;
    std::string shadowHost = shadowAuthority(authority);
    HeadMutation mutation = upstream;
    mutation.authority = shadowHost;
    s.pendingShadows.push_back({m.cluster, buildUpstreamHead(s.head, s.headers, s.target, s.requestId, mutation)});
  }
}

class RouterFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "router"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    const route::Route& route = *s.route;
    s.retry.emplace(route.retry, s.head.method, s.headers, cb.clock(), cb.rng());
    s.keepReplay = route.retry.enabled();

    std::optional<std::string> newPath;
    if (route.rewrite) newPath = route.rewrite->rewritePath(s.target.path, s.matched);
    if (newPath && (newPath->empty() || newPath->front() != '/' ||
                    !http::wireError(http::WireField::Path, *newPath).empty())) {
      // A regex rewrite's captures come from the request: checked again here.
      s.keepAlive = false;
      cb.sendLocalReply(400, "rewritten path is not a valid request target", "DPE");
      return FilterStatus::Stop;
    }
    std::string_view authority = route.rewrite && !route.rewrite->authority().empty()
                                     ? std::string_view(route.rewrite->authority())
                                     : s.target.authority;
    std::optional<route::HeaderMutation::Rendered> rendered;
    if (s.wc && s.wc->requestHeaders) rendered.emplace(s.wc->requestHeaders->render(cb.headerContext()));
    HeadMutation mutation;
    if (newPath) {
      mutation.path = *newPath;
      mutation.originalPath = s.target.path;
    }
    if (authority.data() != s.target.authority.data()) mutation.authority = authority;
    mutation.headers = rendered ? &*rendered : nullptr;
    mutation.forwardedProto = s.forwardedProto;
    s.upstreamHead = buildUpstreamHead(s.head, s.headers, s.target, s.requestId, mutation);
    s.upstreamHead.resize(s.upstreamHead.size() - 2);  // each attempt adds its count, then the blank line
    if (!route.mirrors.empty() && !s.websocket)  // a mirror cannot hold a conversation
      chooseMirrors(cb, s, mutation, authority);
    cb.forwardUpstream();
    return FilterStatus::Stop;
  }
};

}  // namespace

const RequestFilter& routerFilter() {
  static const RouterFilter f;
  return f;
}

}  // namespace sluice::proxy
