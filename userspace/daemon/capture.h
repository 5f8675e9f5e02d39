// The daemon's side of the kernel data path: load and attach the BPF
// programs to the cgroup given by --bpf-cgroup, point captures at the
// outbound listener, keep the VIP map equal to the published configuration,
// and answer the engine's original-destination lookups.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <expected>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "bpf/datapath.h"
#include "proxy/tcp_proxy.h"
#include "route/table.h"

namespace sluice::daemon {

struct CaptureOptions {
  std::string cgroupPath;  // the cgroup v2 directory to attach to (required)
  std::string pinDir = bpf::kDefaultPinDir;
  sockaddr_in outbound{};  // where captured connects are sent
  bool redirect = true;    // sk_msg socket redirection for node-local pairs
  bool splice = true;      // sk_skb splice for L4 (TCP route) connections (--no-bpf-splice)
};

class Capture final : public proxy::L4Splicer {
 public:
  // Everything or nothing: on error nothing stays attached, and the message
  // says why (for the one log line of --bpf auto, the exit of required).
  static std::expected<std::unique_ptr<Capture>, std::string> start(const CaptureOptions& opts);
  ~Capture() override;

  // Makes sluice_services the snapshot's capture VIPs and sluice_endpts its
  // endpoints. Thread-safe.
  void sync(const route::Snapshot& snap);
  // Open connections to `ep` the kernel counted (sluice_peers), or nullopt.
  std::optional<uint32_t> activeConnections(const sockaddr_in& ep) const;
  // Outlier detection ejected or returned an endpoint (any thread).
  void onEjection(const route::Endpoint& ep, bool ejected);
  bool originalDst(const sockaddr_in& client, const sockaddr_in& local, sockaddr_in* orig) const;

  // Kernel counters for the admin API: Istio's TCP metrics per captured
  // service plus sluice_bpf_events_total, and "bpf.<counter>: N" lines.
  std::string renderPrometheus();
  std::string renderText();

  // proxy::L4Splicer. With splice off (--no-bpf-splice) attach() declines
  // and the engine copies, over the same kind of sockets.
  void prepareUpstream(int fd) override;
  bool attach(int clientFd, int upstreamFd) override;
  void detach(int clientFd, int upstreamFd) override;
  std::optional<Direction> direction(int fd) override;
  void copied(int fd, uint64_t copied) override;

  // Stops capturing new connections; the maps stay readable.
  void detachPrograms() { dp_.detach(); }

  const std::string& cgroupPath() const { return opts_.cgroupPath; }
  // The daemon's own cgroup, which is never captured.
  std::uint64_t ownCgroupId() const { return ownCgroupId_; }
  bpf::Datapath& datapath() { return dp_; }

 private:
  Capture(CaptureOptions opts, bpf::Datapath dp, int cgroupFd)
      : opts_(std::move(opts)), dp_(std::move(dp)), cgroupFd_(cgroupFd) {}

  CaptureOptions opts_;
  bpf::Datapath dp_;
  int cgroupFd_ = -1;
  std::uint64_t ownCgroupId_ = 0;
  std::mutex syncMu_;
  // "addr:port" (both network order, packed) -> service FQDN, as last synced.
  std::unordered_map<std::uint64_t, std::string> vipHosts_;  // guarded by syncMu_
};

}  // namespace sluice::daemon
