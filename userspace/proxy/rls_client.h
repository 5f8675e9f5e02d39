// One worker's calls to a rate limit service (envoy.service.ratelimit.v3
// RateLimitService.ShouldRateLimit over gRPC), for a global rate limit
// filter whose rate_limit_service names a cluster and a daemon without
// --redis: users who run envoyproxy/ratelimit keep it deciding.
//
// Each call is one HTTP/2 stream on the side-channel connections mirrors
// use to the endpoint (never the router's, so a call never takes a stream
// the endpoint's traffic needs). The request is hand-encoded protobuf
// (domain, descriptors' entries, hits_addend 1); the answer is the
// response's overall_code, read once the trailers say grpc-status 0.
// Anything else (no endpoint, a refused connection, a reset, another
// status, garbage) is a failure, logged at most once per 10 s per worker.
// An endpoint whose connection failed is not tried again for a back-off
// (100 ms, doubling to 5 s; an answer resets it): calls to it fail at once. A call's waiter hears it once, never from
// inside call(); a finished call is freed on the next loop turn, never
// during one of its connection's callbacks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/timer_wheel.h"
#include "proxy/redis_client.h"
#include "route/global_rate_limit.h"
#include "route/table.h"

namespace sluice::proxy {

class Worker;

// RateLimitResponse.Code.
inline constexpr int64_t kRlsOk = 1;
inline constexpr int64_t kRlsOverLimit = 2;

// The ShouldRateLimit request's protobuf bytes, and the overall_code of a
// response's (0 when absent; -1 when it does not parse).
std::string encodeRateLimitRequest(std::string_view domain, const std::vector<route::Descriptor>& descriptors);
int64_t decodeRateLimitOverallCode(std::string_view message);

class RlsClient {
 public:
  explicit RlsClient(Worker& worker) : worker_(worker) {}
  ~RlsClient();
  RlsClient(const RlsClient&) = delete;
  RlsClient& operator=(const RlsClient&) = delete;

  // Starts a call to an endpoint of `cluster`, ended (a failure) if not
  // answered within `deadlineNs`; `w` later hears its overall_code as the
  // one count (ok == false: it failed). 0: no call could start (no
  // endpoint, no socket, too many in flight).
  uint64_t call(const route::Cluster& cluster, std::string_view domain,
                const std::vector<route::Descriptor>& descriptors, uint64_t deadlineNs, RedisWaiter* w);
  // Call `id` (or every call of `w`) ends: its stream is reset, nobody hears.
  void cancel(uint64_t id);
  void cancel(RedisWaiter* w);
  // The worker is stopping: no waiter hears anything any more.
  void shutdown();

 private:
  class Call;
  void reap();
  // A call to `endpointKey` failed (`connection`: to connect or stay up) or
  // was answered.
  void noteFailure(const std::string& endpointKey, bool connection, std::string_view why);
  void noteAnswer(const std::string& endpointKey);
  struct Backoff {
    uint64_t untilNs = 0;
    uint64_t stepNs = 0;
  };
  std::unordered_map<std::string, Backoff> backoff_;  // by endpoint key
  uint64_t lastLogNs_ = 0;
  bool logged_ = false;
  static constexpr size_t kMaxCalls = 1024;  // in flight per worker
  Worker& worker_;
  uint64_t nextId_ = uint64_t(1) << 62;  // apart from RedisClient's ids
  std::vector<Call*> live_, dead_;
  core::MemberTimer<RlsClient, &RlsClient::reap> reapTimer_{this};
};

}  // namespace sluice::proxy
