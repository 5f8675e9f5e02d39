// Building blocks for integration tests that run real processes on loopback:
// child processes, temp dirs, config files, a small blocking HTTP/1.1 client
// and a curl wrapper. Everything here talks only to 127.0.0.0/8 and only ever
// signals the pids it started itself.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sluice::itest {

using namespace std::chrono_literals;
using Millis = std::chrono::milliseconds;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- paths

// The test binary runs from the repo root; walk up from the cwd to the
// directory holding the Makefile so running from build/ works too.
fs::path repoRoot();
// $SLUICE_BUILD (default "build"), relative to repoRoot() unless absolute.
fs::path buildDir();
fs::path binaryPath(std::string_view name);

// ---------------------------------------------------------------- files

// A fresh /tmp/sluice-it-XXXXXX. Removed on destruction unless the current
// test failed or SLUICE_KEEP_TMP is set, so logs of a failure stay readable.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::expected<void, std::string> writeFile(const fs::path& path, std::string_view content);
// Writes a hidden sibling (".name.tmp", which no *.yaml glob picks up) and
// renames it over `path`, the way a careful editor or kubectl-sync does: a
// watcher sees either the old or the new file, never half of one.
std::expected<void, std::string> writeFileAtomic(const fs::path& path, std::string_view content);
std::expected<std::string, std::string> readFile(const fs::path& path);
// Contents of configs/seed/<relative>, unmodified.
std::expected<std::string, std::string> seedFile(std::string_view relative);

// Replaces every ${VAR} in `text`; a variable missing from `vars` is an error
// (a silently unfilled port would only surface later as a confusing 503).
std::expected<std::string, std::string> renderTemplate(std::string_view text,
                                                       const std::map<std::string, std::string>& vars);
// "reviews-v1" -> "REVIEWS_V1_PORT": the placeholder naming rule of
// configs/seed/README.md.
std::string portVar(std::string_view upstreamName);

// ---------------------------------------------------------------- processes

class Process {
 public:
  // fork/exec argv[0] (a path, or a name looked up in PATH). stdout goes to
  // `out`, stderr to `err` (or to `out` when `err` is empty). The child dies
  // with the test process (PR_SET_PDEATHSIG) so a crashed test leaks nothing.
  // With `cgroup` (a cgroup v2 directory), the child moves itself into it
  // before exec, so even its first socket is created there.
  static std::expected<Process, std::string> start(const std::vector<std::string>& argv,
                                                   const fs::path& out, const fs::path& err = {},
                                                   const fs::path& cgroup = {});
  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  ~Process();

  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM, then SIGKILL once `grace` has passed; reaps the child. Returns
  // the waitpid status; idempotent.
  int stop(Millis grace = 3000ms);
  // Waits for the child to exit on its own; nullopt on timeout.
  std::optional<int> wait(Millis timeout);
  const fs::path& logPath() const { return out_; }
  std::string logText() const;
  // Polls the log until it contains `needle`; false on timeout or if the
  // child exits first.
  bool waitForLog(std::string_view needle, Millis timeout);

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  fs::path out_;
};

// A listener on 127.0.0.1 that never accepts, its backlog filled: further
// SYNs are dropped, so a connect to it neither succeeds nor fails until the
// connecting side's timeout. Closes everything when it goes.
class SilentListener {
 public:
  SilentListener();
  ~SilentListener();
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::vector<int> fillers_;
};

// A redis-server of the test's own on a 127.0.0.1 port, nothing persisted
// (its files in `dir`): started, stopped and started again on the same
// port by the test; stopped when it goes.
class RedisServer {
 public:
  explicit RedisServer(fs::path dir) : dir_(std::move(dir)) {}
  // Starts it (on a free port the first time, the same port after) and
  // waits until it accepts connections.
  std::expected<void, std::string> start();
  void stop() { proc_.stop(); }
  uint16_t port() const { return port_; }
  // One command, its reply as text: an integer or bulk string as is,
  // "(nil)", or "ERR ..." for an error reply.
  std::expected<std::string, std::string> command(const std::vector<std::string>& args);
  // The keys matching `pattern` (KEYS), sorted.
  std::vector<std::string> keys(const std::string& pattern);

 private:
  fs::path dir_;
  uint16_t port_ = 0;
  Process proc_;
};

// Per thread of `pid`, its capability sets from /proc/PID/task/TID/status:
// "CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb" -> bits.
std::vector<std::map<std::string, uint64_t>> threadCapabilities(pid_t pid);

// A port on 127.0.0.1 that was free a moment ago (bind 0, read, close).
// Never returns the same port twice within one test process.
uint16_t freePort();

// ---------------------------------------------------------------- HTTP

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method = "GET";
  std::string target = "/";
  std::vector<Header> headers;  // Host is added (127.0.0.1:port) if absent
  std::string body;
};

struct Response {
  int status = 0;
  std::string reason;
  std::vector<Header> headers;
  std::string body;
  bool closeDelimited = false;  // body framed by connection close

  std::optional<std::string> header(std::string_view name) const;  // case-insensitive, first
  // Parsed body, or a discarded value when the body is not JSON.
  nlohmann::json json() const;
  // One line for failure messages: "503 (x-upstream-name: -) body: ...".
  std::string summary() const;
};

// One keep-alive HTTP/1.1 connection. Blocking; every read and write is
// bounded by the timeout given at connect (SO_RCVTIMEO / SO_SNDTIMEO).
class HttpConnection {
 public:
  static std::expected<HttpConnection, std::string> connect(uint16_t port, Millis timeout = 5000ms,
                                                            const std::string& ip = "127.0.0.1");
  HttpConnection(HttpConnection&& other) noexcept;
  HttpConnection& operator=(HttpConnection&& other) noexcept;
  ~HttpConnection();

  // Sends one request and reads its full response (Content-Length, chunked
  // or close-delimited). After an error the connection is closed.
  std::expected<Response, std::string> send(const Request& request);
  // Sends raw bytes as they are (for malformed-request tests).
  std::expected<void, std::string> sendRaw(std::string_view bytes);
  std::expected<Response, std::string> readResponse(std::string_view method = "GET");
  bool isOpen() const { return fd_ >= 0; }
  uint16_t port() const { return port_; }
  void close();

 private:
  HttpConnection(int fd, uint16_t port) : fd_(fd), port_(port) {}
  std::expected<void, std::string> fill();  // reads more bytes into buf_

  int fd_ = -1;
  uint16_t port_ = 0;
  std::string buf_;  // bytes read but not yet consumed
};

// A --gateway-port-offset under which every one of `serverPorts` (a
// Gateway's server port numbers) is a free 127.0.0.1 port below the
// ephemeral range.
uint16_t freeGatewayOffset(const std::vector<uint16_t>& serverPorts);

// One request on a fresh connection.
std::expected<Response, std::string> httpRequest(uint16_t port, const Request& request,
                                                 Millis timeout = 5000ms);
// Polls `url` ("http://127.0.0.1:PORT/path") until it answers 200.
bool waitForHttp(const std::string& url, Millis timeout);

// ---------------------------------------------------------------- curl

struct CurlResult {
  int exitCode = -1;  // curl's exit code; 0 on success
  int status = 0;     // %{http_code}; 0 when no response
  std::vector<Header> headers;
  std::string body;
  std::string stderrText;
  std::optional<std::string> header(std::string_view name) const;
  nlohmann::json json() const;
};

// Runs `curl -sS -D - -o - -w <status marker> <args...>` the way a user would,
// with proxy environment variables removed so only an explicit -x applies.
// With `cgroup`, curl runs inside that cgroup v2 directory (see Process).
CurlResult curl(const std::vector<std::string>& args, Millis timeout = 10000ms,
                const fs::path& cgroup = {});

}  // namespace sluice::itest
