// Shared pieces of the proxy_*_test.cc files: a one-service mesh (echo, a
// dead service, a route with a 200 ms timeout), a raw socket client for what
// HttpConnection deliberately hides (interim 100 responses, slow reads,
// half-sent bodies, the peer's close), admin /stats readers and /proc
// probes of the daemon (fd count, RSS).
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "mesh.h"

namespace sluice::itest::proxy {

inline const std::string kEcho = "echo:9080";
inline const std::string kDead = "dead:9080";

// echo: one sluice-upstream. dead: an endpoint nobody listens on. The echo
// VirtualService gives /timeout a 200 ms route timeout.
inline constexpr std::string_view kConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - echo.default.svc.cluster.local
  addresses:
  - 127.10.0.40
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${ECHO_PORT}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: dead
  namespace: default
spec:
  hosts:
  - dead.default.svc.cluster.local
  addresses:
  - 127.10.0.41
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: ${DEAD_PORT}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - echo
  http:
  - match:
    - uri:
        prefix: /timeout
    timeout: 200ms
    route:
    - destination:
        host: echo
  - route:
    - destination:
        host: echo
)";

// Polls `pred` every 20 ms until it holds or `timeout` passes.
template <typename Pred>
bool eventually(Pred pred, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

inline int64_t msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t).count();
}

// ---------------------------------------------------------------- /proc

// Open file descriptors of `pid`; -1 when /proc cannot be read.
inline int fdCount(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// VmRSS of `pid` in KiB; -1 when unavailable.
inline int64_t rssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// ---------------------------------------------------------------- raw client

struct RawResponse {
  int status = 0;
  std::vector<Header> headers;  // names lower-cased
  std::string body;
  bool closeDelimited = false;
  std::optional<std::string> header(std::string_view name) const {
    for (const auto& h : headers) {
      if (h.name == name) return h.value;
    }
    return std::nullopt;
  }
};

// A blocking TCP client that shows exactly what went over the wire.
class RawConn {
 public:
  // rcvbuf > 0 shrinks the receive buffer before connecting, so a slow
  // reader pushes back on the proxy quickly.
  static std::expected<RawConn, std::string> connect(uint16_t port, Millis timeout = 5000ms, int rcvbuf = 0) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(std::string("socket: ") + strerror(errno));
    RawConn c(fd);
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = (timeout.count() % 1000) * 1000;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return std::unexpected("connect 127.0.0.1:" + std::to_string(port) + ": " + strerror(errno));
    }
    return c;
  }
  RawConn(RawConn&& o) noexcept : fd_(std::exchange(o.fd_, -1)), buf_(std::move(o.buf_)) {}
  RawConn& operator=(RawConn&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      buf_ = std::move(o.buf_);
    }
    return *this;
  }
  ~RawConn() { close(); }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with an RST (SO_LINGER 0), as a crashing client does.
  void abort() {
    if (fd_ < 0) return;
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

  std::expected<void, std::string> send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::unexpected(std::string("send: ") + strerror(errno));
      bytes.remove_prefix(size_t(n));
    }
    return {};
  }

  // One recv into the buffer; "eof", "timeout" or an errno text on failure.
  std::expected<size_t, std::string> fill(size_t max = 65536) {
    std::string tmp(max, '\0');
    for (;;) {
      ssize_t n = ::recv(fd_, tmp.data(), tmp.size(), 0);
      if (n > 0) {
        buf_.append(tmp.data(), size_t(n));
        return size_t(n);
      }
      if (n == 0) return std::unexpected("eof");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::unexpected("timeout");
      return std::unexpected(std::string("recv: ") + strerror(errno));
    }
  }

  // Everything up to and including `needle`, consumed from the buffer.
  std::expected<std::string, std::string> readUntil(std::string_view needle) {
    size_t at;
    while ((at = buf_.find(needle)) == std::string::npos) {
      if (auto r = fill(); !r) return std::unexpected(r.error() + " before \"" + std::string(needle) + "\"; got: " + buf_.substr(0, 200));
    }
    std::string out = buf_.substr(0, at + needle.size());
    buf_.erase(0, at + needle.size());
    return out;
  }

  // Reads one response (after any interim 1xx, which `interim` collects).
  std::expected<RawResponse, std::string> readResponse(bool headRequest = false,
                                                       std::vector<int>* interim = nullptr) {
    for (;;) {
      auto head = readUntil("\r\n\r\n");
      if (!head) return std::unexpected(head.error());
      RawResponse r;
      if (head->rfind("HTTP/1.", 0) != 0 || head->size() < 12) return std::unexpected("bad status line: " + *head);
      r.status = std::atoi(head->c_str() + 9);
      size_t pos = head->find("\r\n") + 2;
      while (pos + 2 < head->size()) {
        size_t eol = head->find("\r\n", pos);
        std::string line = head->substr(pos, eol - pos);
        size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
          size_t v = line.find_first_not_of(" \t", colon + 1);
          r.headers.push_back({name, v == std::string::npos ? "" : line.substr(v)});
        }
        pos = eol + 2;
      }
      if (r.status >= 100 && r.status < 200) {
        if (interim) interim->push_back(r.status);
        continue;
      }
      auto te = r.header("transfer-encoding");
      auto cl = r.header("content-length");
      if (headRequest || r.status == 204 || r.status == 304) return r;
      if (te && te->find("chunked") != std::string::npos) {
        for (;;) {
          auto line = readUntil("\r\n");
          if (!line) return std::unexpected(line.error());
          size_t size = std::strtoul(line->c_str(), nullptr, 16);
          if (size == 0) {
            if (auto end = readUntil("\r\n"); !end) return std::unexpected(end.error());
            return r;
          }
          while (buf_.size() < size + 2) {
            if (auto f = fill(); !f) return std::unexpected(f.error() + " inside a chunk");
          }
          r.body.append(buf_, 0, size);
          buf_.erase(0, size + 2);
        }
      }
      if (cl) {
        size_t len = std::strtoul(cl->c_str(), nullptr, 10);
        while (buf_.size() < len) {
          if (auto f = fill(); !f) return std::unexpected(f.error() + " inside body");
        }
        r.body = buf_.substr(0, len);
        buf_.erase(0, len);
        return r;
      }
      for (;;) {
        auto f = fill();
        if (!f && f.error() == "eof") break;
        if (!f) return std::unexpected(f.error() + " inside a close-delimited body");
      }
      r.body = std::move(buf_);
      buf_.clear();
      r.closeDelimited = true;
      return r;
    }
  }

  // True when the peer closes (FIN or RST) within the connect-time timeout
  // and sends nothing more before it.
  bool peerClosed() {
    if (!buf_.empty()) return false;
    auto f = fill();
    if (f) return false;
    return f.error() == "eof" || f.error().find("reset") != std::string::npos;
  }

  int fd() const { return fd_; }
  std::string& buffered() { return buf_; }

 private:
  explicit RawConn(int fd) : fd_(fd) {}
  int fd_ = -1;
  std::string buf_;
};

// ---------------------------------------------------------------- fixture

class ProxyTest : public ::testing::Test {
 protected:
  // Starts the echo upstream, writes kConfig and starts sluiced.
  void startMesh(int workers = 2, const std::vector<std::string>& daemonArgs = {}) {
    ASSERT_OK(mesh_.startUpstreams({"echo"}));
    mesh_.setVar("DEAD_PORT", std::to_string(freePort()));
    auto cfg = renderTemplate(kConfig, mesh_.vars());
    ASSERT_OK(cfg);
    ASSERT_OK(mesh_.writeConfig("proxy-test.yaml", *cfg));
    ASSERT_OK(mesh_.startDaemon(workers, 10000ms, daemonArgs));
  }

  std::expected<Response, std::string> get(const std::string& target, std::vector<Header> headers = {}) {
    return mesh_.get(kEcho, target, std::move(headers));
  }

  std::expected<RawConn, std::string> raw(Millis timeout = 5000ms, int rcvbuf = 0) {
    return RawConn::connect(mesh_.outboundPort(), timeout, rcvbuf);
  }

  // /stats as name -> value (counters and gauges; other lines skipped).
  std::map<std::string, int64_t> stats() { return mesh_.stats(); }
  int64_t stat(const std::string& name) { return mesh_.stat(name); }

  std::string prometheus() {
    return mesh_.prometheus();
  }

  pid_t daemonPid() { return mesh_.daemon().pid(); }
  std::string out() { return "\n" + mesh_.logs(); }

  TempDir tmp_;
  Mesh mesh_{tmp_};
};

}  // namespace sluice::itest::proxy
