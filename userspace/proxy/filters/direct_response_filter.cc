// VirtualService directResponse and redirect: the route answers itself, with
// the route's response header operations, and the request goes no further.
#include "http/wire.h"
#include "proxy/filters/filters.h"
#include "proxy/request_util.h"
#include "proxy/stream.h"

namespace sluice::proxy {

namespace {

class DirectResponseFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "direct_response"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    const route::Route& route = *s.route;
    if (!route.directResponse && !route.redirect) return FilterStatus::Continue;
    http::HeaderMap extra;
    if (route.redirect) {
      std::string location = redirectLocation(*route.redirect, s.target, s.port, s.forwardedProto.empty() ? "http" : s.forwardedProto);
      // Built from the request: checked before it becomes a header line.
      if (!http::wireError(http::WireField::HeaderValue, location).empty()) {
        s.keepAlive = false;
        cb.sendLocalReply(400, "invalid redirect target", "DPE");
        return FilterStatus::Stop;
      }
      extra.addCopy("location", std::move(location));
    }
    if (route.localResponseHeaders) route.localResponseHeaders->render(cb.headerContext()).applyTo(extra);
    if (route.directResponse) {
      cb.sendLocalReply(int(route.directResponse->status), route.directResponse->body, "-", &extra);
    } else {
      cb.sendLocalReply(int(route.redirect->code), "", "-", &extra);
    }
    return FilterStatus::Stop;
  }
};

}  // namespace

const RequestFilter& directResponseFilter() {
  static const DirectResponseFilter f;
  return f;
}

}  // namespace sluice::proxy
