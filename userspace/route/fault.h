// VirtualService `fault` (delay and abort), compiled, and the per-request
// roll of the dice. Percentages keep Istio's precision: chances are held in
// millionths.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/model.h"
#include "core/clock.h"
#include "http/grpc.h"

namespace sluice::route {

class FaultPolicy {
 public:
  static FaultPolicy compile(const config::HTTPFaultInjection& spec);

  struct Decision {
    uint64_t delayNs = 0;  // 0: no delay (flag DI otherwise)
    // 0: no abort. Otherwise the HTTP status to answer with (flag FI); for a
    // gRPC abort, 200 with grpc-status `grpcStatus`.
    int abortStatus = 0;
    int grpcStatus = -1;  // -1: not a gRPC abort
  };
  // Delay and abort are rolled independently, as Envoy's fault filter does.
  Decision roll(core::Rng& rng) const;

  bool hasDelay() const { return delayPpm_ > 0 && delayNs_ > 0; }
  bool hasAbort() const { return abortPpm_ > 0; }

 private:
  uint64_t delayNs_ = 0;
  uint32_t delayPpm_ = 0;  // chance in millionths; an absent percentage is 0
  int abortStatus_ = 0;
  int grpcStatus_ = -1;
  uint32_t abortPpm_ = 0;
};

// gRPC status name ("UNAVAILABLE") or number ("14") to its code, or -1.
using http::grpcStatusCode;

}  // namespace sluice::route
