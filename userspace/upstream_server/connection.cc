#include "upstream_server/connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "upstream_server/response.h"

namespace sluice::upstream_server {
namespace {

using namespace std::chrono_literals;

// Output above this stops request processing until the socket drains, so a
// pipelining client cannot make us buffer unbounded responses.
constexpr size_t kOutHigh = 64 * 1024;
// A streamed body is produced in pieces of this size.
constexpr size_t kFillPiece = 64 * 1024;
// How long a closing connection waits for the peer's FIN after ours, so that
// unread input does not turn our close into an RST that eats the response.
constexpr auto kLinger = 2s;
constexpr int kMaxRequestsPerAdvance = 1024;
constexpr int kMaxSendsPerFlush = 64;

const std::string& fillBytes() {
  static const std::string bytes(kFillPiece, 'x');
  return bytes;
}

void appendHex(std::string& out, uint64_t v) {
  char buf[17];
  int n = 0;
  do {
    buf[16 - n] = "0123456789abcdef"[v & 15];
    v >>= 4;
    ++n;
  } while (v != 0);
  out.append(buf + 17 - n, static_cast<size_t>(n));
}

}  // namespace

void InputBuffer::consume(size_t n) {
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

std::pair<char*, size_t> InputBuffer::prepare() {
  constexpr size_t kMinRead = 4096;
  if (!buf_) {
    buf_ = std::make_unique<char[]>(kInitial);
    cap_ = kInitial;
  }
  if (cap_ - end_ < kMinRead && begin_ > 0) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (cap_ - end_ < kMinRead && cap_ < kMax) {
    size_t cap = std::min(cap_ * 2, kMax);
    auto bigger = std::make_unique<char[]>(cap);
    std::memcpy(bigger.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    buf_ = std::move(bigger);
    cap_ = cap;
  }
  size_t room = std::min(cap_ - end_, kMax - size());
  return {buf_.get() + end_, room};
}

Connection::Connection(int fd, uint64_t id, ServerState& state, TimerScheduler& timers)
    : fd_(fd), id_(id), state_(state), timers_(timers) {}

Connection::~Connection() {
  if (serving_) state_.servingConnections.fetch_sub(1, std::memory_order_relaxed);
  ::close(fd_);
}

uint32_t Connection::wantedEvents() const {
  if (draining_) return EPOLLIN;
  uint32_t ev = 0;
  if (!peerEof_ && !in_.full()) ev |= EPOLLIN;
  if (outPending() > 0 || fill_.active()) ev |= EPOLLOUT;
  return ev;
}

Connection::Result Connection::onReadable() {
  if (draining_) {
    char discard[16 * 1024];
    ssize_t n = ::recv(fd_, discard, sizeof discard, 0);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) return Result::Keep;
    return Result::Close;
  }
  auto [ptr, room] = in_.prepare();
  if (room > 0 && !peerEof_) {
    ssize_t n = ::recv(fd_, ptr, room, 0);
    if (n > 0) {
      in_.commit(static_cast<size_t>(n));
    } else if (n == 0) {
      peerEof_ = true;
    } else if (errno != EAGAIN && errno != EINTR) {
      return Result::Close;
    }
  }
  return onWritable();
}

Connection::Result Connection::onWritable() {
  // Alternate until neither side can move: output that drains may unblock
  // requests that were held back by the kOutHigh bound.
  for (int i = 0; i < 8; ++i) {
    if (flush() == Result::Close) return Result::Close;
    if (outPending() > 0 || fill_.active() || draining_) break;
    size_t before = out_.size();
    bool wasCloseAfter = closeAfterFlush_;
    advance();
    if (out_.size() == before && closeAfterFlush_ == wasCloseAfter) break;
  }
  return Result::Keep;
}

Connection::Result Connection::onTimer(uint64_t seq) {
  if (seq != timerSeq_) return Result::Keep;
  if (draining_) return Result::Close;
  if (!waiting_) return Result::Keep;
  waiting_ = false;
  out_.append(deferredOut_);
  deferredOut_.clear();
  fill_ = deferredFill_;
  deferredFill_ = {};
  closeAfterFlush_ = closeAfterFlush_ || deferredClose_;
  deferredClose_ = false;
  return onWritable();
}

void Connection::advance() {
  for (int i = 0; i < kMaxRequestsPerAdvance; ++i) {
    if (waiting_ || closeAfterFlush_ || draining_) return;
    if (fill_.active() || outPending() >= kOutHigh) return;
    bool progressed = phase_ == Phase::Head ? stepHead() : stepBody();
    if (!progressed) {
      // Nothing more will arrive: whatever is buffered is an incomplete
      // request, which is dropped with the connection.
      if (peerEof_) closeAfterFlush_ = true;
      return;
    }
  }
}

bool Connection::stepHead() {
  if (in_.empty()) return false;
  http::ParseError err;
  static const http::Limits kLimits{};
  auto st = http::parseRequestHead(in_.data(), in_.size(), kLimits, head_, err);
  if (st == http::ParseStatus::Incomplete) {
    if (in_.full()) {
      respondError(431, "request head too large");
      return true;
    }
    return false;
  }
  if (st == http::ParseStatus::Error) {
    respondError(err.status, err.reason);
    return true;
  }
  const size_t headBytes = head_.headBytes;
  const http::Framing framing = head_.framing;
  if (framing.kind == http::Framing::Kind::None ||
      (framing.kind == http::Framing::Kind::ContentLength && framing.length == 0)) {
    finishRequest(0);
    in_.consume(headBytes);
    return true;
  }
  if (framing.kind == http::Framing::Kind::UntilClose) {
    // Only responses are read until close; a request cannot be.
    respondError(400, "request body without length");
    return true;
  }
  framer_.reset(framing);
  auto step = framer_.consume(in_.data() + headBytes, in_.size() - headBytes);
  if (step.status == http::BodyFramer::Status::Error) {
    respondError(400, "malformed request body");
    return true;
  }
  if (step.status == http::BodyFramer::Status::Done) {
    finishRequest(framing.kind == http::Framing::Kind::Chunked ? framer_.payloadBytes() : framing.length);
    in_.consume(headBytes + step.consumed);
    return true;
  }
  // The body is still arriving: keep a copy of the head (bounded by the
  // parser's head limit) and count the body as it streams through.
  headStore_.assign(in_.data(), headBytes);
  const bool sendContinue = head_.expectContinue && head_.versionMinor >= 1;
  in_.consume(headBytes + step.consumed);
  phase_ = Phase::Body;
  if (sendContinue) out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  return true;
}

bool Connection::stepBody() {
  if (in_.empty()) return false;
  auto step = framer_.consume(in_.data(), in_.size());
  if (step.status == http::BodyFramer::Status::Error) {
    respondError(400, "malformed request body");
    return true;
  }
  in_.consume(step.consumed);
  if (step.status != http::BodyFramer::Status::Done) return step.consumed > 0;
  phase_ = Phase::Head;
  http::ParseError err;
  static const http::Limits kLimits{};
  // Re-parsing the stored head restores the views the response needs.
  if (http::parseRequestHead(headStore_.data(), headStore_.size(), kLimits, head_, err) !=
      http::ParseStatus::Complete) {
    respondError(500, "stored head did not re-parse");
    return true;
  }
  const http::Framing framing = framer_.framing();
  finishRequest(framing.kind == http::Framing::Kind::Chunked ? framer_.payloadBytes() : framing.length);
  return true;
}

void Connection::respondError(int status, std::string_view reason) {
  scratch_.assign("bad request: ");
  scratch_.append(reason);
  scratch_.push_back('\n');
  HeadSpec spec;
  spec.status = status;
  spec.contentType = "text/plain";
  spec.contentLength = scratch_.size();
  spec.keepAlive = false;
  spec.upstreamName = state_.name;
  appendHead(out_, spec);
  out_.append(scratch_);
  closeAfterFlush_ = true;
}

void Connection::respondLocal(std::string_view json) {
  HeadSpec spec;
  spec.contentType = "application/json";
  spec.contentLength = json.size();
  spec.keepAlive = head_.keepAlive;
  spec.http10 = head_.versionMinor == 0;
  spec.upstreamName = state_.name;
  appendHead(out_, spec);
  if (head_.method != "HEAD") out_.append(json);
  closeAfterFlush_ = closeAfterFlush_ || !head_.keepAlive;
}

void Connection::finishRequest(uint64_t bodyBytes) {
  const TargetParts target = splitTarget(head_.target);
  if (target.path == "/__counter" || target.path == "/__reset") {
    if (target.path == "/__reset") {
      state_.requests.store(0, std::memory_order_relaxed);
      state_.failFirstSeen.store(0, std::memory_order_relaxed);
      state_.peakConnections.store(state_.servingConnections.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    }
    scratch_.assign("{\"name\":");
    appendJsonString(scratch_, state_.name);
    scratch_.append(",\"requests\":");
    appendUint(scratch_, state_.requests.load(std::memory_order_relaxed));
    scratch_.append(",\"connections\":");
    appendUint(scratch_, state_.servingConnections.load(std::memory_order_relaxed));
    scratch_.append(",\"peak_connections\":");
    appendUint(scratch_, state_.peakConnections.load(std::memory_order_relaxed));
    scratch_.push_back('}');
    respondLocal(scratch_);
    return;
  }
  const uint64_t number = state_.requests.fetch_add(1, std::memory_order_relaxed) + 1;
  ++served_;
  if (!serving_) {
    serving_ = true;
    uint64_t now = state_.servingConnections.fetch_add(1, std::memory_order_relaxed) + 1;
    uint64_t peak = state_.peakConnections.load(std::memory_order_relaxed);
    while (now > peak && !state_.peakConnections.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  auto parsed = parseControls(head_, target.query);
  if (!parsed) {
    scratch_.assign("{\"error\":");
    appendJsonString(scratch_, parsed.error());
    scratch_.push_back('}');
    HeadSpec spec;
    spec.status = 400;
    spec.contentType = "application/json";
    spec.contentLength = scratch_.size();
    spec.keepAlive = head_.keepAlive;
    spec.http10 = head_.versionMinor == 0;
    spec.upstreamName = state_.name;
    appendHead(out_, spec);
    out_.append(scratch_);
    closeAfterFlush_ = closeAfterFlush_ || !head_.keepAlive;
    return;
  }
  const Controls& c = *parsed;
  int status = c.status != 0 ? c.status : state_.defaultStatus;
  if (c.failFirst) {
    uint64_t seen = state_.failFirstSeen.fetch_add(1, std::memory_order_relaxed);
    if (seen < *c.failFirst) status = 503;
  }
  const std::chrono::nanoseconds delay = c.delay.count() > 0 ? c.delay : state_.defaultDelay;
  const bool delayed = delay.count() > 0;
  std::string& dst = delayed ? deferredOut_ : out_;
  Fill& fill = delayed ? deferredFill_ : fill_;
  bool closeAfter = !head_.keepAlive || c.close != CloseMode::None;

  if (c.close != CloseMode::Before) {
    const bool http10 = head_.versionMinor == 0;
    const bool noBody = status == 204 || status == 304;
    const bool sendBody = !noBody && head_.method != "HEAD";
    HeadSpec spec;
    spec.status = status;
    spec.keepAlive = !closeAfter;
    spec.http10 = http10;
    spec.upstreamName = state_.name;
    spec.extraHeaders = &c.extraHeaders;
    spec.chunked = c.chunked && !http10 && !noBody;
    if (c.size) {
      spec.contentType = "text/plain";
      if (!noBody && !spec.chunked) spec.contentLength = *c.size;
      appendHead(dst, spec);
      if (sendBody && c.close == CloseMode::Mid) fill = Fill{*c.size / 2, spec.chunked, false};
      else if (sendBody) fill = Fill{*c.size, spec.chunked, spec.chunked};
    } else {
      scratch_.clear();
      appendEchoJson(scratch_, EchoInfo{state_.name, &head_, target, bodyBytes, number, served_});
      spec.contentType = "application/json";
      if (!noBody && !spec.chunked) spec.contentLength = scratch_.size();
      appendHead(dst, spec);
      if (sendBody && c.close == CloseMode::Mid) {
        const std::string_view half(scratch_.data(), scratch_.size() / 2);
        if (spec.chunked) {
          appendHex(dst, half.size());
          dst.append("\r\n");
        }
        dst.append(half);
      } else if (sendBody && spec.chunked) {
        appendHex(dst, scratch_.size());
        dst.append("\r\n");
        dst.append(scratch_);
        dst.append("\r\n0\r\n\r\n");
      } else if (sendBody) {
        dst.append(scratch_);
      }
    }
  }
  if (delayed) {
    waiting_ = true;
    deferredClose_ = closeAfter;
    timers_.schedule(id_, ++timerSeq_, delay);
  } else {
    closeAfterFlush_ = closeAfterFlush_ || closeAfter;
  }
}

void Connection::pumpFill() {
  const std::string& xs = fillBytes();
  // Each round appends one piece; the loop stops at kOutHigh or when the body
  // is complete, so it runs at most twice per call.
  while (fill_.active() && outPending() < kOutHigh) {
    if (fill_.remaining == 0) {
      out_.append("0\r\n\r\n");
      fill_.terminator = false;
      break;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(fill_.remaining, kFillPiece));
    if (fill_.chunked) {
      appendHex(out_, n);
      out_.append("\r\n");
    }
    out_.append(xs.data(), n);
    if (fill_.chunked) out_.append("\r\n");
    fill_.remaining -= n;
  }
}

Connection::Result Connection::flush() {
  for (int i = 0; i < kMaxSendsPerFlush; ++i) {
    if (outSent_ > 0 && outSent_ >= out_.size() / 2) {
      out_.erase(0, outSent_);
      outSent_ = 0;
    }
    pumpFill();
    if (outPending() == 0) break;
    ssize_t n = ::send(fd_, out_.data() + outSent_, outPending(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Result::Keep;
      return Result::Close;
    }
    outSent_ += static_cast<size_t>(n);
    if (outSent_ == out_.size()) {
      out_.clear();
      outSent_ = 0;
    }
  }
  if (closeAfterFlush_ && !draining_ && !waiting_ && outPending() == 0 && !fill_.active()) {
    if (peerEof_) return Result::Close;
    ::shutdown(fd_, SHUT_WR);
    draining_ = true;
    timers_.schedule(id_, ++timerSeq_, kLinger);
  }
  return Result::Keep;
}

}  // namespace sluice::upstream_server
