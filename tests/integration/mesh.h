// A small mesh on loopback: N sluice-upstreams, a config dir, and sluiced in
// explicit-proxy mode (--bpf off). Tests start the upstreams first (their
// ports go into the generated ServiceEntry/WorkloadEntry files), then write
// the config, then start the daemon.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"

namespace sluice::itest {

// Fails the current test with `expr`'s error when it holds one.
#define ASSERT_OK(expr)                                   \
  do {                                                    \
    auto&& sluice_itest_r = (expr);                       \
    ASSERT_TRUE(sluice_itest_r) << sluice_itest_r.error(); \
  } while (0)

class Mesh {
 public:
  explicit Mesh(const TempDir& tmp);
  ~Mesh();  // stops the daemon first, then the upstreams

  // Starts one sluice-upstream per name, each on its own free port, and waits
  // for its "listening" line. Can be called more than once.
  std::expected<void, std::string> startUpstreams(const std::vector<std::string>& names,
                                                 const std::vector<std::string>& extraArgs = {});
  // The same at given ADDR:PORTs (name, listen): pods at their own loopback
  // addresses. Only those on 127.0.0.1 have counters (counter()).
  std::expected<void, std::string> startUpstreamsAt(const std::vector<std::pair<std::string, std::string>>& at,
                                                   const std::vector<std::string>& extraArgs = {});
  uint16_t upstreamPort(const std::string& name) const;
  // ${NAME_PORT} for every started upstream, plus any set with setVar().
  std::map<std::string, std::string> vars() const;
  void setVar(const std::string& name, const std::string& value) { extraVars_[name] = value; }
  Process* upstream(const std::string& name);

  const fs::path& configDir() const { return configDir_; }
  // configs/seed/<file>, copied byte for byte into the config dir.
  std::expected<void, std::string> addSeed(const std::string& file);
  // configs/seed/<file> with each `from` replaced by its `to` (each `from`
  // must occur exactly once), written under the same file name: a seed
  // example with one field changed (a 3 s fault delay made 200 ms).
  std::expected<void, std::string> addSeedVariant(
      const std::string& file, const std::vector<std::pair<std::string, std::string>>& replacements);
  // The text addSeedVariant writes, for applyConfig into a running daemon.
  static std::expected<std::string, std::string> seedVariant(
      const std::string& file, const std::vector<std::pair<std::string, std::string>>& replacements);
  // configs/seed/services/<file> with its ${..._PORT} placeholders filled.
  std::expected<void, std::string> addServiceTemplate(const std::string& file);
  // Writes (atomically) a file of the test's own into the config dir.
  std::expected<void, std::string> writeConfig(const std::string& file, std::string_view content);
  // writeConfig into a running daemon's directory, then waits until it has
  // loaded a newer configuration version (the error carries its last_error).
  std::expected<void, std::string> applyConfig(const std::string& file, std::string_view content,
                                               Millis timeout = 3000ms);

  // Processes started from now on (upstreams, the daemon) run in this
  // cgroup v2 directory. Empty (the default): the test's own cgroup.
  void setCgroup(const fs::path& cgroup) { cgroup_ = cgroup; }
  // A command the daemon is started through, which must exec it in place
  // (the pid stays the daemon's): {"prlimit", "--nofile=48:48", "--"}.
  void setDaemonPrefix(std::vector<std::string> prefix) { daemonPrefix_ = std::move(prefix); }

  // Starts sluiced on fresh outbound/admin ports and waits for /ready.
  // `extraArgs` are appended to the command line; without a --bpf among
  // them the daemon runs with --bpf off.
  std::expected<void, std::string> startDaemon(int workers = 2, Millis readyTimeout = 10000ms,
                                               const std::vector<std::string>& extraArgs = {});
  Process& daemon() { return daemon_; }
  uint16_t outboundPort() const { return outboundPort_; }
  uint16_t adminPort() const { return adminPort_; }

  // A request through the daemon's outbound listener on a fresh connection,
  // origin-form with `Host: host`.
  std::expected<Response, std::string> get(const std::string& host, const std::string& target = "/",
                                           std::vector<Header> headers = {});
  // Which upstream served the request: its name, or "status NNN" when the
  // daemon answered itself, or "error: ..." on a transport failure.
  std::string servedBy(const std::string& host, const std::string& target = "/",
                       std::vector<Header> headers = {});

  // `count` copies of `request` through the outbound listener from `threads`
  // threads, each on its own keep-alive connection (a fresh one after an
  // error or a close). Results come back in no particular order.
  struct Timed {
    int status = 0;  // 0: transport error (see `error`)
    int64_t ms = 0;  // request sent to response read
    std::string error;
    Response response;
  };
  std::vector<Timed> sendMany(const Request& request, int count, int threads, Millis timeout = 10000ms);

  // Admin API.
  // /stats as name -> value (lines "name: integer"; others skipped).
  std::map<std::string, int64_t> stats();
  // One /stats value; -1 when absent.
  int64_t stat(const std::string& name);
  std::string prometheus();
  std::expected<nlohmann::json, std::string> configDump();
  // "version" from /config_dump, -1 when unavailable.
  int64_t configVersion();
  std::string lastError();
  // One cluster of /clusters by name; null JSON when absent.
  nlohmann::json cluster(const std::string& name);

  // The upstream's own request counter (GET /__counter), -1 on error.
  int64_t counter(const std::string& name);
  std::map<std::string, int64_t> counters();
  void resetCounters();

  // Tail of every log, for failure messages.
  std::string logs(size_t tailBytes = 3000) const;

 private:
  fs::path dir_;
  fs::path configDir_;
  std::map<std::string, uint16_t> ports_;
  std::map<std::string, Process> upstreams_;
  std::map<std::string, std::string> extraVars_;
  Process daemon_;
  std::vector<std::string> daemonPrefix_;
  fs::path cgroup_;
  uint16_t outboundPort_ = 0;
  uint16_t adminPort_ = 0;
};

// Sum of the istio_requests_total series whose label text contains every
// string of `labels` (e.g. `response_flags="DI"`).
int64_t istioRequests(const std::string& prometheusText, const std::vector<std::string>& labels);

// The q-quantile (0..1, nearest rank) of `values`; 0 when empty.
int64_t quantile(std::vector<int64_t> values, double q);

// Upstream name from a response: the x-upstream-name header, else the JSON
// body's "name"; empty when neither is present.
std::string upstreamName(const Response& r);

}  // namespace sluice::itest
