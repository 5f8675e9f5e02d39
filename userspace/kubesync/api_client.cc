// ApiClient: blocking GETs to the Kubernetes API over TCP or TLS
// (api_client.h). Sockets are non-blocking underneath so every wait can see
// `stop` and the idle timeout.
#include "kubesync/api_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "http/parser.h"

namespace sluice::kubesync {

namespace {

constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";
constexpr std::chrono::milliseconds kConnectTimeout{5000};
constexpr std::chrono::milliseconds kTick{250};

std::string opensslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

bool isIpLiteral(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::expected<std::string, std::string> readToken(const std::string& file) {
  std::ifstream in(file);
  if (!in) return std::unexpected("cannot read token file " + file + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) return std::unexpected("token file " + file + " is empty");
  if (t.find_first_of("\r\n") != std::string::npos) return std::unexpected("token file " + file + " holds several lines");
  return t;
}

// One connection: a non-blocking socket, TLS on top when asked.
class Conn {
 public:
  Conn(const std::atomic<bool>& stop) : stop_(stop) {}
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
  }

  std::string open(const ApiServer& s, SSL_CTX* ctx) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(s.port);
    if (int rc = getaddrinfo(s.host.c_str(), port.c_str(), &hints, &res); rc != 0)
      return "cannot resolve " + s.host + ": " + gai_strerror(rc);
    std::string err = "no address for " + s.host;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      fd_ = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd_ < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        continue;
      }
      if (::connect(fd_, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
        err = waitFor(POLLOUT, kConnectTimeout);
        if (err.empty()) {
          int soErr = 0;
          socklen_t len = sizeof soErr;
          getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soErr, &len);
          if (soErr == 0) break;
          err = "connect to " + s.url() + ": " + std::strerror(soErr);
        }
      } else {
        err = "connect to " + s.url() + ": " + std::strerror(errno);
      }
      ::close(fd_);
      fd_ = -1;
    }
    freeaddrinfo(res);
    if (fd_ < 0) return err;
    if (!s.tls) return {};
    ssl_ = SSL_new(ctx);
    if (!ssl_) return "SSL_new: " + opensslError();
    SSL_set_fd(ssl_, fd_);
    if (isIpLiteral(s.host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), s.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, s.host.c_str());
      SSL_set1_host(ssl_, s.host.c_str());
    }
    while (true) {
      ERR_clear_error();
      int rc = SSL_connect(ssl_);
      if (rc == 1) return {};
      int e = SSL_get_error(ssl_, rc);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        long verify = SSL_get_verify_result(ssl_);
        if (verify != X509_V_OK)
          return "TLS handshake with " + s.url() + ": certificate not trusted: " +
                 X509_verify_cert_error_string(verify);
        return "TLS handshake with " + s.url() + ": " + opensslError();
      }
      if (auto w = waitFor(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, kConnectTimeout); !w.empty()) return w;
    }
  }

  std::string writeAll(std::string_view data) {
    while (!data.empty()) {
      ssize_t n;
      if (ssl_) {
        ERR_clear_error();
        int rc = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
        if (rc <= 0) {
          int e = SSL_get_error(ssl_, rc);
          if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return "TLS write: " + opensslError();
          if (auto w = waitFor(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, kConnectTimeout); !w.empty()) return w;
          continue;
        }
        n = rc;
      } else {
        n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) return std::string("send: ") + std::strerror(errno);
          if (auto w = waitFor(POLLOUT, kConnectTimeout); !w.empty()) return w;
          continue;
        }
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return {};
  }

  // > 0 bytes, 0 at the end of the stream; an error sets `err`.
  ssize_t read(char* buf, size_t len, std::chrono::milliseconds idle, std::string& err) {
    while (true) {
      if (ssl_) {
        ERR_clear_error();
        int rc = SSL_read(ssl_, buf, static_cast<int>(len));
        if (rc > 0) return rc;
        int e = SSL_get_error(ssl_, rc);
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        // OpenSSL 3: SYSCALL is an I/O error, and a close without
        // close_notify is an error too (a body is never cut short silently).
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          err = "TLS read: " + opensslError();
          return -1;
        }
        if (err = waitFor(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, idle); !err.empty()) return -1;
      } else {
        ssize_t n = ::recv(fd_, buf, len, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) {
          err = std::string("recv: ") + std::strerror(errno);
          return -1;
        }
        if (err = waitFor(POLLIN, idle); !err.empty()) return -1;
      }
    }
  }

  bool stopped() const { return stopped_; }

 private:
  // Empty when `events` arrived; else why not (timeout, stop, poll error).
  std::string waitFor(short events, std::chrono::milliseconds timeout) {
    auto left = timeout;
    while (left.count() > 0) {
      if (stop_) {
        stopped_ = true;
        return "stopped";
      }
      pollfd p{fd_, events, 0};
      const auto slice = std::min(left, kTick);
      int rc = ::poll(&p, 1, static_cast<int>(slice.count()));
      if (rc > 0) return {};
      if (rc < 0 && errno != EINTR) return std::string("poll: ") + std::strerror(errno);
      left -= slice;
    }
    return "no answer for " + std::to_string(timeout.count() / 1000) + " s";
  }

  const std::atomic<bool>& stop_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool stopped_ = false;
};

}  // namespace

std::expected<ApiServer, std::string> ApiServer::parse(std::string_view url) {
  ApiServer s;
  if (url.starts_with("https://")) {
    s.tls = true;
    url.remove_prefix(8);
  } else if (url.starts_with("http://")) {
    url.remove_prefix(7);
  } else {
    return std::unexpected("API server URL must start with http:// or https://");
  }
  while (url.ends_with('/')) url.remove_suffix(1);
  if (url.find('/') != std::string_view::npos) return std::unexpected("API server URL must have no path");
  std::string_view host = url, port;
  if (url.starts_with('[')) {  // [v6]:port
    size_t close = url.find(']');
    if (close == std::string_view::npos) return std::unexpected("unterminated [ in API server URL");
    host = url.substr(1, close - 1);
    if (close + 1 < url.size()) {
      if (url[close + 1] != ':') return std::unexpected("bad API server URL");
      port = url.substr(close + 2);
    }
  } else if (size_t colon = url.rfind(':'); colon != std::string_view::npos) {
    host = url.substr(0, colon);
    port = url.substr(colon + 1);
  }
  if (host.empty()) return std::unexpected("API server URL has no host");
  s.host = std::string(host);
  s.port = s.tls ? 443 : 80;
  if (!port.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
      return std::unexpected("bad port in API server URL");
    s.port = static_cast<uint16_t>(p);
  }
  return s;
}

std::expected<ApiServer, std::string> ApiServer::inCluster() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port)
    return std::unexpected("not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): give --api-server");
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  auto s = parse("https://" + h + ":" + port);
  if (!s) return s;
  s->tokenFile = std::string(kServiceAccountDir) + "/token";
  s->caFile = std::string(kServiceAccountDir) + "/ca.crt";
  return s;
}

std::string ApiServer::url() const {
  const bool v6 = host.find(':') != std::string::npos;
  return std::string(tls ? "https://" : "http://") + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

ApiClient::ApiClient(ApiServer server) : server_(std::move(server)) {
  if (!server_.tls) return;
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (!ctx_) {
    setupError_ = "SSL_CTX_new: " + opensslError();
    return;
  }
  SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  if (server_.caFile.empty()) {
    setupError_ = "https needs a CA file to verify the API server with";
  } else if (SSL_CTX_load_verify_locations(ctx_, server_.caFile.c_str(), nullptr) != 1) {
    setupError_ = "cannot load CA file " + server_.caFile + ": " + opensslError();
  }
}

ApiClient::~ApiClient() {
  if (ctx_) SSL_CTX_free(ctx_);
}

ApiClient::Result ApiClient::get(const std::string& pathAndQuery, const OnData& onData,
                                 const std::atomic<bool>& stop, std::chrono::milliseconds idle) {
  Result r;
  if (!setupError_.empty()) {
    r.error = setupError_;
    return r;
  }
  const bool v6 = server_.host.find(':') != std::string::npos;
  std::string request = "GET " + pathAndQuery + " HTTP/1.1\r\nHost: " +
                        (v6 ? "[" + server_.host + "]" : server_.host) + ":" + std::to_string(server_.port) +
                        "\r\nAccept: application/json\r\nUser-Agent: sluice-kube-sync\r\nConnection: close\r\n";
  if (!server_.tokenFile.empty()) {
    auto token = readToken(server_.tokenFile);
    if (!token) {
      r.error = token.error();
      return r;
    }
    request += "Authorization: Bearer " + *token + "\r\n";
  }
  request += "\r\n";

  Conn conn(stop);
  if (r.error = conn.open(server_, ctx_); !r.error.empty()) {
    r.stopped = conn.stopped();
    return r;
  }
  if (r.error = conn.writeAll(request); !r.error.empty()) {
    r.stopped = conn.stopped();
    return r;
  }

  std::string head;
  http::BodyFramer framer;
  bool inBody = false;
  std::vector<std::string_view> payload;
  // Body bytes through the framer to onData; false once the request is over.
  auto body = [&](std::string_view bytes) {
    payload.clear();
    auto step = framer.consume(bytes.data(), bytes.size(), &payload);
    for (std::string_view p : payload)
      if (!onData(r.status, p)) return false;
    if (step.status == http::BodyFramer::Status::Error) r.error = "malformed response body";
    return step.status == http::BodyFramer::Status::NeedMore;
  };
  char buf[65536];
  while (true) {
    ssize_t n = conn.read(buf, sizeof buf, idle, r.error);
    if (n < 0) {
      r.stopped = conn.stopped();
      return r;
    }
    if (n == 0) {
      if (!inBody) r.error = "the server closed the connection before answering";
      else if (framer.finish() != http::BodyFramer::Status::Done) r.error = "the server closed the connection mid-body";
      return r;
    }
    std::string_view data(buf, static_cast<size_t>(n));
    if (!inBody) {
      head.append(data);
      http::ResponseHead rh;
      http::ParseError pe;
      http::Limits limits;
      http::ParseStatus st;
      // 1xx heads come before the real one, possibly in the same read.
      while ((st = http::parseResponseHead(head.data(), head.size(), limits, false, rh, pe)) ==
                 http::ParseStatus::Complete &&
             rh.status >= 100 && rh.status < 200) {
        head.erase(0, rh.headBytes);
        rh = http::ResponseHead();
      }
      if (st == http::ParseStatus::Incomplete) continue;
      if (st == http::ParseStatus::Error) {
        r.error = "bad response from the API server: " + std::string(pe.reason);
        return r;
      }
      r.status = rh.status;
      inBody = true;
      framer.reset(rh.framing);
      std::string rest = head.substr(rh.headBytes);
      head.clear();
      if (rh.framing.kind == http::Framing::Kind::None || framer.done()) return r;  // no body, or Content-Length: 0
      if (!rest.empty() && !body(rest)) return r;
      continue;
    }
    if (!body(data)) return r;
  }
}

bool LineSplitter::feed(std::string_view data, const std::function<void(std::string_view)>& onLine) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    if (nl == std::string_view::npos) {
      buf_.append(data);
      return buf_.size() <= maxLine_;
    }
    if (buf_.empty()) {
      onLine(data.substr(0, nl));
    } else {
      buf_.append(data.substr(0, nl));
      if (buf_.size() > maxLine_) return false;
      onLine(buf_);
      buf_.clear();
    }
    data.remove_prefix(nl + 1);
  }
  return true;
}

}  // namespace sluice::kubesync
