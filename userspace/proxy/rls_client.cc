#include "proxy/rls_client.h"

#include <algorithm>
#include <memory>

#include <fmt/format.h>

#include "http/grpc.h"
#include "http/h2.h"
#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/outbound.h"
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {

constexpr std::string_view kPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

void putVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(v | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}

void putBytes(std::string& out, uint32_t field, std::string_view bytes) {
  putVarint(out, (uint64_t(field) << 3) | 2);
  putVarint(out, bytes.size());
  out.append(bytes);
}

bool getVarint(std::string_view& in, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto b = uint8_t(in.front());
    in.remove_prefix(1);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

}  // namespace

std::string encodeRateLimitRequest(std::string_view domain, const std::vector<route::Descriptor>& descriptors) {
  std::string out, descriptor, entry;
  putBytes(out, 1, domain);
  for (const route::Descriptor& d : descriptors) {
    descriptor.clear();
    for (const route::DescriptorEntry& e : d) {
      entry.clear();
      putBytes(entry, 1, e.key);
      putBytes(entry, 2, e.value);
      putBytes(descriptor, 1, entry);
    }
    putBytes(out, 2, descriptor);
  }
  putVarint(out, (3 << 3) | 0);  // hits_addend
  putVarint(out, 1);
  return out;
}

int64_t decodeRateLimitOverallCode(std::string_view in) {
  int64_t code = 0;
  while (!in.empty()) {
    uint64_t key = 0, v = 0;
    if (!getVarint(in, key)) return -1;
    switch (key & 7) {
      case 0:
        if (!getVarint(in, v)) return -1;
        if (key >> 3 == 1) code = int64_t(v);
        break;
      case 1:
        if (in.size() < 8) return -1;
        in.remove_prefix(8);
        break;
      case 2:
        if (!getVarint(in, v) || v > in.size()) return -1;
        in.remove_prefix(size_t(v));
        break;
      case 5:
        if (in.size() < 4) return -1;
        in.remove_prefix(4);
        break;
      default:
        return -1;
    }
  }
  return code;
}

// One ShouldRateLimit call: a stream on a side-channel connection.
class RlsClient::Call final : public H2StreamOwner {
 public:
  Call(RlsClient& client, uint64_t id, RedisWaiter* waiter, std::string endpoint, std::string head, std::string body)
      : client_(client), id_(id), waiter_(waiter), endpoint_(std::move(endpoint)), head_(std::move(head)),
        body_(std::move(body)) {}
  ~Call() {
    if (stream_) stream_->cancel();
  }
  uint64_t id() const { return id_; }
  RedisWaiter* waiter() const { return waiter_; }
  void setWaiter(RedisWaiter* w) { waiter_ = w; }
  bool ended() const { return ended_; }
  // Ends it without a word to its waiter.
  void abandon() {
    waiter_ = nullptr;
    end(-1);
  }

  void begin(H2UpstreamConn& conn, bool https, uint64_t deadlineNs) {
    https_ = https;
    stream_ = conn.openStream(this);
    client_.worker_.timers().schedule(deadline_, deadlineNs);
  }

  // ---- H2StreamOwner
  void onUpstreamConnected() override {
    if (ended_ || stream_->submitted()) return;
    thread_local http::H2RequestFields fields;
    if (!fields.build(head_, https_ ? "https" : "http", /*teTrailers=*/true) ||
        !stream_->submit(fields.fields(), false)) {
      end(-1);
      return;
    }
    stream_->write(body_, true);
    std::string().swap(body_);
  }
  void onUpstreamConnectFailed(bool timedOut) override {
    fail(true, timedOut ? "connect timed out" : "connect failed");
  }
  void onUpstreamClosed(int) override { fail(true, "connection lost"); }
  void onUpstreamDrained() override {}
  void onH2UpstreamHead(int status, std::vector<http::Header>& fields, bool endStream) override {
    if (status != 200) return fail(false, "HTTP status " + std::to_string(status));
    if (endStream) finish(fields);  // trailers-only: an error status
  }
  void onH2UpstreamData() override {
    std::string& body = stream_->responseBody();
    if (message_.size() + body.size() > kMaxMessage) return end(-1);
    message_.append(body);
    stream_->take(body.size());
    if (stream_->responseEnded()) fail(false, "no grpc-status");  // no trailers
  }
  void onH2UpstreamTrailers(std::vector<http::Header>& fields) override { finish(fields); }
  void onH2UpstreamReset(uint32_t) override { fail(false, "stream reset"); }

 private:
  static constexpr size_t kMaxMessage = 64 * 1024;

  void finish(const std::vector<http::Header>& fields) {
    int status = -1;
    for (const http::Header& h : fields) {
      if (h.name == "grpc-status") status = http::grpcStatusValue(h.value);
    }
    // One message: a 5-byte prefix (uncompressed) and the response.
    if (status != 0) return fail(false, "grpc-status " + std::to_string(status));
    if (message_.size() < 5 || message_[0] != 0) return fail(false, "no response message");
    const uint32_t len = (uint32_t(uint8_t(message_[1])) << 24) | (uint32_t(uint8_t(message_[2])) << 16) |
                         (uint32_t(uint8_t(message_[3])) << 8) | uint32_t(uint8_t(message_[4]));
    if (message_.size() != 5 + size_t(len)) return fail(false, "a response message that is not one");
    const int64_t code = decodeRateLimitOverallCode(std::string_view(message_).substr(5));
    if (code < 0) return fail(false, "an unreadable response");
    client_.noteAnswer(endpoint_);
    // Anything but OVER_LIMIT lets the request through, as in Envoy
    // (UNKNOWN or no code included).
    end(code == kRlsOverLimit ? kRlsOverLimit : kRlsOk);
  }
  void onDeadline() { end(-1); }  // the filter's timeout says it first
  void fail(bool connection, std::string_view why) {
    if (ended_) return;
    client_.noteFailure(endpoint_, connection, why);
    end(-1);
  }

  // `code` < 0: failed. The waiter hears it, the stream is let go, and the
  // call is freed on the next loop turn.
  void end(int64_t code) {
    if (ended_) return;
    ended_ = true;
    deadline_.cancel();
    if (stream_) {
      std::shared_ptr<H2UpstreamStream> s = std::move(stream_);
      s->cancel();
    }
    std::erase(client_.live_, this);
    client_.dead_.push_back(this);
    client_.worker_.timers().schedule(client_.reapTimer_, 0);
    if (RedisWaiter* w = waiter_) {
      waiter_ = nullptr;
      const int64_t counts[1] = {code};
      if (code < 0) w->onRedisCounts(id_, {}, false);
      else w->onRedisCounts(id_, counts, true);
    }
  }

  RlsClient& client_;
  uint64_t id_;
  RedisWaiter* waiter_;
  std::string endpoint_;
  std::string head_, body_, message_;
  bool https_ = false;
  bool ended_ = false;
  std::shared_ptr<H2UpstreamStream> stream_;
  core::MemberTimer<Call, &Call::onDeadline> deadline_{this};
};

RlsClient::~RlsClient() {
  for (Call* c : live_) delete c;
  for (Call* c : dead_) delete c;
}

void RlsClient::reap() {
  std::vector<Call*> dead;
  dead.swap(dead_);
  for (Call* c : dead) delete c;
}

uint64_t RlsClient::call(const route::Cluster& cluster, std::string_view domain,
                         const std::vector<route::Descriptor>& descriptors, uint64_t deadlineNs, RedisWaiter* w) {
  if (cluster.endpoints.empty() || live_.size() >= kMaxCalls) return 0;
  const int idx = worker_.pickEndpoint(cluster);
  if (idx < 0) return 0;
  const route::Endpoint& ep = cluster.endpoints[size_t(idx)];
  if (auto it = backoff_.find(ep.key); it != backoff_.end() && worker_.clock().nowNs() < it->second.untilNs)
    return 0;  // failed a moment ago: not tried again yet
  EndpointState& state = worker_.endpointState(ep);
  const route::UpstreamSettings& settings = cluster.upstream;
  H2UpstreamConn* conn = H2UpstreamConn::sideChannel(state, settings);
  bool fresh = false;
  if (!conn) {
    const int fd = OutboundConnection::openSocket(settings);
    if (fd < 0) return 0;
    conn = new H2UpstreamConn(worker_, fd, ep, state, upstream::LimitToken{}, settings, /*forMirrors=*/true);
    fresh = true;
  }
  // The gRPC message: a 5-byte prefix, then the request.
  const std::string request = encodeRateLimitRequest(domain, descriptors);
  std::string body;
  body.reserve(5 + request.size());
  body.push_back(0);
  for (int shift = 24; shift >= 0; shift -= 8) body.push_back(char((request.size() >> shift) & 0xff));
  body.append(request);
  std::string head = fmt::format(
      "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc\r\nte: trailers\r\ncontent-length: {}\r\n\r\n",
      kPath, cluster.serviceHost, body.size());
  // No waiter until it has started: a call that fails at once is this
  // function's 0, never a callback from inside it.
  auto* c = new Call(*this, nextId_++, nullptr, ep.key, std::move(head), std::move(body));
  live_.push_back(c);
  c->begin(*conn, settings.tls, deadlineNs);
  if (fresh) {
    conn->connect();
    // Draining: the connection closes once its streams are done.
    if (worker_.draining()) conn->retireWhenIdle();
  } else if (conn->ready()) {
    c->onUpstreamConnected();
  }  // else onUpstreamConnected follows once the connection is up
  if (c->ended()) return 0;
  c->setWaiter(w);
  return c->id();
}

void RlsClient::cancel(uint64_t id) {
  std::vector<Call*> gone;
  for (Call* c : live_) {
    if (c->id() == id) gone.push_back(c);
  }
  for (Call* c : gone) c->abandon();  // end() leaves live_
}

void RlsClient::cancel(RedisWaiter* w) {
  std::vector<Call*> gone;
  for (Call* c : live_) {
    if (c->waiter() == w) gone.push_back(c);
  }
  for (Call* c : gone) c->abandon();
}

void RlsClient::noteFailure(const std::string& endpointKey, bool connection, std::string_view why) {
  const uint64_t now = worker_.clock().nowNs();
  if (connection) {
    Backoff& b = backoff_[endpointKey];
    b.stepNs = b.stepNs ? std::min<uint64_t>(5'000'000'000, b.stepNs * 2) : 100'000'000;
    b.untilNs = now + b.stepNs;
  }
  if (logged_ && now - lastLogNs_ < 10'000'000'000) return;
  lastLogNs_ = now;
  logged_ = true;
  fmt::print(stderr, "sluiced: worker {}: rate limit service {}: {} (calls fail until it answers)\n",
             worker_.index(), endpointKey, why);
}

void RlsClient::noteAnswer(const std::string& endpointKey) {
  if (!backoff_.empty()) backoff_.erase(endpointKey);
  logged_ = false;
}

void RlsClient::shutdown() {
  for (Call* c : live_) c->setWaiter(nullptr);
}

}  // namespace sluice::proxy
