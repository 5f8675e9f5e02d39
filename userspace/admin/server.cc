// One thread, one poll loop, many connections: a client that trickles its
// request (or never sends one) holds only its own slot until its deadline,
// never the listener, so readiness probes keep answering.
#include "admin/server.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "http/parser.h"

namespace sluice::admin {

namespace {

using Clock = std::chrono::steady_clock;

// A connection has this long from its accept to have sent its request and
// taken its whole response.
constexpr auto kConnDeadline = std::chrono::seconds(5);
// Past this many open connections, the oldest is closed to make room: the
// newest client is the one most likely to be a probe that still waits.
constexpr size_t kMaxConns = 64;
constexpr int kAcceptBatch = 16;
// Heads past this are answered 431 (admin requests are one short line).
constexpr size_t kMaxHeadBytes = 16 * 1024;

std::string render(const Response& r, bool head) {
  std::string out = fmt::format(
      "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", r.status,
      r.status == 200 ? "OK" : "Error", r.contentType, r.body.size());
  if (!head) out += r.body;
  return out;
}

}  // namespace

struct AdminServer::Conn {
  int fd = -1;
  Clock::time_point deadline;
  std::string in;
  std::string out;  // the response, once the request is complete
  size_t sent = 0;
  bool done = false;
};

AdminServer::AdminServer(sockaddr_in addr, Handler handler) : addr_(addr), handler_(std::move(handler)) {}

AdminServer::~AdminServer() {
  stop();
  if (listenFd_ >= 0) ::close(listenFd_);
  if (wakeFd_ >= 0) ::close(wakeFd_);
  if (reserveFd_ >= 0) ::close(reserveFd_);
}

std::expected<void, std::string> AdminServer::start() {
  listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listenFd_ < 0) return std::unexpected(std::string("admin socket: ") + strerror(errno));
  int one = 1;
  setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listenFd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) < 0 ||
      ::listen(listenFd_, 64) < 0) {
    return std::unexpected(fmt::format("admin bind port {}: {}", ntohs(addr_.sin_port), strerror(errno)));
  }
  // Held so /ready and /stats still answer when the process is out of
  // descriptors: given up for one accept, taken back once one is free.
  reserveFd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
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
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  bool acceptPaused = false;  // out of descriptors: retry after a short wait
  for (;;) {
    auto now = Clock::now();
    int timeoutMs = acceptPaused ? 100 : -1;
    fds.clear();
    fds.push_back({wakeFd_, POLLIN, 0});
    fds.push_back({acceptPaused ? -1 : listenFd_, POLLIN, 0});
    for (const Conn& c : conns) {
      fds.push_back({c.fd, short(c.out.empty() ? POLLIN : POLLOUT), 0});
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now).count() + 1;
      timeoutMs = timeoutMs < 0 ? int(std::max<int64_t>(left, 0)) : std::min<int>(timeoutMs, int(std::max<int64_t>(left, 0)));
    }
    int n = ::poll(fds.data(), fds.size(), timeoutMs);
    if (n < 0 && errno != EINTR) break;
    if (n > 0 && (fds[0].revents & POLLIN)) break;
    acceptPaused = false;
    for (size_t i = 0; n > 0 && i < conns.size(); ++i) {
      if (fds[i + 2].revents != 0) step(conns[i]);
    }
    if (n > 0 && (fds[1].revents & POLLIN)) acceptPaused = !acceptAll(conns);
    now = Clock::now();
    for (Conn& c : conns) {
      if (c.done || c.deadline <= now) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(conns, [](const Conn& c) { return c.fd < 0; });
    if (reserveFd_ < 0) reserveFd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  for (Conn& c : conns) ::close(c.fd);
}

// Takes every pending connection; false when the process is out of
// descriptors or memory (the connection stays in the backlog).
bool AdminServer::acceptAll(std::vector<Conn>& conns) {
  // A bounded batch per turn: a flood of connects cannot keep the loop from
  // serving the connections it already has.
  for (int i = 0; i < kAcceptBatch; ++i) {
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && reserveFd_ >= 0) {
      // Out of descriptors: the one kept in reserve serves this probe.
      ::close(reserveFd_);
      reserveFd_ = -1;
      fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    }
    if (fd < 0) {
      return !(errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM);
    }
    if (conns.size() >= kMaxConns) {
      // Make room by closing the oldest connection still sending its
      // request (a stalled or trickling client); one being answered stays.
      auto victim = conns.end();
      for (auto it = conns.begin(); it != conns.end(); ++it) {
        if (it->out.empty() && (victim == conns.end() || it->deadline < victim->deadline)) victim = it;
      }
      if (victim == conns.end()) {
        ::close(fd);  // every slot is busy answering: this client tries again
        continue;
      }
      ::close(victim->fd);
      conns.erase(victim);
    }
    conns.push_back(Conn{.fd = fd, .deadline = Clock::now() + kConnDeadline});
  }
  return true;
}

// Reads what the socket has, answers once the head is complete, writes what
// the socket takes. Marks the connection done when it is finished with.
void AdminServer::step(Conn& c) {
  if (c.out.empty()) {
    char chunk[4096];
    bool eof = false;  // a request followed by a FIN (shutdown(SHUT_WR)) still gets its answer
    for (;;) {
      ssize_t n = ::recv(c.fd, chunk, sizeof(chunk), 0);
      if (n > 0) {
        c.in.append(chunk, size_t(n));
        if (c.in.size() > kMaxHeadBytes) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        eof = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        c.done = true;
        return;
      }
      break;
    }
    http::RequestHead head;
    http::ParseError err;
    http::Limits limits;
    limits.maxHeadBytes = kMaxHeadBytes;
    auto st = http::parseRequestHead(c.in.data(), c.in.size(), limits, head, err);
    if (st == http::ParseStatus::Incomplete) {
      c.done = eof;
      return;
    }
    if (st == http::ParseStatus::Error) {
      c.out = render({err.status, "text/plain", std::string(err.reason) + "\n"}, false);
    } else {
      c.out = render(handler_(head.method, head.target), head.method == "HEAD");
    }
  }
  while (c.sent < c.out.size()) {
    ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (w > 0) {
      c.sent += size_t(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    break;
  }
  c.done = true;
}

}  // namespace sluice::admin
