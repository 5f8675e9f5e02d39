#include "mesh.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace sluice::itest {

Mesh::Mesh(const TempDir& tmp) : dir_(tmp.path()), configDir_(tmp.path() / "config") {
  std::error_code ec;
  fs::create_directories(configDir_, ec);
}

Mesh::~Mesh() {
  daemon_.stop();
  for (auto& [name, p] : upstreams_) p.stop();
}

std::expected<void, std::string> Mesh::startUpstreams(const std::vector<std::string>& names,
                                                     const std::vector<std::string>& extraArgs) {
  std::vector<std::pair<std::string, std::string>> at;
  for (const auto& name : names) at.emplace_back(name, "127.0.0.1:" + std::to_string(freePort()));
  return startUpstreamsAt(at, extraArgs);
}

std::expected<void, std::string> Mesh::startUpstreamsAt(const std::vector<std::pair<std::string, std::string>>& at,
                                                       const std::vector<std::string>& extraArgs) {
  const fs::path bin = binaryPath("sluice-upstream");
  if (!fs::exists(bin)) return std::unexpected(bin.string() + " not built (run make)");
  for (const auto& [name, listen] : at) {
    if (upstreams_.contains(name)) return std::unexpected("upstream " + name + " started twice");
    std::vector<std::string> argv = {bin.string(), "--listen", listen, "--name", name};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    auto p = Process::start(argv, dir_ / ("upstream-" + name + ".log"), {}, cgroup_);
    if (!p) return std::unexpected(p.error());
    // /__counter and friends reach the upstreams on 127.0.0.1 only.
    if (listen.starts_with("127.0.0.1:")) ports_[name] = static_cast<uint16_t>(std::stoi(listen.substr(10)));
    upstreams_.emplace(name, std::move(*p));
  }
  // Start all first, then wait: they come up in parallel.
  for (const auto& [name, listen] : at) {
    Process& p = upstreams_.at(name);
    if (!p.waitForLog("sluice-upstream " + name + " listening", 5000ms)) {
      return std::unexpected("sluice-upstream " + name + " did not report listening on " + listen + ":\n" +
                             p.logText());
    }
  }
  return {};
}

uint16_t Mesh::upstreamPort(const std::string& name) const {
  auto it = ports_.find(name);
  return it == ports_.end() ? 0 : it->second;
}

Process* Mesh::upstream(const std::string& name) {
  auto it = upstreams_.find(name);
  return it == upstreams_.end() ? nullptr : &it->second;
}

std::map<std::string, std::string> Mesh::vars() const {
  std::map<std::string, std::string> v = extraVars_;
  for (const auto& [name, port] : ports_) v[portVar(name)] = std::to_string(port);
  return v;
}

std::expected<void, std::string> Mesh::addSeed(const std::string& file) {
  auto text = seedFile(file);
  if (!text) return std::unexpected(text.error());
  return writeConfig(fs::path(file).filename().string(), *text);
}

std::expected<std::string, std::string> Mesh::seedVariant(
    const std::string& file, const std::vector<std::pair<std::string, std::string>>& replacements) {
  auto text = seedFile(file);
  if (!text) return std::unexpected(text.error());
  std::string out = *text;
  for (const auto& [from, to] : replacements) {
    size_t at = out.find(from);
    if (at == std::string::npos || out.find(from, at + 1) != std::string::npos) {
      return std::unexpected(file + ": \"" + from + "\" must occur exactly once");
    }
    out.replace(at, from.size(), to);
  }
  return out;
}

std::expected<void, std::string> Mesh::addSeedVariant(
    const std::string& file, const std::vector<std::pair<std::string, std::string>>& replacements) {
  auto text = seedVariant(file, replacements);
  if (!text) return std::unexpected(text.error());
  return writeConfig(fs::path(file).filename().string(), *text);
}

std::expected<void, std::string> Mesh::addServiceTemplate(const std::string& file) {
  auto text = seedFile("services/" + file);
  if (!text) return std::unexpected(text.error());
  auto rendered = renderTemplate(*text, vars());
  if (!rendered) return std::unexpected(file + ": " + rendered.error());
  // A distinct name so it cannot collide with a seed example of the same name.
  return writeConfig("services-" + file, *rendered);
}

std::expected<void, std::string> Mesh::writeConfig(const std::string& file, std::string_view content) {
  return writeFileAtomic(configDir_ / file, content);
}

std::expected<void, std::string> Mesh::applyConfig(const std::string& file, std::string_view content,
                                                  Millis timeout) {
  const int64_t want = configVersion() + 1;
  if (auto r = writeConfig(file, content); !r) return r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (configVersion() < want) {
    if (std::chrono::steady_clock::now() > deadline)
      return std::unexpected("config version " + std::to_string(want) + " not loaded within " +
                             std::to_string(timeout.count()) + " ms; last error: " + lastError());
    std::this_thread::sleep_for(20ms);
  }
  return {};
}

nlohmann::json Mesh::cluster(const std::string& name) {
  auto r = httpRequest(adminPort_, {.method = "GET", .target = "/clusters"});
  if (!r) return {};
  nlohmann::json all = r->json();  // kept alive for the loop below
  for (const auto& c : all["clusters"])
    if (c["name"] == name) return c;
  return {};
}

std::expected<void, std::string> Mesh::startDaemon(int workers, Millis readyTimeout,
                                                   const std::vector<std::string>& extraArgs) {
  const fs::path bin = binaryPath("sluiced");
  if (!fs::exists(bin)) return std::unexpected(bin.string() + " not built (run make)");
  outboundPort_ = freePort();
  adminPort_ = freePort();
  std::vector<std::string> args = {bin.string(), "--config-dir", configDir_.string(), "--outbound",
                                   "127.0.0.1:" + std::to_string(outboundPort_), "--admin",
                                   "127.0.0.1:" + std::to_string(adminPort_), "--workers", std::to_string(workers)};
  if (std::find(extraArgs.begin(), extraArgs.end(), "--bpf") == extraArgs.end()) {
    args.push_back("--bpf");
    args.push_back("off");
  }
  args.insert(args.end(), extraArgs.begin(), extraArgs.end());
  args.insert(args.begin(), daemonPrefix_.begin(), daemonPrefix_.end());
  auto p = Process::start(args, dir_ / "sluiced.log", {}, cgroup_);
  if (!p) return std::unexpected(p.error());
  daemon_ = std::move(*p);
  if (!waitForHttp("http://127.0.0.1:" + std::to_string(adminPort_) + "/ready", readyTimeout)) {
    return std::unexpected("sluiced not ready within " + std::to_string(readyTimeout.count()) + " ms" +
                           (daemon_.running() ? "" : " (it exited)") + "; log:\n" + daemon_.logText());
  }
  return {};
}

std::expected<Response, std::string> Mesh::get(const std::string& host, const std::string& target,
                                               std::vector<Header> headers) {
  headers.insert(headers.begin(), {"Host", host});
  return httpRequest(outboundPort_, {.method = "GET", .target = target, .headers = std::move(headers)});
}

std::string Mesh::servedBy(const std::string& host, const std::string& target, std::vector<Header> headers) {
  auto r = get(host, target, std::move(headers));
  if (!r) return "error: " + r.error();
  if (r->status != 200) return "status " + std::to_string(r->status);
  std::string name = upstreamName(*r);
  return name.empty() ? "status 200 without upstream name" : name;
}

std::expected<nlohmann::json, std::string> Mesh::configDump() {
  auto r = httpRequest(adminPort_, {.method = "GET", .target = "/config_dump"});
  if (!r) return std::unexpected(r.error());
  if (r->status != 200) return std::unexpected("/config_dump: " + r->summary());
  auto j = r->json();
  if (j.is_discarded()) return std::unexpected("/config_dump is not JSON: " + r->body.substr(0, 200));
  return j;
}

int64_t Mesh::configVersion() {
  auto j = configDump();
  if (!j || !j->contains("version") || !(*j)["version"].is_number_integer()) return -1;
  return (*j)["version"].get<int64_t>();
}

std::string Mesh::lastError() {
  auto j = configDump();
  if (!j) return "<" + j.error() + ">";
  if (!j->contains("last_error") || !(*j)["last_error"].is_string()) return "<no last_error field>";
  return (*j)["last_error"].get<std::string>();
}

std::vector<Mesh::Timed> Mesh::sendMany(const Request& request, int count, int threads, Millis timeout) {
  std::vector<Timed> out;
  std::mutex mu;
  std::vector<std::thread> pool;
  const uint16_t port = outboundPort_;
  for (int t = 0; t < threads; ++t) {
    const int mine = count / threads + (t < count % threads ? 1 : 0);
    pool.emplace_back([&, mine] {
      std::optional<HttpConnection> conn;
      std::vector<Timed> local;
      for (int i = 0; i < mine; ++i) {
        Timed r;
        const auto start = std::chrono::steady_clock::now();
        if (!conn || !conn->isOpen()) {
          auto c = HttpConnection::connect(port, timeout);
          if (c) conn.emplace(std::move(*c));
        }
        if (!conn || !conn->isOpen()) {
          r.error = "connect failed";
        } else if (auto resp = conn->send(request); resp) {
          r.status = resp->status;
          r.response = std::move(*resp);
          auto connection = r.response.header("connection");
          if (connection && connection->find("close") != std::string::npos) conn.reset();
        } else {
          r.error = resp.error();
          conn.reset();
        }
        r.ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start).count();
        local.push_back(std::move(r));
      }
      std::lock_guard lock(mu);
      for (auto& r : local) out.push_back(std::move(r));
    });
  }
  for (auto& th : pool) th.join();
  return out;
}

std::map<std::string, int64_t> Mesh::stats() {
  std::map<std::string, int64_t> out;
  auto r = httpRequest(adminPort_, {.method = "GET", .target = "/stats"});
  if (!r || r->status != 200) return out;
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(": ");
    if (colon == std::string::npos) continue;
    out[line.substr(0, colon)] = std::strtoll(line.c_str() + colon + 2, nullptr, 10);
  }
  return out;
}

int64_t Mesh::stat(const std::string& name) {
  auto s = stats();
  auto it = s.find(name);
  return it == s.end() ? -1 : it->second;
}

std::string Mesh::prometheus() {
  auto r = httpRequest(adminPort_, {.method = "GET", .target = "/stats/prometheus"});
  return r && r->status == 200 ? r->body : std::string();
}

int64_t istioRequests(const std::string& prometheusText, const std::vector<std::string>& labels) {
  int64_t sum = 0;
  std::istringstream in(prometheusText);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("istio_requests_total{", 0) != 0) continue;
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) sum += std::strtoll(line.c_str() + line.rfind(' ') + 1, nullptr, 10);
  }
  return sum;
}

int64_t quantile(std::vector<int64_t> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t rank = size_t(std::ceil(q * double(values.size())));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

int64_t Mesh::counter(const std::string& name) {
  auto r = httpRequest(upstreamPort(name), {.method = "GET", .target = "/__counter"});
  if (!r || r->status != 200) return -1;
  auto j = r->json();
  if (j.is_discarded() || !j.contains("requests")) return -1;
  return j["requests"].get<int64_t>();
}

std::map<std::string, int64_t> Mesh::counters() {
  std::map<std::string, int64_t> out;
  for (const auto& [name, port] : ports_) out[name] = counter(name);
  return out;
}

void Mesh::resetCounters() {
  for (const auto& [name, port] : ports_) {
    (void)httpRequest(port, {.method = "GET", .target = "/__reset"});
  }
}

std::string Mesh::logs(size_t tailBytes) const {
  std::ostringstream out;
  auto tail = [&](const std::string& label, const fs::path& p) {
    std::string t = readFile(p).value_or("");
    if (t.size() > tailBytes) t = "..." + t.substr(t.size() - tailBytes);
    out << "---- " << label << " (" << p.string() << ")\n" << t << "\n";
  };
  if (!daemon_.logPath().empty()) tail("sluiced", daemon_.logPath());
  for (const auto& [name, p] : upstreams_) tail("upstream " + name, p.logPath());
  return out.str();
}

std::string upstreamName(const Response& r) {
  if (auto h = r.header("x-upstream-name")) return *h;
  auto j = r.json();
  if (!j.is_discarded() && j.is_object() && j.contains("name") && j["name"].is_string()) {
    return j["name"].get<std::string>();
  }
  return "";
}

}  // namespace sluice::itest
