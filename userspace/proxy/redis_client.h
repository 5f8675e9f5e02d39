// One worker's connection to Redis (--redis), driven by the worker's ring
// like any other connection: the global rate limit's counters live there,
// keyed and counted as envoyproxy/ratelimit keys and counts them, so every
// sluiced and ratelimit service sharing the Redis enforces one limit.
//
// A call is one INCRBY per key; the one whose count comes back equal to
// the increment made the key, and sets its EXPIRE (the window's length)
// right after, so a key lives one window as the ratelimit service's do,
// for one command per request instead of two. Commands of one loop turn
// leave in one write (pipelined across requests) and replies are matched
// to calls in order (RESP parsed by hiredis's
// reader; the socket and buffers are the worker's). A call never blocks:
// with Redis down (connect refused, reset, a protocol error) it fails at
// once, and the connection is tried again after a back-off (100 ms,
// doubling to 5 s); a slow Redis is the caller's timeout to handle. The
// failures are counted (ratelimit.redis_*) and logged at most once per 10 s
// per worker.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/timer_wheel.h"

struct redisReader;

namespace sluice::proxy {

class Worker;
class RedisConn;

// Who waits for a call's counts.
class RedisWaiter {
 public:
  // Call `id`'s answer. `counts`: each key's count after this call's
  // increment, in the call's order; empty with ok == false when the call
  // failed.
  virtual void onRedisCounts(uint64_t id, std::span<const int64_t> counts, bool ok) = 0;

 protected:
  ~RedisWaiter() = default;
};

class RedisClient {
 public:
  struct Increment {
    std::string key;
    uint32_t ttlSeconds = 1;  // the EXPIRE a new key gets
  };

  RedisClient(Worker& worker, const sockaddr_in& addr);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // INCRBY key 1 for each key (and EXPIRE key ttl for each it creates);
  // `w` hears the counts later, never from inside this call. Returns the
  // call's id, or 0: Redis is not reachable now, or it has left calls
  // unanswered too long or too many; nothing was sent.
  uint64_t increment(std::vector<Increment> keys, RedisWaiter* w);
  // Call `id` (or every call of `w`) is no longer waited for: its reply
  // is read and dropped.
  void cancel(uint64_t id);
  void cancel(RedisWaiter* w);
  // Closes the connection (the worker is stopping); calls in flight are
  // dropped without a word to their waiters (they are going away too).
  void shutdown();
  bool connected() const { return state_ == State::Connected; }

 private:
  friend class RedisConn;
  enum class State { Idle, Connecting, Connected, BackingOff, Shut };
  struct Call {
    uint64_t id = 0;
    uint64_t sentNs = 0;
    RedisWaiter* waiter = nullptr;  // null: cancelled, or EXPIREs nobody waits for
    std::vector<Increment> keys;
    bool expires = false;  // EXPIRE per key (else INCRBY)
    size_t replies = 0;    // replies read so far (one per key)
    bool failed = false;
    std::vector<int64_t> counts;
    std::vector<Increment> created;  // keys whose INCRBY made them: EXPIRE them
  };
  // Writes `c`'s commands (or queues them while connecting) and adds it
  // to the calls waiting for replies.
  void send(Call c);

  void connect();
  // From the connection.
  void onConnected();
  void onConnectFailed(bool timedOut);
  void onData(std::string_view bytes);
  void onClosed(int err);
  // The connection is gone or unusable: every call in flight fails.
  void fail(std::string_view why);
  void onRetryTimer();
  void logFailure(std::string_view why);

  Worker& worker_;
  sockaddr_in addr_;
  State state_ = State::Idle;
  RedisConn* conn_ = nullptr;
  redisReader* reader_ = nullptr;
  std::deque<Call> calls_;
  uint64_t nextId_ = 1;
  std::string queued_;  // commands written while connecting
  uint64_t backoffNs_ = 0;
  uint64_t lastLogNs_ = 0;
  bool logged_ = false;
  core::MemberTimer<RedisClient, &RedisClient::onRetryTimer> retryTimer_{this};
};

}  // namespace sluice::proxy
