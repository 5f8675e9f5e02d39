#include "route/fault.h"

#include <array>
#include <cmath>
#include <string_view>

#include "http/parser.h"

namespace sluice::route {

namespace {

// Percent (0..100, fractional) to millionths of a request, clamped.
uint32_t toPpm(double percent) {
  if (!(percent > 0)) return 0;  // also rejects NaN
  if (percent >= 100) return 1'000'000;
  return static_cast<uint32_t>(std::llround(percent * 10'000.0));
}

bool rolls(core::Rng& rng, uint32_t ppm) { return ppm > 0 && rng.below(1'000'000) < ppm; }

}  // namespace

FaultPolicy FaultPolicy::compile(const config::HTTPFaultInjection& spec) {
  FaultPolicy out;
  if (spec.delay) {
    const auto& d = *spec.delay;
    if (d.fixedDelay && d.fixedDelay->count() > 0) out.delayNs_ = static_cast<uint64_t>(d.fixedDelay->count());
    // `percentage` supersedes the deprecated integer `percent`; with neither,
    // Istio delays no request.
    if (d.percentage) {
      out.delayPpm_ = toPpm(d.percentage->value);
    } else if (d.percent) {
      out.delayPpm_ = toPpm(static_cast<double>(*d.percent));
    }
  }
  if (spec.abort) {
    const auto& a = *spec.abort;
    if (!a.grpcStatus.empty()) {
      int code = grpcStatusCode(a.grpcStatus);
      if (code >= 0) {
        // gRPC errors travel in a 200 response's grpc-status.
        out.abortStatus_ = 200;
        out.grpcStatus_ = code;
      }
    } else if (a.httpStatus > 0) {
      out.abortStatus_ = static_cast<int>(a.httpStatus);
    }
    if (out.abortStatus_ != 0 && a.percentage) out.abortPpm_ = toPpm(a.percentage->value);
  }
  return out;
}

FaultPolicy::Decision FaultPolicy::roll(core::Rng& rng) const {
  Decision d;
  if (hasDelay() && rolls(rng, delayPpm_)) d.delayNs = delayNs_;
  if (hasAbort() && rolls(rng, abortPpm_)) {
    d.abortStatus = abortStatus_;
    d.grpcStatus = grpcStatus_;
  }
  return d;
}

}  // namespace sluice::route
