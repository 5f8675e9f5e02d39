#include "recording_upstream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>

namespace sluice::itest {
namespace {

using Clock = std::chrono::steady_clock;

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

struct Conn {
  int fd = -1;
  size_t id = 0;
  std::string in;
  std::string out;
  // Answers in request order, each with the time it may go out.
  std::deque<std::pair<Clock::time_point, std::string>> pending;
  bool dead = false;
};

enum class Parse { Done, NeedMore, Bad };

// Parses one complete request from the front of `buf` into `req`; `used` is
// how many bytes it took. Re-parses from the start when more bytes arrive,
// which is fine for the small requests tests send.
Parse parseRequest(std::string_view buf, RecordedRequest& req, size_t& used) {
  size_t headEnd = buf.find("\r\n\r\n");
  if (headEnd == std::string_view::npos) return buf.size() > 65536 ? Parse::Bad : Parse::NeedMore;
  std::string_view head = buf.substr(0, headEnd);
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return Parse::Bad;
  req = RecordedRequest{};
  req.head = std::string(buf.substr(0, headEnd + 4));
  req.method = std::string(line.substr(0, sp1));
  req.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  std::optional<size_t> contentLength;
  bool chunked = false;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view h = head.substr(pos, e - pos);
    pos = e + 2;
    size_t colon = h.find(':');
    if (colon == std::string_view::npos) return Parse::Bad;
    std::string_view value = h.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    req.headers.push_back({std::string(h.substr(0, colon)), std::string(value)});
    if (iequal(h.substr(0, colon), "content-length")) contentLength = std::strtoull(std::string(value).c_str(), nullptr, 10);
    if (iequal(h.substr(0, colon), "transfer-encoding") && value.find("chunked") != std::string_view::npos) chunked = true;
  }
  size_t at = headEnd + 4;
  if (chunked) {
    // Bounded by the buffer: every chunk consumes at least its size line.
    for (;;) {
      size_t e = buf.find("\r\n", at);
      if (e == std::string_view::npos) return Parse::NeedMore;
      size_t size = std::strtoull(std::string(buf.substr(at, e - at)).c_str(), nullptr, 16);
      at = e + 2;
      if (size == 0) {
        size_t end = buf.find("\r\n", at);  // trailers are not expected: one empty line
        if (end == std::string_view::npos) return Parse::NeedMore;
        used = end + 2;
        req.body = std::string(buf.substr(headEnd + 4, used - headEnd - 4));
        return Parse::Done;
      }
      if (buf.size() < at + size + 2) return Parse::NeedMore;
      req.bodyBytes += size;
      at += size + 2;
    }
  }
  const size_t len = contentLength.value_or(0);
  if (buf.size() < at + len) return Parse::NeedMore;
  req.bodyBytes = len;
  used = at + len;
  req.body = std::string(buf.substr(at, len));
  return Parse::Done;
}

std::string answer(const std::string& name, int status, std::string_view target = {}) {
  std::string body = status == 200 ? "{\"name\":\"" + name + "\"}" : "{\"error\":\"bad request\"}";
  std::string out = "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : " Bad Request") +
                    "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
                    "\r\nx-upstream-name: " + name + "\r\n";
  if (!target.empty()) out.append("x-request-target: ").append(target).append("\r\n");
  return out + "\r\n" + body;
}

}  // namespace

std::optional<std::string> RecordedRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (iequal(h.name, name)) return h.value;
  }
  return std::nullopt;
}

std::expected<std::unique_ptr<RecordingUpstream>, std::string> RecordingUpstream::start(std::string name,
                                                                                       Millis delay) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(std::string("socket: ") + strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 512) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::string err = std::string("bind/listen: ") + strerror(errno);
    ::close(fd);
    return std::unexpected(err);
  }
  return std::unique_ptr<RecordingUpstream>(new RecordingUpstream(std::move(name), fd, ntohs(addr.sin_port), delay));
}

RecordingUpstream::RecordingUpstream(std::string name, int listenFd, uint16_t port, Millis delay)
    : name_(std::move(name)), listenFd_(listenFd), port_(port), delayMs_(delay.count()) {
  thread_ = std::thread([this] { run(); });
}

RecordingUpstream::~RecordingUpstream() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (listenFd_ >= 0) ::close(listenFd_);
}

size_t RecordingUpstream::count() const {
  std::lock_guard lock(mu_);
  return requests_.size();
}

std::vector<RecordedRequest> RecordingUpstream::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

void RecordingUpstream::setResponder(Responder r) {
  std::lock_guard lock(mu_);
  responder_ = std::move(r);
}

void RecordingUpstream::clear() {
  std::lock_guard lock(mu_);
  requests_.clear();
}

bool RecordingUpstream::waitForCount(size_t n, Millis timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (count() < n) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

void RecordingUpstream::run() {
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  char buf[16384];
  while (!stop_.load()) {
    const auto now = Clock::now();
    Millis wait = 10ms;
    fds.clear();
    fds.push_back({listenFd_, POLLIN, 0});
    for (const auto& c : conns) {
      short events = POLLIN;
      if (!c.out.empty()) events |= POLLOUT;
      fds.push_back({c.fd, events, 0});
      if (!c.pending.empty()) {
        auto due = std::chrono::duration_cast<Millis>(c.pending.front().first - now);
        wait = std::clamp(due, 0ms, wait);
      }
    }
    ::poll(fds.data(), fds.size(), int(wait.count()));

    if (fds[0].revents & POLLIN) {
      for (int i = 0; i < 256; ++i) {  // bounded: the rest waits for the next round
        int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns.push_back(Conn{.fd = fd, .id = ++accepted_});
        peak_.store(std::max(peak_.load(), conns.size()));
      }
    }
    for (size_t i = 0; i + 1 < fds.size() && i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
          ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
          if (n > 0) {
            c.in.append(buf, size_t(n));
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c.dead = true;
          if (n < 0 && errno == EINTR) continue;
          break;
        }
        // Every parsed request shrinks c.in, so this ends.
        for (;;) {
          RecordedRequest req;
          size_t used = 0;
          Parse p = parseRequest(c.in, req, used);
          if (p == Parse::NeedMore) break;
          const auto done = Clock::now();
          if (p == Parse::Bad) {
            c.pending.emplace_back(done, answer(name_, 400));
            c.in.clear();
            break;
          }
          c.in.erase(0, used);
          req.receivedAt = done;
          req.connection = c.id;
          std::string reply;
          {
            std::lock_guard lock(mu_);
            if (responder_) reply = responder_(req);
            if (reply.empty()) reply = answer(name_, 200, req.target);
            requests_.push_back(std::move(req));
          }
          c.pending.emplace_back(done + Millis(delayMs_.load()), std::move(reply));
        }
      }
      const auto t = Clock::now();
      while (!c.pending.empty() && c.pending.front().first <= t) {
        c.out += c.pending.front().second;
        c.pending.pop_front();
      }
      while (!c.out.empty() && !c.dead) {
        ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
          c.out.erase(0, size_t(n));
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        c.dead = true;
      }
    }
    for (auto& c : conns) {
      if (c.dead) ::close(c.fd);
    }
    std::erase_if(conns, [](const Conn& c) { return c.dead; });
  }
  for (auto& c : conns) ::close(c.fd);
}

}  // namespace sluice::itest
