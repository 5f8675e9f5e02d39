#include "upstream_server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <queue>
#include <unordered_map>

namespace sluice::upstream_server {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kListenerTag = 1;
constexpr uint64_t kWakeTag = 2;
constexpr uint64_t kTimerTag = 3;
constexpr uint64_t kFirstConnId = 16;
constexpr size_t kMaxConnsPerWorker = 16384;
constexpr int kMaxAcceptsPerWakeup = 64;
constexpr int kMaxEvents = 256;
constexpr std::chrono::milliseconds kAcceptPause{100};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

struct ListenAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string host;
};

std::expected<ListenAddr, std::string> parseListen(const std::string& text) {
  ListenAddr out;
  std::string host;
  std::string portText;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::unexpected("listen address '" + text + "' must look like [::1]:8080");
    }
    host = text.substr(1, close - 1);
    portText = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      return std::unexpected("listen address '" + text + "' must look like 127.0.0.1:8080");
    }
    host = text.substr(0, colon);
    portText = text.substr(colon + 1);
    if (host.empty()) host = "0.0.0.0";
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (ec != std::errc() || ptr != portText.data() + portText.size() || port > 65535) {
    return std::unexpected("listen port '" + portText + "' is not a number in 0..65535");
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in6);
  } else {
    return std::unexpected("listen host '" + host + "' is not an IP address literal");
  }
  out.host = host;
  return out;
}

void setPort(ListenAddr& a, uint16_t port) {
  if (a.ss.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&a.ss)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&a.ss)->sin6_port = htons(port);
  }
}

std::expected<Fd, std::string> openListener(const ListenAddr& a) {
  Fd fd(::socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return std::unexpected(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return std::unexpected(std::string("SO_REUSEPORT: ") + std::strerror(errno));
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) {
    return std::unexpected(std::string("bind: ") + std::strerror(errno));
  }
  if (::listen(fd.get(), 4096) != 0) return std::unexpected(std::string("listen: ") + std::strerror(errno));
  return fd;
}

}  // namespace

// One thread's event loop. Owns its listener, connections and timers; the
// only cross-thread state is ServerState's atomics and the wake eventfd.
class Worker final : public TimerScheduler {
 public:
  Worker(ServerState& state, Fd listener) : state_(state), listener_(std::move(listener)) {}

  std::expected<void, std::string> init() {
    epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    wake_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    timer_ = Fd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (epoll_.get() < 0 || wake_.get() < 0 || timer_.get() < 0) {
      return std::unexpected(std::string("epoll/eventfd/timerfd: ") + std::strerror(errno));
    }
    if (!add(listener_.get(), EPOLLIN, kListenerTag) || !add(wake_.get(), EPOLLIN, kWakeTag) ||
        !add(timer_.get(), EPOLLIN, kTimerTag)) {
      return std::unexpected(std::string("epoll_ctl: ") + std::strerror(errno));
    }
    return {};
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
  }

  void run() {
    epoll_event events[kMaxEvents];
    while (!stopping_) {
      int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        if (tag == kListenerTag) {
          acceptSome();
        } else if (tag == kWakeTag) {
          stopping_ = true;
        } else if (tag == kTimerTag) {
          fireTimers();
        } else {
          onConnEvent(tag, events[i].events);
        }
      }
    }
    conns_.clear();
  }

  void schedule(uint64_t connId, uint64_t seq, std::chrono::nanoseconds delay) override {
    auto when = Clock::now() + delay;
    timers_.push(TimerEntry{when, connId, seq});
    if (!armed_ || when < armedAt_) arm(when);
  }

 private:
  struct TimerEntry {
    Clock::time_point when;
    uint64_t connId;
    uint64_t seq;
    bool operator>(const TimerEntry& o) const { return when > o.when; }
  };

  bool add(int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  void arm(Clock::time_point when) {
    itimerspec spec{};
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
    if (ns <= 0) ns = 1;  // 0 would disarm
    spec.it_value.tv_sec = ns / 1'000'000'000;
    spec.it_value.tv_nsec = ns % 1'000'000'000;
    // steady_clock is CLOCK_MONOTONIC on Linux, so the deadline is absolute
    // in the timerfd's own clock.
    ::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
    armed_ = true;
    armedAt_ = when;
  }

  void fireTimers() {
    uint64_t expirations;
    [[maybe_unused]] auto r = ::read(timer_.get(), &expirations, sizeof expirations);
    armed_ = false;
    auto now = Clock::now();
    // Bounded by the heap size, which is bounded by live connections (each
    // holds at most one current timer; stale ones drain out here).
    while (!timers_.empty() && timers_.top().when <= now) {
      TimerEntry e = timers_.top();
      timers_.pop();
      if (e.connId == kListenerTag) {
        add(listener_.get(), EPOLLIN, kListenerTag);
        continue;
      }
      auto it = conns_.find(e.connId);
      if (it == conns_.end()) continue;
      finish(*it->second, it->second->onTimer(e.seq));
    }
    if (!timers_.empty()) arm(timers_.top().when);
  }

  void acceptSome() {
    for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // The pending connection stays queued, so a level-triggered
          // listener would spin; mute it and retry after a pause.
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
          schedule(kListenerTag, 0, kAcceptPause);
        }
        return;  // EAGAIN, or a transient error the next wakeup retries
      }
      if (conns_.size() >= kMaxConnsPerWorker) {
        ::close(fd);
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      uint64_t id = nextId_++;
      auto conn = std::make_unique<Connection>(fd, id, state_, *this);
      conn->setRegisteredEvents(EPOLLIN);
      if (!add(fd, EPOLLIN, id)) continue;  // conn's destructor closes fd
      conns_.emplace(id, std::move(conn));
    }
  }

  void onConnEvent(uint64_t id, uint32_t events) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Connection& c = *it->second;
    // ERR or HUP: the peer reset or both directions are shut; nothing we
    // could still send would arrive.
    if (events & (EPOLLERR | EPOLLHUP)) {
      finish(c, Connection::Result::Close);
      return;
    }
    auto r = Connection::Result::Keep;
    if (events & EPOLLIN) {
      r = c.onReadable();
    } else if (events & EPOLLOUT) {
      r = c.onWritable();
    }
    finish(c, r);
  }

  // Applies a handler's verdict: drop the connection or update its interest.
  void finish(Connection& c, Connection::Result r) {
    if (r == Connection::Result::Close) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd(), nullptr);
      conns_.erase(c.id());
      return;
    }
    uint32_t want = c.wantedEvents();
    if (want == c.registeredEvents()) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = c.id();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd(), &ev);
    c.setRegisteredEvents(want);
  }

  ServerState& state_;
  Fd listener_;
  Fd epoll_;
  Fd wake_;
  Fd timer_;
  bool stopping_ = false;
  uint64_t nextId_ = kFirstConnId;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timers_;
  bool armed_ = false;
  Clock::time_point armedAt_{};
};

UpstreamServer::UpstreamServer(ServerOptions options) : options_(std::move(options)) {
  state_.name = options_.name;
  state_.defaultStatus = options_.status;
  state_.defaultDelay = options_.delay;
}

UpstreamServer::~UpstreamServer() { stop(); }

std::string UpstreamServer::boundAddress() const {
  if (host_.find(':') != std::string::npos) return "[" + host_ + "]:" + std::to_string(port_);
  return host_ + ":" + std::to_string(port_);
}

std::expected<void, std::string> UpstreamServer::start() {
  if (!threads_.empty()) return std::unexpected("server already started");
  if (options_.threads < 1 || options_.threads > 256) return std::unexpected("threads must be in 1..256");
  for (char c : options_.name) {
    // The name goes into a response header verbatim.
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return std::unexpected("name must not contain control characters");
  }
  auto addr = parseListen(options_.listen);
  if (!addr) return std::unexpected(addr.error());
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < options_.threads; ++i) {
    auto fd = openListener(*addr);
    if (!fd) return std::unexpected(options_.listen + ": " + fd.error());
    if (i == 0) {
      // With port 0 the kernel picks one; the other listeners join it.
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len);
      uint16_t port = ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
                                              : ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
      setPort(*addr, port);
      port_ = port;
    }
    auto w = std::make_unique<Worker>(state_, std::move(*fd));
    if (auto r = w->init(); !r) return std::unexpected(r.error());
    workers.push_back(std::move(w));
  }
  host_ = addr->host;
  workers_ = std::move(workers);
  for (auto& w : workers_) threads_.emplace_back([w = w.get()] { w->run(); });
  return {};
}

void UpstreamServer::stop() {
  for (auto& w : workers_) w->wake();
  for (auto& t : threads_) t.join();
  threads_.clear();
  workers_.clear();
}

}  // namespace sluice::upstream_server
