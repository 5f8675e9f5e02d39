#include "admin/server.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "http/parser.h"

namespace sluice::admin {

AdminServer::AdminServer(sockaddr_in addr, Handler handler) : addr_(addr), handler_(std::move(handler)) {}

AdminServer::~AdminServer() {
  stop();
  if (listenFd_ >= 0) ::close(listenFd_);
  if (wakeFd_ >= 0) ::close(wakeFd_);
}

std::expected<void, std::string> AdminServer::start() {
  listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listenFd_ < 0) return std::unexpected(std::string("admin socket: ") + strerror(errno));
  int one = 1;
  setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listenFd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) < 0 ||
      ::listen(listenFd_, 64) < 0) {
    return std::unexpected(fmt::format("admin bind port {}: {}", ntohs(addr_.sin_port), strerror(errno)));
  }
  wakeFd_ = eventfd(0, EFD_CLOEXEC);
  if (wakeFd_ < 0) return std::unexpected(std::string("eventfd: ") + strerror(errno));
  thread_ = std::thread([this] { loop(); });
  return {};
}

void AdminServer::stop() {
  if (!thread_.joinable()) return;
  uint64_t v = 1;
  [[maybe_unused]] ssize_t n = ::write(wakeFd_, &v, sizeof(v));
  thread_.join();
}

void AdminServer::loop() {
  for (;;) {
    pollfd fds[2] = {{listenFd_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return;
    if (fds[0].revents & POLLIN) {
      int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        serve(fd);
        ::close(fd);
      } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: the connection stays in the backlog
        // and poll would report it again at once. Wait, still stoppable.
        pollfd wake{wakeFd_, POLLIN, 0};
        if (::poll(&wake, 1, 100) > 0) return;
      }
    }
  }
}

void AdminServer::serve(int fd) {
  // A slow or silent client must not wedge the admin thread.
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string buf;
  http::RequestHead head;
  http::ParseError err;
  http::Limits limits;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return;
    buf.append(chunk, size_t(n));
    head.headers.clear();
    auto st = http::parseRequestHead(buf.data(), buf.size(), limits, head, err);
    if (st == http::ParseStatus::Incomplete) continue;
    Response r;
    if (st == http::ParseStatus::Error) {
      r = {err.status, "text/plain", std::string(err.reason) + "\n"};
    } else {
      r = handler_(head.method, head.target);
    }
    std::string out = fmt::format(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", r.status,
        r.status == 200 ? "OK" : "Error", r.contentType, r.body.size());
    if (head.method != "HEAD") out += r.body;
    size_t off = 0;
    while (off < out.size()) {
      ssize_t w = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (w <= 0) return;
      off += size_t(w);
    }
    return;
  }
}

}  // namespace sluice::admin
