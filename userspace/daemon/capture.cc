#include "daemon/capture.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <algorithm>

#include "bpf/cgroup.h"
#include "stats/stats.h"

namespace sluice::daemon {

std::expected<std::unique_ptr<Capture>, std::string> Capture::start(const CaptureOptions& opts) {
  if (opts.cgroupPath.empty())
    return std::unexpected(
        "no --bpf-cgroup given (the cgroup v2 directory whose processes may be captured)");
  auto mount = bpf::findCgroup2Mount();
  if (!mount) return std::unexpected(mount.error());
  // The root would capture every process on the host, the daemon's
  // neighbours included; workloads always live in a sub-tree.
  char resolved[PATH_MAX];
  if (::realpath(opts.cgroupPath.c_str(), resolved) == nullptr)
    return std::unexpected("--bpf-cgroup " + opts.cgroupPath + ": " + std::strerror(errno));
  auto id = bpf::cgroupIdOfPath(resolved);
  if (!id) return std::unexpected("--bpf-cgroup: " + id.error());
  // Every cgroup but the hierarchy's root has cgroup.type, wherever and
  // however (cgroup namespace, bind mount) the tree is mounted.
  if (std::string(resolved) == *mount ||
      ::access((std::string(resolved) + "/cgroup.type").c_str(), F_OK) != 0)
    return std::unexpected("--bpf-cgroup " + opts.cgroupPath +
                           " is the cgroup2 root; pass the sub-tree that holds the workloads "
                           "(e.g. kubepods.slice)");

  auto self = bpf::ownCgroupPath();
  if (!self) return std::unexpected(self.error());
  auto selfId = bpf::cgroupIdOfPath(*self);
  if (!selfId) return std::unexpected("own cgroup: " + selfId.error());

  auto dp = bpf::Datapath::load({.pinDir = opts.pinDir});
  if (!dp) return std::unexpected(dp.error());

  bpf::DatapathConfig cfg;
  // A wildcard listener is reached on loopback.
  cfg.proxy.addrBe = opts.outbound.sin_addr.s_addr == htonl(INADDR_ANY)
                         ? htonl(INADDR_LOOPBACK)
                         : opts.outbound.sin_addr.s_addr;
  cfg.proxy.portBe = opts.outbound.sin_port;
  cfg.proxyCgroupId = *selfId;
  cfg.capture = true;
  cfg.redirect = opts.redirect;
  if (auto r = dp->configure(cfg); !r) return std::unexpected(r.error());

  int fd = ::open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return std::unexpected("--bpf-cgroup " + opts.cgroupPath + ": " + std::strerror(errno));
  if (auto r = dp->attach(fd); !r) {
    ::close(fd);
    return std::unexpected(r.error());
  }
  CaptureOptions kept = opts;
  kept.cgroupPath = resolved;
  auto cap = std::unique_ptr<Capture>(new Capture(std::move(kept), std::move(*dp), fd));
  cap->ownCgroupId_ = *selfId;
  return cap;
}

Capture::~Capture() {
  dp_.detach();
  if (cgroupFd_ >= 0) ::close(cgroupFd_);
}

namespace {
std::uint64_t vipKey(bpf::Endpoint4 e) { return (std::uint64_t(e.addrBe) << 16) | e.portBe; }
}  // namespace

void Capture::sync(const route::Snapshot& snap) {
  std::vector<bpf::ServiceVip> vips;
  std::unordered_map<std::uint64_t, std::string> hosts;
  vips.reserve(snap.captureVips.size());
  for (const auto& v : snap.captureVips) {
    vips.push_back({{v.addrBe, htons(v.port)}, v.tcp});
    hosts.emplace(vipKey(vips.back().vip), v.host);
  }
  std::vector<bpf::Endpoint4> endpoints;
  for (const auto& c : snap.clusters) {
    for (const route::Endpoint& ep : c->endpoints) {
      bpf::Endpoint4 e{ep.sockaddr.sin_addr.s_addr, ep.sockaddr.sin_port};
      if (std::find(endpoints.begin(), endpoints.end(), e) == endpoints.end()) endpoints.push_back(e);
    }
  }
  std::lock_guard lock(syncMu_);
  vipHosts_ = std::move(hosts);
  if (auto r = dp_.syncEndpoints(endpoints); !r)
    std::fprintf(stderr, "sluiced: eBPF: %s\n", r.error().c_str());
  if (auto r = dp_.syncServices(vips); !r)
    std::fprintf(stderr, "sluiced: eBPF: %s; capture keeps the previous VIP set\n",
                 r.error().c_str());
}

bool Capture::originalDst(const sockaddr_in& client, const sockaddr_in& local,
                          sockaddr_in* orig) const {
  auto o = dp_.originalDestination({client.sin_addr.s_addr, client.sin_port},
                                   {local.sin_addr.s_addr, local.sin_port});
  if (!o) return false;
  *orig = sockaddr_in{};
  orig->sin_family = AF_INET;
  orig->sin_addr.s_addr = o->addrBe;
  orig->sin_port = o->portBe;
  return true;
}

std::optional<uint32_t> Capture::activeConnections(const sockaddr_in& ep) const {
  auto st = dp_.peer({ep.sin_addr.s_addr, ep.sin_port});
  if (!st || !*st) return std::nullopt;
  return uint32_t(std::max<int64_t>(0, (*st)->active));
}

void Capture::onEjection(const route::Endpoint& ep, bool ejected) {
  if (auto r = dp_.setEndpointEjected({ep.sockaddr.sin_addr.s_addr, ep.sockaddr.sin_port}, ejected); !r)
    std::fprintf(stderr, "sluiced: eBPF: %s\n", r.error().c_str());
}

void Capture::prepareUpstream(int fd) {
  if (auto r = dp_.markNoRedirect(fd); !r)
    std::fprintf(stderr, "sluiced: eBPF: %s\n", r.error().c_str());
}

bool Capture::attach(int clientFd, int upstreamFd) {
  if (!opts_.splice) return false;
  auto r = dp_.spliceAttach(clientFd, upstreamFd);
  if (!r) {
    // Rare (map full): this connection is copied in userspace instead.
    std::fprintf(stderr, "sluiced: eBPF splice: %s; copying instead\n", r.error().c_str());
    return false;
  }
  return true;
}

void Capture::detach(int clientFd, int upstreamFd) { dp_.spliceDetach(clientFd, upstreamFd); }

std::optional<proxy::L4Splicer::Direction> Capture::direction(int fd) {
  auto st = dp_.spliceState(fd);
  if (!st) {
    // The proxy closes the pair on this: say why.
    std::fprintf(stderr, "sluiced: eBPF splice: %s; closing the connection\n", st.error().c_str());
    return std::nullopt;
  }
  return Direction{.redirected = st->redirected, .kept = st->kept, .held = st->held};
}

void Capture::copied(int fd, uint64_t copied) {
  if (auto r = dp_.spliceCopied(fd, copied); !r)
    std::fprintf(stderr, "sluiced: eBPF splice: %s\n", r.error().c_str());
}

std::string Capture::renderPrometheus() {
  std::string out;
  auto counters = dp_.counters();
  if (counters) {
    out += "# TYPE sluice_bpf_events_total counter\n";
    for (int i = 0; i < SLUICE_CNT_MAX; ++i) {
      auto c = static_cast<sluice_counter>(i);
      if (c == SLUICE_CNT_ACTIVE) continue;  // a gauge, below
      out += "sluice_bpf_events_total{event=\"" + std::string(bpf::counterName(c)) + "\"} " +
             std::to_string(counters->at(c)) + "\n";
    }
    out += "# TYPE sluice_bpf_active_connections gauge\nsluice_bpf_active_connections " +
           std::to_string(counters->active()) + "\n";
  }
  auto svc = dp_.serviceStats();
  if (!svc) return out;
  std::vector<stats::TcpServiceStats> rows;
  {
    std::lock_guard lock(syncMu_);
    for (const bpf::StatsEntry& e : *svc) {
      auto it = vipHosts_.find(vipKey(e.key));
      // A VIP removed from the configuration keeps its kernel counters
      // until LRU eviction; without a name it is not reported.
      if (it == vipHosts_.end()) continue;
      // Istio's source reporter: "sent" is the response towards the app,
      // "received" the request from it.
      rows.push_back({it->second, ntohs(e.key.portBe), e.stats.opened, e.stats.closed,
                      e.stats.bytesReceived, e.stats.bytesSent});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::tie(a.service, a.port) < std::tie(b.service, b.port);
  });
  return out + stats::renderTcpPrometheus(rows);
}

std::string Capture::renderText() {
  std::string out;
  auto counters = dp_.counters();
  if (!counters) return "bpf.error: " + counters.error() + "\n";
  for (int i = 0; i < SLUICE_CNT_MAX; ++i) {
    auto c = static_cast<sluice_counter>(i);
    out += "bpf." + std::string(bpf::counterName(c)) + ": " +
           (c == SLUICE_CNT_ACTIVE ? std::to_string(counters->active())
                                   : std::to_string(counters->at(c))) +
           "\n";
  }
  return out;
}

}  // namespace sluice::daemon
