// For unit tests that drive a real worker's event loop on the test thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <functional>
#include <vector>

#include "core/timer_wheel.h"
#include "proxy/engine.h"
#include "proxy/worker.h"

namespace sluice::proxy {

inline sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Runs `steps` one after the other inside the worker's loop, each polled
// every millisecond until it returns true, then stops the engine and lets
// the worker drain and exit. Returns false if the steps did not finish
// within `limit`.
class Script final : public core::Timer {
 public:
  Script(Engine& engine, Worker& worker, std::vector<std::function<bool()>> steps)
      : engine_(engine), worker_(worker), steps_(std::move(steps)) {}

  bool run(std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    deadline_ = std::chrono::steady_clock::now() + limit;
    worker_.timers().schedule(*this, 1'000'000);
    worker_.run();
    return next_ == steps_.size();
  }

 private:
  void onTimer() override {
    while (next_ < steps_.size() && steps_[next_]()) ++next_;
    if (next_ == steps_.size() || std::chrono::steady_clock::now() > deadline_) {
      engine_.stop();
      return;
    }
    worker_.timers().schedule(*this, 1'000'000);
  }

  Engine& engine_;
  Worker& worker_;
  std::vector<std::function<bool()>> steps_;
  size_t next_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace sluice::proxy
