// VirtualService fault: the delay holds the request on the timer wheel (the
// chain pauses, holding nothing but the stream's memory), then the abort
// answers it in the upstream's place, as Envoy's fault filter does.
#include <fmt/format.h>

#include "proxy/filters/filters.h"
#include "proxy/stream.h"

namespace sluice::proxy {

namespace {

class FaultFilter final : public RequestFilter {
 public:
  std::string_view name() const override { return "fault"; }

  FilterStatus onRequestHead(FilterCallbacks& cb) const override {
    Stream& s = cb.stream();
    if (!s.route->fault) return FilterStatus::Continue;
    s.fault = s.route->fault->roll(cb.rng());
    if (s.fault.delayNs) {
      s.faultDelayed = true;
      cb.stats().inc(stats::Counter::FaultDelaysInjected);
      cb.pauseFor(s.fault.delayNs);
      return FilterStatus::Stop;
    }
    return abortIfRolled(cb);
  }

  FilterStatus onResume(FilterCallbacks& cb) const override { return abortIfRolled(cb); }

 private:
  static FilterStatus abortIfRolled(FilterCallbacks& cb) {
    const route::FaultPolicy::Decision& fault = cb.stream().fault;
    if (!fault.abortStatus) return FilterStatus::Continue;
    cb.stats().inc(stats::Counter::FaultAbortsInjected);
    if (fault.grpcStatus >= 0) {
      http::HeaderMap extra;
      extra.add("content-type", "application/grpc");
      extra.addCopy("grpc-status", std::to_string(fault.grpcStatus));
      extra.add("grpc-message", "fault filter abort");
      cb.sendLocalReply(fault.abortStatus, "", "FI", &extra);
    } else {
      cb.sendLocalReply(fault.abortStatus, "fault filter abort", "FI");
    }
    return FilterStatus::Stop;
  }
};

}  // namespace

const RequestFilter& faultFilter() {
  static const FaultFilter f;
  return f;
}

}  // namespace sluice::proxy
