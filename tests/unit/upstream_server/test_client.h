// Raw-socket HTTP/1.1 client for sluice-upstream tests: writes bytes exactly
// as given and decodes responses one at a time (Content-Length or chunked).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "http/parser.h"

namespace sluice::upstream_server::testing {

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names; repeats joined with "\n"
  std::string body;                            // decoded
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? std::string() : it->second;
  }
};

class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Next complete response (a 100 Continue counts as one), or nullopt on
  // EOF, error or timeout.
  std::optional<Response> read(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int guard = 0; guard < 100000; ++guard) {
      if (auto r = tryDecode()) return r;
      if (!fill(deadline)) return tryDecode();
    }
    return std::nullopt;
  }

  // True when the server closes the connection (EOF) before the timeout,
  // with no further bytes beyond what was already decoded.
  bool closedWithoutData(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    if (!buf_.empty()) return false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t before = buf_.size();
    for (int guard = 0; guard < 1000 && !eof_; ++guard) {
      if (!fill(deadline)) break;
    }
    return eof_ && buf_.size() == before;
  }

  // Bytes received but not yet decoded.
  const std::string& pending() const { return buf_; }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    if (eof_) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  std::optional<Response> tryDecode() {
    http::ResponseHead head;
    http::ParseError err;
    if (http::parseResponseHead(buf_.data(), buf_.size(), http::Limits{}, false, head, err) !=
        http::ParseStatus::Complete) {
      return std::nullopt;
    }
    Response r;
    r.status = head.status;
    for (const auto& h : head.headers) {
      std::string name(h.name);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto& slot = r.headers[name];
      if (!slot.empty()) slot.push_back('\n');
      slot.append(h.value);
    }
    size_t used = head.headBytes;
    if (head.status >= 100 && head.status < 200) {
      buf_.erase(0, used);
      return r;
    }
    if (head.framing.kind == http::Framing::Kind::ContentLength) {
      if (buf_.size() - used < head.framing.length) return std::nullopt;
      r.body = buf_.substr(used, head.framing.length);
      buf_.erase(0, used + head.framing.length);
      return r;
    }
    if (head.framing.kind == http::Framing::Kind::Chunked) {
      http::BodyFramer framer(head.framing);
      std::vector<std::string_view> pieces;
      auto step = framer.consume(buf_.data() + used, buf_.size() - used, &pieces);
      if (step.status != http::BodyFramer::Status::Done) return std::nullopt;
      for (auto p : pieces) r.body.append(p);
      buf_.erase(0, used + step.consumed);
      return r;
    }
    if (head.framing.kind == http::Framing::Kind::UntilClose) {
      if (!eof_) return std::nullopt;
      r.body = buf_.substr(used);
      buf_.clear();
      return r;
    }
    buf_.erase(0, used);
    return r;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buf_;
};

}  // namespace sluice::upstream_server::testing
