// corsPolicy: a preflight the policy answers gets its answer here; any other
// cross-origin request goes on with the CORS headers its response will
// carry, and the origin check is counted either way.
#include "proxy/filters/filters.h"
#include "proxy/stream.h"

namespace sluice::proxy {

namespace {

class CorsFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "cors"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    if (!s.route->cors) return FilterStatus::Continue;
    route::CorsPolicy::Decision d = s.route->cors->evaluate(s.head.method, s.headers);
    using Kind = route::CorsPolicy::Decision::Kind;
    if (d.kind == Kind::NotCors) return FilterStatus::Continue;
    cb.stats().inc(d.originAllowed ? stats::Counter::CorsOriginValid : stats::Counter::CorsOriginInvalid);
    switch (d.kind) {
      case Kind::Preflight:
        cb.sendLocalReply(200, "", "-", &d.responseHeaders);
        return FilterStatus::Stop;
      case Kind::PreflightBare:
        cb.sendLocalReply(200, "", "-");
        return FilterStatus::Stop;
      default:
        s.responseExtra = std::move(d.responseHeaders);
        return FilterStatus::Continue;
    }
  }
};

}  // namespace

const RequestFilter& corsFilter() {
  static const CorsFilter f;
  return f;
}

}  // namespace sluice::proxy
