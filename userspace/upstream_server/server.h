// sluice-upstream's server core: N worker threads, each with its own epoll
// instance and SO_REUSEPORT listener on the same address. start()/stop() let
// tests run it in-process on an ephemeral port.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "upstream_server/connection.h"

namespace sluice::upstream_server {

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // "ADDR:PORT" or "[V6ADDR]:PORT"; port 0 picks one
  std::string name;
  int threads = 1;
  int status = 200;  // status of answers that carry no status control (a sick host: 500)
  // Delay of answers that carry no delay control (a slow host, e.g. a mirror).
  std::chrono::nanoseconds delay{0};
};

class Worker;

class UpstreamServer {
 public:
  explicit UpstreamServer(ServerOptions options);
  ~UpstreamServer();
  UpstreamServer(const UpstreamServer&) = delete;
  UpstreamServer& operator=(const UpstreamServer&) = delete;

  // Binds every listener, then starts the workers. On error nothing runs.
  std::expected<void, std::string> start();
  // Stops the workers and closes every socket; idempotent.
  void stop();

  uint16_t port() const { return port_; }
  // "ADDR:PORT" with the port actually bound.
  std::string boundAddress() const;
  uint64_t requestCount() const { return state_.requests.load(); }

 private:
  ServerOptions options_;
  ServerState state_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  std::string host_;
};

}  // namespace sluice::upstream_server
