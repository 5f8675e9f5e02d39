// The admin listener: a small HTTP/1.1 server on its own thread, off the
// request path. Connections are served concurrently by one poll loop, each
// with its own deadline, so a slow client cannot hold up /ready for anyone
// else. One request per connection; handlers return the whole body.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <expected>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace sluice::admin {

struct Response {
  int status = 200;
  std::string contentType = "text/plain";
  std::string body;
};

using Handler = std::function<Response(std::string_view method, std::string_view path)>;

class AdminServer {
 public:
  AdminServer(sockaddr_in addr, Handler handler);
  ~AdminServer();
  std::expected<void, std::string> start();
  void stop();

 private:
  struct Conn;
  void loop();
  bool acceptAll(std::vector<Conn>& conns);
  void step(Conn& c);

  sockaddr_in addr_;
  Handler handler_;
  int listenFd_ = -1;
  int wakeFd_ = -1;
  int reserveFd_ = -1;
  std::thread thread_;
};

}  // namespace sluice::admin
