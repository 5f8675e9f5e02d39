#include "proxy/redis_client.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "proxy/outbound.h"
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {

constexpr uint64_t kFirstBackoffNs = 100'000'000;
constexpr uint64_t kMaxBackoffNs = 5'000'000'000;
constexpr uint64_t kConnectTimeoutNs = 1'000'000'000;
constexpr uint64_t kLogIntervalNs = 10'000'000'000;
// Calls in flight on one worker's connection; past it a call fails at once
// (Redis is far behind: waiting longer only grows the queue).
constexpr size_t kMaxCalls = 8192;
// The oldest call unanswered this long: Redis is hung, the connection
// starts over.
constexpr uint64_t kStallNs = 2'000'000'000;

void appendBulk(std::string& out, std::string_view s) {
  fmt::format_to(std::back_inserter(out), "${}\r\n", s.size());
  out.append(s);
  out.append("\r\n");
}

}  // namespace

// The socket: bytes in go to the client's parser, its end to the client.
class RedisConn final : public OutboundConnection {
 public:
  RedisConn(Worker& w, int fd, RedisClient& client) : OutboundConnection(w, fd), client_(&client) {}
  void start(const sockaddr_in& addr) { connectTo(addr, kConnectTimeoutNs); }
  // The client lets go (it closed us, or is going away).
  void detach() { client_ = nullptr; }
  using Connection::write;

 private:
  void onConnected() override {
    if (client_) client_->onConnected();
  }
  void onConnectFailed(bool timedOut) override {
    RedisClient* c = client_;
    client_ = nullptr;
    close();
    if (c) c->onConnectFailed(timedOut);
  }
  void onData() override {
    // The reader copies what it is fed, so the buffer is free again after.
    if (client_) client_->onData(input_);
    input_.clear();
  }
  void onPeerClosed(int err) override {
    RedisClient* c = client_;
    client_ = nullptr;
    close(true);
    if (c) c->onClosed(err);
  }

  RedisClient* client_;
};

RedisClient::RedisClient(Worker& worker, const sockaddr_in& addr) : worker_(worker), addr_(addr) {}

RedisClient::~RedisClient() {
  if (conn_) {
    conn_->detach();
    conn_->close();
  }
  if (reader_) redisReaderFree(reader_);
}

void RedisClient::connect() {
  route::UpstreamSettings settings;
  settings.keepalive = route::UpstreamSettings::Keepalive{};  // the kernel's defaults: a dead peer is found eventually
  const int fd = OutboundConnection::openSocket(settings);
  if (fd < 0) {
    onConnectFailed(false);
    return;
  }
  state_ = State::Connecting;
  worker_.stats().inc(stats::Counter::RedisCxTotal);
  conn_ = new RedisConn(worker_, fd, *this);
  conn_->start(addr_);
}

uint64_t RedisClient::increment(std::vector<Increment> keys, RedisWaiter* w) {
  if (keys.empty() || state_ == State::BackingOff || state_ == State::Shut || calls_.size() >= kMaxCalls) return 0;
  const uint64_t now = worker_.clock().nowNs();
  if (!calls_.empty() && now - calls_.front().sentNs > kStallNs) {
    // Connected, but answering nothing: a hung Redis. Start over.
    worker_.stats().inc(stats::Counter::RedisCxError);
    fail("no reply for 2 s");
    return 0;
  }
  if (state_ == State::Idle) connect();
  if (state_ != State::Connecting && state_ != State::Connected) return 0;  // the socket could not be made
  Call c;
  c.id = nextId_++;
  c.sentNs = now;
  c.waiter = w;
  c.keys = std::move(keys);
  c.counts.reserve(c.keys.size());
  const uint64_t id = c.id;
  send(std::move(c));
  return id;
}

void RedisClient::send(Call c) {
  std::string cmds;
  cmds.reserve(c.keys.size() * (c.keys[0].key.size() + 40));
  for (const Increment& k : c.keys) {
    if (c.expires) {
      cmds.append("*3\r\n$6\r\nEXPIRE\r\n");
      appendBulk(cmds, k.key);
      appendBulk(cmds, std::to_string(k.ttlSeconds));
    } else {
      cmds.append("*3\r\n$6\r\nINCRBY\r\n");
      appendBulk(cmds, k.key);
      cmds.append("$1\r\n1\r\n");
    }
  }
  if (state_ == State::Connected) conn_->write(std::move(cmds));
  else queued_ += cmds;
  calls_.push_back(std::move(c));
}

void RedisClient::cancel(uint64_t id) {
  for (Call& c : calls_) {
    if (c.id == id) c.waiter = nullptr;
  }
}

void RedisClient::cancel(RedisWaiter* w) {
  for (Call& c : calls_) {
    if (c.waiter == w) c.waiter = nullptr;
  }
}

void RedisClient::shutdown() {
  state_ = State::Shut;
  retryTimer_.cancel();
  calls_.clear();
  if (conn_) {
    conn_->detach();
    conn_->close();
    conn_ = nullptr;
  }
}

void RedisClient::onConnected() {
  state_ = State::Connected;
  backoffNs_ = 0;
  if (logged_) {
    fmt::print(stderr, "sluiced: worker {}: rate limit: redis {}:{} is back\n", worker_.index(),
               inet_ntoa(addr_.sin_addr), ntohs(addr_.sin_port));
    logged_ = false;
  }
  if (reader_) redisReaderFree(reader_);
  reader_ = redisReaderCreate();
  conn_->startReading();
  if (!queued_.empty()) conn_->write(std::move(queued_));
  queued_.clear();
}

void RedisClient::onConnectFailed(bool timedOut) {
  conn_ = nullptr;
  worker_.stats().inc(stats::Counter::RedisCxConnectFail);
  fail(timedOut ? "connect timed out" : "connect failed");
}

void RedisClient::onClosed(int err) {
  conn_ = nullptr;
  if (!err && calls_.empty()) {
    // Redis closed an idle client (its `timeout`): the next call connects
    // again, nothing failed.
    state_ = State::Idle;
    queued_.clear();
    return;
  }
  worker_.stats().inc(stats::Counter::RedisCxError);
  fail(err ? strerror(-err) : "closed by redis");
}

void RedisClient::onData(std::string_view bytes) {
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    worker_.stats().inc(stats::Counter::RedisCxError);
    fail("unreadable reply");
    return;
  }
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
      worker_.stats().inc(stats::Counter::RedisCxError);
      fail(std::string("unreadable reply: ") + reader_->errstr);
      return;
    }
    if (!raw) return;  // the rest is not here yet
    redisReply* r = static_cast<redisReply*>(raw);
    if (calls_.empty()) {
      freeReplyObject(r);
      worker_.stats().inc(stats::Counter::RedisCxError);
      fail("a reply nobody asked for");
      return;
    }
    Call& c = calls_.front();
    if (r->type != REDIS_REPLY_INTEGER) {
      if (!c.failed) logFailure(r->type == REDIS_REPLY_ERROR ? std::string("error reply: ") + r->str : "a reply that is no integer");
      c.failed = true;
    } else if (!c.expires) {
      c.counts.push_back(r->integer);
      // This increment made the key: it gets its window's TTL.
      if (r->integer == 1) c.created.push_back(c.keys[c.replies]);
    }
    freeReplyObject(r);
    if (++c.replies < c.keys.size()) continue;
    Call done = std::move(calls_.front());
    calls_.pop_front();
    if (!done.created.empty()) {
      // Written before anything the waiter may send, so replies stay in order.
      Call expire;
      expire.id = nextId_++;
      expire.sentNs = worker_.clock().nowNs();
      expire.expires = true;
      expire.keys = std::move(done.created);
      send(std::move(expire));
    }
    if (!done.waiter) continue;
    if (done.failed) done.waiter->onRedisCounts(done.id, {}, false);
    else done.waiter->onRedisCounts(done.id, done.counts, true);
    if (state_ != State::Connected) return;  // the waiter's new call found it broken
  }
}

void RedisClient::fail(std::string_view why) {
  if (!why.empty()) logFailure(why);
  if (conn_) {
    conn_->detach();
    conn_->close(true);
    conn_ = nullptr;
  }
  queued_.clear();
  if (state_ != State::Shut) {
    state_ = State::BackingOff;
    backoffNs_ = backoffNs_ ? std::min(kMaxBackoffNs, backoffNs_ * 2) : kFirstBackoffNs;
    worker_.timers().schedule(retryTimer_, backoffNs_);
  }
  // Waiters may call increment() again: it fails at once while backing off.
  std::deque<Call> failed;
  failed.swap(calls_);
  for (Call& c : failed) {
    if (c.waiter) c.waiter->onRedisCounts(c.id, {}, false);
  }
}

void RedisClient::onRetryTimer() {
  if (state_ != State::BackingOff) return;
  state_ = State::Idle;
  connect();
}

void RedisClient::logFailure(std::string_view why) {
  const uint64_t now = worker_.clock().nowNs();
  if (logged_ && now - lastLogNs_ < kLogIntervalNs) return;
  lastLogNs_ = now;
  logged_ = true;
  fmt::print(stderr, "sluiced: worker {}: rate limit: redis {}:{}: {} (calls fail until it answers)\n",
             worker_.index(), inet_ntoa(addr_.sin_addr), ntohs(addr_.sin_port), why);
}

}  // namespace sluice::proxy
