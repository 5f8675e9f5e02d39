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
    const config::HTTPRoute* spec = s.route->spec;
    if (!spec || (!spec->directResponse && !spec->redirect)) return FilterStatus::Continue;
    std::string extra;
    if (spec->redirect) {
      std::string location = redirectLocation(*spec->redirect, s.target, s.port);
      // Built from the request: checked before it becomes a header line.
      if (!http::wireError(http::WireField::HeaderValue, location).empty()) {
        s.keepAlive = false;
        cb.sendLocalReply(400, "invalid redirect target", "DPE");
        return FilterStatus::Stop;
      }
      extra = "location: " + location + "\r\n";
    }
    if (s.route->localResponseHeaders) s.route->localResponseHeaders->render(cb.headerContext()).append(extra);
    if (spec->directResponse) {
      cb.sendLocalReply(int(spec->directResponse->status), spec->directResponse->body.value_or(""), "-", extra);
    } else {
      cb.sendLocalReply(int(spec->redirect->redirectCode), "", "-", extra);
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
