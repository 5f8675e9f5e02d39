// sluiced: the Sluice node daemon.
#include <arpa/inet.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <expected>
#include <map>
#include <cerrno>
#include <cstring>
#include <vector>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>

#include "core/stop_signals.h"
#include "admin/server.h"
#include "bpf/datapath.h"
#include "config/loader.h"
#include "istio/duration.h"
#include "config/watcher.h"
#include "daemon/capture.h"
#include "daemon/config_manager.h"
#include "proxy/engine.h"
#include "version.h"

namespace {

bool parseAddr(const std::string& s, sockaddr_in& out, std::string& err) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    err = "expected ADDR:PORT, got '" + s + "'";
    return false;
  }
  std::string host = s.substr(0, colon);
  std::string port = s.substr(colon + 1);
  out = sockaddr_in{};
  out.sin_family = AF_INET;
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (inet_pton(AF_INET, host.c_str(), &out.sin_addr) != 1) {
    err = "'" + host + "' is not an IPv4 address";
    return false;
  }
  char* end = nullptr;
  long p = strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || p <= 0 || p > 65535) {
    err = "bad port in '" + s + "'";
    return false;
  }
  out.sin_port = htons(uint16_t(p));
  return true;
}

std::vector<sluice::stats::OutlierStats> outlierStats(const sluice::proxy::Engine& engine) {
  std::vector<sluice::stats::OutlierStats> out;
  for (const auto& h : engine.outlierClusters()) out.push_back({h->name(), h->ejectedNow(), h->ejectionsTotal()});
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.cluster < b.cluster; });
  return out;
}

std::vector<sluice::stats::CircuitStats> circuitStats(const sluice::proxy::Engine& engine) {
  using K = sluice::upstream::ClusterLimits;
  std::vector<sluice::stats::CircuitStats> out;
  for (const auto& l : engine.limitedClusters()) {
    out.push_back({l->name(), l->cxOverflow.load(), l->rqPendingOverflow.load(), l->rqRetryOverflow.load(),
                   l->inUse(K::kConnections), l->inUse(K::kPending), l->inUse(K::kRequests)});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.cluster < b.cluster; });
  return out;
}

}  // namespace

// Once the kernel data path is loaded, the daemon gives up every capability
// it will not use again, before it starts any thread (threads inherit the
// set; capset changes only the calling thread). Kept:
// - CAP_NET_BIND_SERVICE: Gateway servers on ports below 1024, bound when a
//   configuration adds them;
// - with eBPF capture also CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN (map updates
//   on every publish: VIPs, endpoint health; bpffs; detaching at exit on
//   kernels without CAP_BPF), CAP_NET_ADMIN (cgroup and sockmap programs
//   are detached with it) and CAP_IPC_LOCK (maps charged to RLIMIT_MEMLOCK
//   on older kernels).
// Everything else (DAC override, setuid, ptrace, raw sockets, module
// loading, ...) is dropped from the effective, permitted, inheritable and
// bounding sets. A daemon started without privileges has nothing to drop.
// Whether the kernel offers kernel TLS (the "tls" upper-layer protocol).
// Sluice's TLS runs over its own buffers (tls::Session), so the record
// layer stays in userspace either way; /stats says both.
bool kernelTlsAvailable() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string ulp;
  while (in >> ulp) {
    if (ulp == "tls") return true;
  }
  return false;
}

std::string dropCapabilities(bool bpf) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return std::string("capget: ") + strerror(errno);
  const uint64_t permitted = data[0].permitted | (uint64_t(data[1].permitted) << 32);
  if (permitted == 0) return {};
  std::vector<int> keep = {CAP_NET_BIND_SERVICE};
  if (bpf) keep.insert(keep.end(), {CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_IPC_LOCK});
  uint64_t mask = 0;
  for (int c : keep) mask |= uint64_t(1) << c;
  for (int c = 0; c <= CAP_LAST_CAP; ++c) {
    if (!(mask >> c & 1)) prctl(PR_CAPBSET_DROP, c, 0, 0, 0);  // EINVAL: a cap this kernel lacks
  }
  const uint64_t now = permitted & mask;
  for (int i = 0; i < 2; ++i) {
    data[i].permitted = data[i].effective = uint32_t(now >> (32 * i));
    data[i].inheritable = 0;
  }
  if (syscall(SYS_capset, &hdr, data) != 0) return std::string("capset: ") + strerror(errno);
  return {};
}

// "k=v,k2=v2" -> labels.
static std::expected<std::map<std::string, std::string>, std::string> parseLabels(std::string_view text) {
  std::map<std::string, std::string> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return std::unexpected("\"" + std::string(item) + "\" is not key=value");
    out[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

int main(int argc, char** argv) {
  CLI::App app{"sluiced: Sluice node proxy (Istio traffic management without sidecars)"};
  app.set_version_flag("--version", SLUICE_VERSION);
  std::string configDir = "/etc/sluice/config";
  std::string outbound = "127.0.0.1:15001";
  std::string adminAddr = "127.0.0.1:15000";
  bool adminAllowRemote = false;
  int workers = int(std::thread::hardware_concurrency());
  std::string bpfMode = "auto";
  std::string bpfCgroup;
  std::string bpfPinDir = sluice::bpf::kDefaultPinDir;
  bool bpfRedirect = true;
  bool bpfSplice = true;  // see --no-bpf-splice
  std::string accessLog;
  std::string credentialsDir;
  std::string gatewayBind = "0.0.0.0";
  uint32_t gatewayPortOffset = 0;
  std::string gatewayLabels;
  double drainSeconds = 10;
  double streamIdleSeconds = 300;
  std::string requestHeadersTimeout = "10s";
  std::string tlsHandshakeTimeout = "10s";
  std::string idleTimeout = "1h";
  uint64_t maxConnections = 0;
  std::string maxHeap = "0";
  std::string redis;
  app.add_option("--config-dir", configDir, "directory of Istio YAML (watched)");
  app.add_option("--outbound", outbound, "capture listener ADDR:PORT");
  app.add_option("--admin", adminAddr, "admin listener ADDR:PORT");
  app.add_option("--workers", workers, "worker threads (default: CPUs)")->check(CLI::Range(1, 256));
  app.add_option("--bpf", bpfMode, "eBPF data path: auto|required|off")
      ->check(CLI::IsMember({"auto", "required", "off"}));
  app.add_option("--bpf-cgroup", bpfCgroup,
                 "cgroup v2 directory to attach the capture programs to (its enabled "
                 "descendants are captured; never the cgroup2 root)");
  app.add_option("--bpf-pin-dir", bpfPinDir, "bpffs directory for the shared maps");
  app.add_flag("--bpf-redirect,!--no-bpf-redirect", bpfRedirect,
               "sk_msg socket redirection between node-local sockets (default on)");
  app.add_flag("--bpf-splice,!--no-bpf-splice", bpfSplice,
               "kernel splice (sk_skb) for TCP-route connections (default on; "
               "--no-bpf-splice relays them with the userspace copy loop)");
  app.add_option("--access-log", accessLog, "access log path, or - for stdout");
  app.add_option("--credentials-dir", credentialsDir, "TLS secrets, one folder per credentialName");
  app.add_option("--gateway-bind", gatewayBind, "IPv4 address Gateway servers without `bind` listen on");
  app.add_option("--gateway-port-offset", gatewayPortOffset,
                 "added to every Gateway server port (tests and unprivileged runs)")
      ->check(CLI::Range(0u, 65535u));
  app.add_option("--gateway-labels", gatewayLabels,
                 "k=v,...: this proxy's gateway labels; only Gateways whose selector they match are "
                 "served (default: every Gateway)");
  app.add_option("--drain-timeout", drainSeconds, "seconds to finish in-flight requests on SIGTERM")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--stream-idle-timeout", streamIdleSeconds,
                 "seconds without progress on an active request before it ends (408, flag SI)")
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--request-headers-timeout", requestHeadersTimeout,
                 "a request head must be complete this long after its first byte, else 408 and close "
                 "(Go duration, e.g. 10s; 0 = no limit)");
  app.add_option("--tls-handshake-timeout", tlsHandshakeTimeout,
                 "a TLS handshake on a gateway HTTPS server must end this long after accept, else the "
                 "connection closes (Go duration)");
  app.add_option("--idle-timeout", idleTimeout,
                 "idle timeout (Go duration; 0 = never) of client connections with no request in flight, "
                 "and of pooled upstream connections and TCP routes that their DestinationRule gives none");
  app.add_option("--max-heap", maxHeap,
                 "heap in use past which new requests get 503 and idle connections close "
                 "(bytes, or with K, M, G; 0 = no limit)");
  app.add_flag("--admin-allow-remote", adminAllowRemote,
               "allow --admin on a non-loopback address (the admin API shows the whole configuration)");
  app.add_option("--max-connections", maxConnections,
                 "client connections open at once, past which new ones are closed at once "
                 "(default: from the descriptor limit, leaving room for upstreams and the admin API)");
  app.add_option("--redis", redis,
                 "IPv4ADDR:PORT of the Redis that global rate limits count in (envoyproxy/ratelimit's keys, "
                 "so proxies and ratelimit services sharing it share the limits); one server, no Cluster or "
                 "Sentinel");
  CLI11_PARSE(app, argc, argv);

  sluice::proxy::EngineOptions opts;
  std::string err;
  sockaddr_in adminSa{};
  if (!parseAddr(outbound, opts.outbound, err) || !parseAddr(adminAddr, adminSa, err)) {
    fprintf(stderr, "sluiced: %s\n", err.c_str());
    return 2;
  }
  // The admin API has no authentication: /config_dump shows every route and
  // endpoint. Off loopback only when asked for by name.
  if ((ntohl(adminSa.sin_addr.s_addr) >> 24) != 127) {
    if (!adminAllowRemote) {
      fprintf(stderr,
              "sluiced: --admin %s is not a loopback address; the admin API (configuration, stats, no "
              "authentication) would be reachable from the network. Pass --admin-allow-remote to mean it.\n",
              adminAddr.c_str());
      return 2;
    }
    fprintf(stderr, "sluiced: warning: admin API on %s, reachable from the network (--admin-allow-remote)\n",
            adminAddr.c_str());
  }
  if (!redis.empty()) {
    sockaddr_in sa{};
    if (!parseAddr(redis, sa, err)) {
      fprintf(stderr, "sluiced: --redis: %s\n", err.c_str());
      return 2;
    }
    opts.redis = sa;
  }
  opts.workers = workers;
  if (inet_pton(AF_INET, gatewayBind.c_str(), &opts.gatewayBind) != 1) {
    fprintf(stderr, "sluiced: --gateway-bind %s: not an IPv4 address\n", gatewayBind.c_str());
    return 2;
  }
  opts.gatewayPortOffset = gatewayPortOffset;
  if (!gatewayLabels.empty()) {
    auto labels = parseLabels(gatewayLabels);
    if (!labels) {
      fprintf(stderr, "sluiced: --gateway-labels %s: %s\n", gatewayLabels.c_str(), labels.error().c_str());
      return 2;
    }
    opts.gatewayLabels = std::move(*labels);
  }
  // Descriptors: as many as the hard limit allows (each proxied connection
  // needs two). --max-connections keeps clients within them, so the
  // upstream side and the admin API are never starved.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  getrlimit(RLIMIT_NOFILE, &nofile);
  if (maxConnections == 0) {
    constexpr rlim_t kReserved = 128;  // config files, rings, eventfds, admin, BPF
    maxConnections = nofile.rlim_cur > 2 * kReserved ? (nofile.rlim_cur - kReserved) / 2 : 64;
  }
  opts.maxConnections = maxConnections;
  {
    // "512M", "2G", "1048576": binary multiples.
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(maxHeap.data(), maxHeap.data() + maxHeap.size(), v);
    std::string_view unit(end, size_t(maxHeap.data() + maxHeap.size() - end));
    const uint64_t mult = unit.empty() ? 1 : unit == "K" ? 1ull << 10 : unit == "M" ? 1ull << 20
                          : unit == "G" ? 1ull << 30 : 0;
    if (ec != std::errc() || mult == 0) {
      fprintf(stderr, "sluiced: --max-heap %s: a size in bytes, or with K, M or G\n", maxHeap.c_str());
      return 2;
    }
    opts.maxHeapBytes = v * mult;
  }
  opts.accessLogPath = accessLog;
  opts.drainTimeoutNs = uint64_t(drainSeconds * 1e9);
  opts.streamIdleTimeoutNs = uint64_t(streamIdleSeconds * 1e9);
  for (auto [flag, text, out] : {std::tuple{"--request-headers-timeout", &requestHeadersTimeout,
                                            &opts.requestHeadersTimeoutNs},
                                 std::tuple{"--idle-timeout", &idleTimeout, &opts.idleTimeoutNs},
                                 std::tuple{"--tls-handshake-timeout", &tlsHandshakeTimeout,
                                            &opts.tlsHandshakeTimeoutNs}}) {
    if (*text == "0") {
      *out = 0;
      continue;
    }
    auto d = sluice::istio::parseDuration(*text);
    if (!d || d->count() <= 0) {
      fprintf(stderr, "sluiced: %s %s: %s\n", flag, text->c_str(),
              d ? "must be positive (0 turns it off)" : d.error().c_str());
      return 2;
    }
    *out = uint64_t(d->count());
  }
  // An idle timeout of 0 keeps connections for as long as the timer wheel
  // can wait.
  if (opts.idleTimeoutNs == 0) opts.idleTimeoutNs = UINT64_MAX / 4;

  // eBPF capture: everything or nothing. auto falls back to explicit-proxy
  // mode with one line naming the reason; required exits with it.
  std::unique_ptr<sluice::daemon::Capture> capture;
  std::string bpfReason = "--bpf off";
  if (bpfMode != "off") {
    if (auto why = sluice::bpf::probeBpf()) {
      bpfReason = *why;
    } else {
      auto c = sluice::daemon::Capture::start(
          {.cgroupPath = bpfCgroup, .pinDir = bpfPinDir, .outbound = opts.outbound,
           .redirect = bpfRedirect, .splice = bpfSplice});
      if (c) {
        capture = std::move(*c);
      } else {
        bpfReason = c.error();
      }
    }
    if (!capture && bpfMode == "required") {
      fprintf(stderr, "sluiced: --bpf required but unavailable: %s\n", bpfReason.c_str());
      return 1;
    }
  }
  if (capture) {
    fprintf(stderr,
            "sluiced: eBPF capture on cgroup %s (maps in %s, socket redirection %s, L4 splice "
            "%s): enabled cgroups' connections to service VIPs go to %s; the daemon's own "
            "cgroup (id %llu) is never captured\n",
            capture->cgroupPath().c_str(), bpfPinDir.c_str(), bpfRedirect ? "on" : "off",
            bpfSplice ? "on" : "off", outbound.c_str(),
            static_cast<unsigned long long>(capture->ownCgroupId()));
    sluice::daemon::Capture* cap = capture.get();
    opts.originalDst = [cap](const sockaddr_in& client, const sockaddr_in& local, sockaddr_in* orig) {
      return cap->originalDst(client, local, orig);
    };
    opts.l4Splicer = cap;
    opts.onEjection = [cap](const sluice::route::Endpoint& ep, bool ejected) { cap->onEjection(ep, ejected); };
    opts.kernelActiveConnections = [cap](const sockaddr_in& ep) { return cap->activeConnections(ep); };
  } else {
    fprintf(stderr, "sluiced: explicit-proxy mode (%s): send requests to %s\n", bpfReason.c_str(),
            outbound.c_str());
  }

  // Signals are taken synchronously by the main thread; every other thread
  // inherits the blocked mask.
  sigset_t sigs = sluice::core::blockStopSignals({SIGHUP});

  if (std::string e = dropCapabilities(capture != nullptr); !e.empty()) {
    fprintf(stderr, "sluiced: could not drop capabilities: %s\n", e.c_str());
    return 1;
  }

  sluice::proxy::Engine engine(opts);
  // Certificates of HTTPS gateway servers: loaded while compiling, then
  // polled so a rotated file serves new handshakes within a second.
  sluice::tls::CredentialStore credentials(credentialsDir);
  sluice::daemon::ConfigManager configs(configDir, engine, &credentials);
  configs.reload();
  credentials.start(250);

  if (auto r = engine.start(); !r) {
    fprintf(stderr, "sluiced: %s\n", r.error().c_str());
    return 1;
  }

  const std::string ktlsText = std::string("tls.ktls_available: ") + (kernelTlsAvailable() ? "1" : "0") +
                               "\ntls.ktls_in_use: 0\n";
  sluice::admin::AdminServer adminServer(adminSa, [&](std::string_view method, std::string_view target) {
    std::string_view path = target.substr(0, target.find('?'));
    sluice::admin::Response r;
    if (method != "GET" && method != "HEAD") return sluice::admin::Response{405, "text/plain", "GET only\n"};
    if (path == "/ready") {
      bool ready = configs.loadedOnce() && !engine.stopping();
      r = {ready ? 200 : 503, "text/plain", ready ? "LIVE\n" : "NOT READY\n"};
    } else if (path == "/stats/prometheus") {
      std::string body = engine.stats().renderPrometheus();
      body += sluice::stats::renderOutlierPrometheus(outlierStats(engine));
      body += sluice::stats::renderCircuitPrometheus(circuitStats(engine));
      if (auto snap = configs.snapshot()) body += sluice::route::renderRateLimitPrometheus(snap->localRateLimits);
      if (capture) body += capture->renderPrometheus();
      r = {200, "text/plain; version=0.0.4", std::move(body)};
    } else if (path == "/stats") {
      std::string body = engine.stats().renderText();
      body += sluice::stats::renderOutlierText(outlierStats(engine));
      body += sluice::stats::renderCircuitText(circuitStats(engine));
      if (auto snap = configs.snapshot()) body += sluice::route::renderRateLimitText(snap->localRateLimits);
      if (capture) body += capture->renderText();
      body += ktlsText;
      r = {200, "text/plain", std::move(body)};
    } else if (path == "/config_dump") {
      r = {200, "application/json", configs.dumpJson()};
    } else if (path == "/clusters") {
      r = {200, "application/json", configs.clustersJson()};
    } else {
      r = {404, "text/plain", "unknown admin path; try /ready /stats /stats/prometheus /config_dump /clusters\n"};
    }
    return r;
  });
  if (capture) {
    // VIPs reach the kernel only once the engine serves the routes for them.
    sluice::daemon::Capture* cap = capture.get();
    configs.setOnPublish([cap](const sluice::route::Snapshot& s) { cap->sync(s); });
    if (auto snap = configs.snapshot()) cap->sync(*snap);
  }

  sluice::config::ConfigWatcher watcher(configDir, [&] { configs.reload(); });
  if (auto r = watcher.start(); !r) {
    fprintf(stderr, "sluiced: config watch disabled: %s\n", r.error().c_str());
  }
  // A file written between the first load and the watch starting would
  // otherwise wait for the next change: look once more (free when nothing
  // changed). Only then can /ready answer, so a change made after it is
  // always seen.
  configs.reload();
  if (auto r = adminServer.start(); !r) {
    fprintf(stderr, "sluiced: %s\n", r.error().c_str());
    engine.stop();
    engine.join();
    return 1;
  }

  fprintf(stderr, "sluiced: listening on %s (admin %s), %d worker(s), at most %llu client connections\n",
          outbound.c_str(), adminAddr.c_str(), workers, static_cast<unsigned long long>(maxConnections));

  for (;;) {
    int sig = sigwaitinfo(&sigs, nullptr);
    if (sig == SIGHUP) {
      configs.reload();
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  fprintf(stderr, "sluiced: draining\n");
  watcher.stop();
  credentials.stop();
  // Stop capturing first: new connects to VIPs are no longer sent to a
  // listener that is going away. Then drain what was accepted.
  // The engine may still look up original destinations until it is joined,
  // so the maps live until then.
  configs.setOnPublish(nullptr);
  if (capture) capture->detachPrograms();
  engine.stop();
  engine.join();
  capture.reset();
  adminServer.stop();
  fprintf(stderr, "sluiced: stopped\n");
  return 0;
}
