// An in-process HTTP/1.1 upstream that remembers every request it received
// (method, target, all headers, body size) and answers each one after a
// delay that the test can change while it runs. sluice-upstream only counts
// requests and echoes them back to the caller; a mirrored request's answer
// is thrown away by the proxy, so what the mirror saw (its Host, its body)
// and a mirror that is slow for reasons of its own need this instead.
//
// One thread, poll(), keep-alive, in-order answers on each connection.
// Listens on 127.0.0.1 only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace sluice::itest {

struct RecordedRequest {
  std::string head;    // the request line and headers, byte for byte, with the blank line
  std::string method;
  std::string target;  // as sent: path and query
  std::vector<Header> headers;
  size_t bodyBytes = 0;
  std::string body;  // the body's bytes as they came, framing included
  size_t connection = 0;  // which accepted connection it came on, counted from 1
  std::chrono::steady_clock::time_point receivedAt;

  std::optional<std::string> header(std::string_view name) const;  // case-insensitive, first
};

class RecordingUpstream {
 public:
  // `delay`: how long every answer waits from the moment its request is
  // complete (0: at once).
  static std::expected<std::unique_ptr<RecordingUpstream>, std::string> start(std::string name,
                                                                             Millis delay = 0ms);
  ~RecordingUpstream();
  RecordingUpstream(const RecordingUpstream&) = delete;
  RecordingUpstream& operator=(const RecordingUpstream&) = delete;

  uint16_t port() const { return port_; }
  const std::string& name() const { return name_; }
  // Applies to requests completed from now on.
  void setDelay(Millis delay) { delayMs_.store(delay.count()); }

  // The bytes to answer a request with (status line, headers, body), sent
  // verbatim: crafted responses. An empty string, or no responder, gets the
  // default 200 with `x-upstream-name` and `x-request-target`.
  using Responder = std::function<std::string(const RecordedRequest&)>;
  void setResponder(Responder r);

  size_t count() const;
  // Connections accepted so far, and the most ever open at once.
  size_t connectionsAccepted() const { return accepted_.load(); }
  size_t peakConnections() const { return peak_.load(); }
  std::vector<RecordedRequest> requests() const;
  void clear();
  // Polls until at least `n` requests arrived; false on timeout.
  bool waitForCount(size_t n, Millis timeout) const;

 private:
  RecordingUpstream(std::string name, int listenFd, uint16_t port, Millis delay);
  void run();

  std::string name_;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int64_t> delayMs_{0};
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0}, peak_{0};
  mutable std::mutex mu_;
  std::vector<RecordedRequest> requests_;
  Responder responder_;
  std::thread thread_;
};

}  // namespace sluice::itest
