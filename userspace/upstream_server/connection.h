// One accepted client connection of sluice-upstream: reads requests, answers
// them in order (pipelining), applies the per-request controls and streams
// bodies out with bounded buffering.
//
// The connection does its own non-blocking recv/send on the fd it owns; the
// worker polls and tells it what happened. It never reads the clock: delays
// are handed to the worker's TimerScheduler.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "http/parser.h"
#include "upstream_server/controls.h"

namespace sluice::upstream_server {

// Shared by every worker thread of one server instance.
struct ServerState {
  std::string name;
  int defaultStatus = 200;  // --status: answers without a status control
  std::chrono::nanoseconds defaultDelay{0};  // --delay: answers without a delay control
  std::atomic<uint64_t> requests{0};       // all requests but /__counter and /__reset
  std::atomic<uint64_t> failFirstSeen{0};  // requests that carried fail_first
  // Connections open now that carried at least one request other than the
  // /__counter and /__reset controls, and the most there ever were at once:
  // what a client's connection limit must keep down.
  std::atomic<uint64_t> servingConnections{0};
  std::atomic<uint64_t> peakConnections{0};
};

class TimerScheduler {
 public:
  virtual ~TimerScheduler() = default;
  // Calls Connection::onTimer(seq) on connection `connId` after `delay`
  // (unless the connection is gone by then).
  virtual void schedule(uint64_t connId, uint64_t seq, std::chrono::nanoseconds delay) = 0;
};

// Growable receive buffer with a hard cap: the per-connection input bound.
class InputBuffer {
 public:
  static constexpr size_t kInitial = 16 * 1024;
  static constexpr size_t kMax = 96 * 1024;  // > the parser's 60 KiB head limit

  const char* data() const { return buf_.get() + begin_; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  bool full() const { return size() >= kMax; }
  void consume(size_t n);
  // Makes room at the tail (compacting or growing up to kMax) and returns
  // the writable span; its size is 0 only when full().
  std::pair<char*, size_t> prepare();
  void commit(size_t n) { end_ += n; }

 private:
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
};

class Connection {
 public:
  enum class Result { Keep, Close };

  Connection(int fd, uint64_t id, ServerState& state, TimerScheduler& timers);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  uint64_t id() const { return id_; }
  Result onReadable();
  Result onWritable();
  Result onTimer(uint64_t seq);
  // EPOLLIN / EPOLLOUT bits this connection wants now (level-triggered).
  uint32_t wantedEvents() const;
  // What the worker last registered with epoll, so it only calls epoll_ctl
  // on a change.
  uint32_t registeredEvents() const { return registeredEvents_; }
  void setRegisteredEvents(uint32_t ev) { registeredEvents_ = ev; }

 private:
  struct Fill {
    uint64_t remaining = 0;   // body bytes of 'x' still to produce
    bool chunked = false;
    bool terminator = false;  // "0\r\n\r\n" still owed
    bool active() const { return remaining > 0 || terminator; }
  };

  void advance();
  // Returns false when the head or body needs more bytes.
  bool stepHead();
  bool stepBody();
  void finishRequest(uint64_t bodyBytes);
  void respondError(int status, std::string_view reason);
  void respondLocal(std::string_view json);
  Result flush();
  void pumpFill();
  size_t outPending() const { return out_.size() - outSent_; }

  int fd_;
  uint64_t id_;
  ServerState& state_;
  TimerScheduler& timers_;

  InputBuffer in_;
  std::string out_;
  size_t outSent_ = 0;
  Fill fill_;

  enum class Phase { Head, Body };
  Phase phase_ = Phase::Head;
  http::RequestHead head_;
  std::string headStore_;  // head bytes while a body arrives in pieces
  http::BodyFramer framer_;
  std::string scratch_;    // JSON body, reused

  // A response held back by a delay control, released by onTimer().
  bool waiting_ = false;
  std::string deferredOut_;
  Fill deferredFill_;
  bool deferredClose_ = false;

  bool closeAfterFlush_ = false;  // stop taking requests; close once out_ drains
  bool draining_ = false;         // write side shut; discarding input until EOF
  bool serving_ = false;  // counted in ServerState::servingConnections
  uint64_t served_ = 0;   // requests on this connection, controls excluded
  bool peerEof_ = false;
  uint64_t timerSeq_ = 0;
  uint32_t registeredEvents_ = 0;
};

}  // namespace sluice::upstream_server
