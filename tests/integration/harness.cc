#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace sluice::itest {
namespace {

std::string errnoText(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

std::optional<std::string> findHeader(const std::vector<Header>& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return std::nullopt;
}

// Parses "Name: value" lines up to the end of `block` (no status line).
std::vector<Header> parseHeaderLines(std::string_view block) {
  std::vector<Header> out;
  size_t pos = 0;
  while (pos < block.size()) {
    size_t eol = block.find('\n', pos);
    if (eol == std::string_view::npos) eol = block.size();
    std::string_view line = block.substr(pos, eol - pos);
    pos = eol + 1;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    out.push_back({trim(line.substr(0, colon)), trim(line.substr(colon + 1))});
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- paths

fs::path repoRoot() {
  std::error_code ec;
  fs::path dir = fs::current_path(ec);
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    if (fs::exists(p / "Makefile", ec) && fs::exists(p / "configs", ec)) return p;
    if (p == p.parent_path()) break;
  }
  return dir;
}

fs::path buildDir() {
  const char* env = std::getenv("SLUICE_BUILD");
  fs::path b = (env != nullptr && *env != '\0') ? fs::path(env) : fs::path("build");
  return b.is_absolute() ? b : repoRoot() / b;
}

fs::path binaryPath(std::string_view name) { return buildDir() / std::string(name); }

// ---------------------------------------------------------------- files

TempDir::TempDir() {
  std::string tmpl = "/tmp/sluice-it-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << errnoText("mkdtemp");
    return;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  const bool failed = ::testing::Test::HasFailure();
  if (failed || std::getenv("SLUICE_KEEP_TMP") != nullptr) {
    std::cerr << "[harness] kept " << path_ << (failed ? " (test failed)" : "") << "\n";
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::expected<void, std::string> writeFile(const fs::path& path, std::string_view content) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return std::unexpected("cannot open " + path.string() + " for writing");
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  f.close();
  if (!f) return std::unexpected("short write to " + path.string());
  return {};
}

std::expected<void, std::string> writeFileAtomic(const fs::path& path, std::string_view content) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  if (auto r = writeFile(tmp, content); !r) return r;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return std::unexpected(errnoText("rename " + tmp.string()));
  return {};
}

std::expected<std::string, std::string> readFile(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::unexpected("cannot read " + path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::expected<std::string, std::string> seedFile(std::string_view relative) {
  return readFile(repoRoot() / "configs" / "seed" / std::string(relative));
}

std::expected<std::string, std::string> renderTemplate(std::string_view text,
                                                       const std::map<std::string, std::string>& vars) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t start = text.find("${", pos);
    if (start == std::string_view::npos) break;
    size_t end = text.find('}', start);
    if (end == std::string_view::npos) return std::unexpected("unterminated ${ in template");
    std::string name(text.substr(start + 2, end - start - 2));
    auto it = vars.find(name);
    if (it == vars.end()) return std::unexpected("template variable ${" + name + "} has no value");
    out.append(text.substr(pos, start - pos));
    out.append(it->second);
    pos = end + 1;
  }
  out.append(text.substr(pos));
  return out;
}

std::string portVar(std::string_view upstreamName) {
  std::string v;
  for (char c : upstreamName) {
    v.push_back(c == '-' || c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return v + "_PORT";
}

// ---------------------------------------------------------------- processes

std::expected<Process, std::string> Process::start(const std::vector<std::string>& argv,
                                                   const fs::path& out, const fs::path& err,
                                                   const fs::path& cgroup) {
  if (argv.empty()) return std::unexpected("empty argv");
  // Everything the child needs is prepared before fork: after fork only
  // async-signal-safe calls are allowed (the test may have threads).
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<char*> cenv;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto name = kv.substr(0, kv.find('='));
    if (iequals(name, "http_proxy") || iequals(name, "https_proxy") || iequals(name, "all_proxy") ||
        iequals(name, "no_proxy")) {
      continue;
    }
    cenv.push_back(*e);
  }
  cenv.push_back(nullptr);

  int outFd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (outFd < 0) return std::unexpected(errnoText("open " + out.string()));
  int errFd = outFd;
  if (!err.empty()) {
    errFd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (errFd < 0) {
      ::close(outFd);
      return std::unexpected(errnoText("open " + err.string()));
    }
  }
  int cgFd = -1;
  if (!cgroup.empty()) {
    cgFd = ::open((cgroup / "cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (cgFd < 0) {
      ::close(outFd);
      if (errFd != outFd) ::close(errFd);
      return std::unexpected(errnoText("open " + (cgroup / "cgroup.procs").string()));
    }
  }
  int execPipe[2];
  if (::pipe2(execPipe, O_CLOEXEC) != 0) {
    ::close(outFd);
    if (errFd != outFd) ::close(errFd);
    if (cgFd >= 0) ::close(cgFd);
    return std::unexpected(errnoText("pipe2"));
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(outFd);
    if (errFd != outFd) ::close(errFd);
    ::close(execPipe[0]);
    ::close(execPipe[1]);
    if (cgFd >= 0) ::close(cgFd);
    return std::unexpected(errnoText("fork"));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    // "0" moves the writer: this child, before it runs anything.
    if (cgFd >= 0 && ::write(cgFd, "0", 1) != 1) {
      int e = errno;
      [[maybe_unused]] auto n = ::write(execPipe[1], &e, sizeof e);
      ::_exit(127);
    }
    ::dup2(outFd, STDOUT_FILENO);
    ::dup2(errFd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // Keep only stdio and the CLOEXEC exec-status pipe; drop inherited fds.
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != execPipe[1]) ::close(fd);
    }
    ::execvpe(cargv[0], cargv.data(), cenv.data());
    int e = errno;
    [[maybe_unused]] auto n = ::write(execPipe[1], &e, sizeof e);
    ::_exit(127);
  }
  ::close(execPipe[1]);
  ::close(outFd);
  if (errFd != outFd) ::close(errFd);
  if (cgFd >= 0) ::close(cgFd);
  int childErrno = 0;
  ssize_t n;
  do {
    n = ::read(execPipe[0], &childErrno, sizeof childErrno);
  } while (n < 0 && errno == EINTR);
  ::close(execPipe[0]);
  Process p;
  p.pid_ = pid;
  p.out_ = out;
  if (n > 0) {
    p.stop(0ms);
    return std::unexpected("exec " + argv[0] + ": " + std::strerror(childErrno));
  }
  return p;
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(other.status_), out_(std::move(other.out_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
    out_ = std::move(other.out_);
  }
  return *this;
}

Process::~Process() { stop(); }

bool Process::running() {
  if (pid_ <= 0) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    pid_ = -1;
    return false;
  }
  return true;
}

std::optional<int> Process::wait(Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
  return status_;
}

int Process::stop(Millis grace) {
  if (!running()) return status_;
  ::kill(pid_, SIGTERM);
  if (wait(grace)) return status_;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = st;
  pid_ = -1;
  return status_;
}

std::string Process::logText() const {
  auto t = readFile(out_);
  return t ? *t : std::string();
}

bool Process::waitForLog(std::string_view needle, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (logText().find(needle) != std::string::npos) return true;
    if (!running()) return logText().find(needle) != std::string::npos;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

SilentListener::SilentListener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(fd_, 0) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return;  // port() stays 0: the caller's connect fails loudly
  }
  port_ = ntohs(sa.sin_port);
  for (int i = 0; i < 4; ++i) {
    int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ::connect(f, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    fillers_.push_back(f);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the handshakes fill the backlog
}

SilentListener::~SilentListener() {
  for (int f : fillers_) ::close(f);
  if (fd_ >= 0) ::close(fd_);
}

std::expected<void, std::string> RedisServer::start() {
  if (!port_) port_ = freePort();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  auto p = Process::start({"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", dir_.string(), "--daemonize", "no"},
                          dir_ / ("redis-" + std::to_string(port_) + ".log"));
  if (!p) return std::unexpected("redis-server: " + p.error() + " (scripts/install-deps.sh installs it)");
  proc_ = std::move(*p);
  if (!proc_.waitForLog("Ready to accept connections", 5000ms))
    return std::unexpected("redis-server did not start: " + proc_.logText());
  return {};
}

namespace {

// Reads one RESP reply from `fd` into `out` (nested arrays flattened,
// one element per line).
bool readResp(int fd, std::string& buf, std::string& out) {
  auto line = [&](std::string& l) {
    for (;;) {
      if (size_t nl = buf.find("\r\n"); nl != std::string::npos) {
        l = buf.substr(0, nl);
        buf.erase(0, nl + 2);
        return true;
      }
      char tmp[4096];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, size_t(n));
    }
  };
  std::string l;
  if (!line(l) || l.empty()) return false;
  if (l[0] == ':' || l[0] == '+') {
    out += l.substr(1);
  } else if (l[0] == '-') {
    out += l.substr(1);
  } else if (l[0] == '$') {
    const long len = std::stol(l.substr(1));
    if (len < 0) {
      out += "(nil)";
      return true;
    }
    while (buf.size() < size_t(len) + 2) {
      char tmp[4096];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, size_t(n));
    }
    out += buf.substr(0, size_t(len));
    buf.erase(0, size_t(len) + 2);
  } else if (l[0] == '*') {
    const long n = std::stol(l.substr(1));
    for (long i = 0; i < n; ++i) {
      if (i) out += "\n";
      if (!readResp(fd, buf, out)) return false;
    }
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::expected<std::string, std::string> RedisServer::command(const std::vector<std::string>& args) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(std::string("socket: ") + strerror(errno));
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port_);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return std::unexpected(std::string("connect to redis: ") + strerror(errno));
  }
  std::string req = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  std::string buf, out;
  const bool ok = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size()) && readResp(fd, buf, out);
  ::close(fd);
  if (!ok) return std::unexpected("no reply from redis");
  return out;
}

std::vector<std::string> RedisServer::keys(const std::string& pattern) {
  std::vector<std::string> out;
  auto r = command({"KEYS", pattern});
  if (!r || r->empty()) return out;
  std::istringstream in(*r);
  for (std::string k; std::getline(in, k);) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::map<std::string, uint64_t>> threadCapabilities(pid_t pid) {
  std::vector<std::map<std::string, uint64_t>> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "status");
    std::map<std::string, uint64_t> caps;
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Cap", 0) != 0) continue;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      caps[line.substr(0, colon)] = std::stoull(line.substr(colon + 1), nullptr, 16);
    }
    out.push_back(std::move(caps));
  }
  return out;
}

uint16_t freePort() {
  static std::mutex mu;
  static std::set<uint16_t> handedOut;
  std::lock_guard lock(mu);
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    ::close(fd);
    if (port != 0 && handedOut.insert(port).second) return port;
  }
  ADD_FAILURE() << "freePort: no free port on 127.0.0.1";
  return 0;
}

uint16_t freeGatewayOffset(const std::vector<uint16_t>& serverPorts) {
  // Below the ephemeral range, so no outgoing connection can be holding
  // (or take) one of the ports between this check and the daemon's bind.
  int low = 32768;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d", &low) != 1) low = 32768;
    std::fclose(f);
  }
  if (low <= 12000) low = 32768;
  const uint16_t maxBase = *std::max_element(serverPorts.begin(), serverPorts.end());
  static std::mutex mu;
  static std::set<uint16_t> handedOut;
  std::lock_guard lock(mu);
  std::mt19937 rng(uint32_t(::getpid()) ^ uint32_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  for (int attempt = 0; attempt < 200; ++attempt) {
    const uint16_t offset = uint16_t(10000 + rng() % uint32_t(low - 10000 - maxBase));
    if (handedOut.contains(offset)) continue;
    bool free = true;
    for (uint16_t base : serverPorts) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(uint16_t(base + offset));
      free = free && fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      if (fd >= 0) ::close(fd);
    }
    if (free) {
      handedOut.insert(offset);
      return offset;
    }
  }
  ADD_FAILURE() << "freeGatewayOffset: no free offset";
  return 0;
}

// ---------------------------------------------------------------- HTTP

std::optional<std::string> Response::header(std::string_view name) const {
  return findHeader(headers, name);
}

nlohmann::json Response::json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string Response::summary() const {
  std::string s = std::to_string(status) + " (x-upstream-name: " + header("x-upstream-name").value_or("-") +
                  ") body: " + body.substr(0, 300);
  return s;
}

std::expected<HttpConnection, std::string> HttpConnection::connect(uint16_t port, Millis timeout,
                                                                   const std::string& ip) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(errnoText("socket"));
  HttpConnection conn(fd, port);
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) return std::unexpected("bad ip " + ip);
  // A blocking connect honours SO_SNDTIMEO on Linux, so this is bounded too.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return std::unexpected(errnoText("connect " + ip + ":" + std::to_string(port)));
  }
  return conn;
}

HttpConnection::HttpConnection(HttpConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(other.port_), buf_(std::move(other.buf_)) {}

HttpConnection& HttpConnection::operator=(HttpConnection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    port_ = other.port_;
    buf_ = std::move(other.buf_);
  }
  return *this;
}

HttpConnection::~HttpConnection() { close(); }

void HttpConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

std::expected<void, std::string> HttpConnection::sendRaw(std::string_view bytes) {
  if (fd_ < 0) return std::unexpected("connection closed");
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto e = errnoText("send");
      close();
      return std::unexpected(e);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

std::expected<void, std::string> HttpConnection::fill() {
  char tmp[16384];
  while (true) {
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return {};
    }
    if (n == 0) return std::unexpected("eof");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::unexpected("timeout");
    return std::unexpected(errnoText("recv"));
  }
}

std::expected<Response, std::string> HttpConnection::send(const Request& request) {
  std::string out = request.method + " " + request.target + " HTTP/1.1\r\n";
  if (!findHeader(request.headers, "host")) out += "Host: 127.0.0.1:" + std::to_string(port_) + "\r\n";
  for (const auto& h : request.headers) out += h.name + ": " + h.value + "\r\n";
  if (!request.body.empty() && !findHeader(request.headers, "content-length") &&
      !findHeader(request.headers, "transfer-encoding")) {
    out += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  out += "\r\n";
  out += request.body;
  if (auto r = sendRaw(out); !r) return std::unexpected(r.error());
  return readResponse(request.method);
}

std::expected<Response, std::string> HttpConnection::readResponse(std::string_view method) {
  if (fd_ < 0) return std::unexpected("connection closed");
  auto fail = [this](std::string why) -> std::expected<Response, std::string> {
    close();
    return std::unexpected(std::move(why));
  };
  while (true) {  // loops past interim 1xx responses
    size_t headEnd;
    while ((headEnd = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (buf_.size() > 1 << 20) return fail("response head larger than 1 MiB");
      if (auto r = fill(); !r) {
        return fail(r.error() + (buf_.empty() ? " before any response byte" : " inside response head"));
      }
    }
    std::string head = buf_.substr(0, headEnd);
    buf_.erase(0, headEnd + 4);
    size_t eol = head.find("\r\n");
    std::string statusLine = head.substr(0, eol);
    Response resp;
    // "HTTP/1.1 200 OK"
    if (statusLine.rfind("HTTP/1.", 0) != 0 || statusLine.size() < 12) return fail("bad status line: " + statusLine);
    resp.status = std::atoi(statusLine.c_str() + 9);
    resp.reason = statusLine.size() > 13 ? statusLine.substr(13) : "";
    const bool http10 = statusLine.rfind("HTTP/1.0", 0) == 0;
    if (eol != std::string::npos) resp.headers = parseHeaderLines(std::string_view(head).substr(eol + 2));
    if (resp.status >= 100 && resp.status < 200 && resp.status != 101) continue;

    auto connHdr = resp.header("connection");
    bool closeAfter = http10 ? !(connHdr && iequals(*connHdr, "keep-alive"))
                             : (connHdr && iequals(*connHdr, "close"));
    const bool noBody = method == "HEAD" || resp.status == 204 || resp.status == 304;
    auto te = resp.header("transfer-encoding");
    auto cl = resp.header("content-length");
    if (noBody) {
      // nothing
    } else if (te && te->find("chunked") != std::string::npos) {
      while (true) {
        size_t lineEnd;
        while ((lineEnd = buf_.find("\r\n")) == std::string::npos) {
          if (auto r = fill(); !r) return fail(r.error() + " inside chunk size");
        }
        size_t size = std::strtoul(buf_.c_str(), nullptr, 16);
        buf_.erase(0, lineEnd + 2);
        if (size == 0) {
          // Trailers (usually none) end with an empty line.
          while (true) {
            while ((lineEnd = buf_.find("\r\n")) == std::string::npos) {
              if (auto r = fill(); !r) return fail(r.error() + " inside trailers");
            }
            bool empty = lineEnd == 0;
            buf_.erase(0, lineEnd + 2);
            if (empty) break;
          }
          break;
        }
        while (buf_.size() < size + 2) {
          if (auto r = fill(); !r) return fail(r.error() + " inside chunk data");
        }
        resp.body.append(buf_, 0, size);
        buf_.erase(0, size + 2);
      }
    } else if (cl) {
      size_t len = std::strtoul(cl->c_str(), nullptr, 10);
      while (buf_.size() < len) {
        if (auto r = fill(); !r) return fail(r.error() + " inside body (" + std::to_string(buf_.size()) + "/" + *cl + ")");
      }
      resp.body = buf_.substr(0, len);
      buf_.erase(0, len);
    } else {
      while (true) {
        auto r = fill();
        if (!r && r.error() == "eof") break;
        if (!r) return fail(r.error() + " inside close-delimited body");
      }
      resp.body = std::move(buf_);
      buf_.clear();
      resp.closeDelimited = true;
      closeAfter = true;
    }
    if (closeAfter) close();
    return resp;
  }
}

std::expected<Response, std::string> httpRequest(uint16_t port, const Request& request, Millis timeout) {
  auto conn = HttpConnection::connect(port, timeout);
  if (!conn) return std::unexpected(conn.error());
  return conn->send(request);
}

bool waitForHttp(const std::string& url, Millis timeout) {
  // Only "http://IP:PORT/path" is needed here.
  constexpr std::string_view scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) return false;
  std::string ip = hostport.substr(0, colon);
  auto port = static_cast<uint16_t>(std::atoi(hostport.c_str() + colon + 1));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto conn = HttpConnection::connect(port, 1000ms, ip)) {
      auto resp = conn->send({.method = "GET", .target = path, .headers = {{"Host", hostport}}});
      if (resp && resp->status == 200) return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// ---------------------------------------------------------------- curl

std::optional<std::string> CurlResult::header(std::string_view name) const {
  return findHeader(headers, name);
}

nlohmann::json CurlResult::json() const { return nlohmann::json::parse(body, nullptr, false); }

CurlResult curl(const std::vector<std::string>& args, Millis timeout, const fs::path& cgroup) {
  static constexpr std::string_view kMarker = "\n@@sluice-http-code=";
  CurlResult result;
  char dir[] = "/tmp/sluice-curl-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    result.stderrText = errnoText("mkdtemp");
    return result;
  }
  const fs::path out = fs::path(dir) / "out", err = fs::path(dir) / "err";
  auto secs = std::to_string(std::max<int64_t>(1, timeout.count() / 1000));
  std::vector<std::string> argv = {"curl", "-sS", "-D", "-", "-o", "-", "--max-time", secs,
                                   "-w", std::string(kMarker) + "%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto proc = Process::start(argv, out, err, cgroup);
  if (!proc) {
    result.stderrText = proc.error();
  } else {
    auto st = proc->wait(timeout + 2000ms);
    if (!st) st = proc->stop(0ms);
    result.exitCode = WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    std::string text = readFile(out).value_or("");
    result.stderrText = readFile(err).value_or("");
    size_t m = text.rfind(kMarker);
    if (m != std::string::npos) {
      result.status = std::atoi(text.c_str() + m + kMarker.size());
      text.resize(m);
    }
    // -D - writes each response head (interim 1xx ones too) before the body.
    while (text.rfind("HTTP/", 0) == 0) {
      size_t end = text.find("\r\n\r\n");
      if (end == std::string::npos) break;
      std::string head = text.substr(0, end);
      text.erase(0, end + 4);
      const bool interim = head.size() > 9 && head[9] == '1';
      if (interim) continue;
      size_t eol = head.find("\r\n");
      if (eol != std::string::npos) result.headers = parseHeaderLines(std::string_view(head).substr(eol + 2));
      break;
    }
    result.body = std::move(text);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return result;
}

}  // namespace sluice::itest
