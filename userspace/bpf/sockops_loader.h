// RAII owner of the sockops connection-accounting program (bpf/sockops.bpf.c):
// open + load the generated skeleton, attach to one cgroup through a bpf_link,
// read its maps, and undo everything in reverse on destruction.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sluice/maps.h>

struct sluice_sockops;  // generated: build/bpf/sockops.skel.h
struct bpf_link;

namespace sluice::bpf {

struct SockopsOptions {
  bool trackPeers = true;              // per-remote-endpoint map on/off (rodata)
  std::uint32_t peerMapEntries = 16384;  // LRU capacity of sluice_peers
  // Empty: pin nothing. Otherwise a directory on bpffs that must not exist
  // yet; it is created, the maps are pinned in it by name, and both are
  // removed on destruction.
  std::string pinDir;
};

// Sums of the per-CPU counters, indexed by sluice_sockops_counter.
struct SockopsCounters {
  std::array<std::uint64_t, SLUICE_CNT_MAX> raw{};

  std::uint64_t at(sluice_sockops_counter c) const { return raw[c]; }
  std::uint64_t openedActive() const { return raw[SLUICE_CNT_OPENED_ACTIVE]; }
  std::uint64_t openedPassive() const { return raw[SLUICE_CNT_OPENED_PASSIVE]; }
  std::uint64_t closed() const { return raw[SLUICE_CNT_CLOSED]; }
  std::int64_t active() const { return static_cast<std::int64_t>(raw[SLUICE_CNT_ACTIVE]); }
};

struct PeerStats {
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  std::int64_t active = 0;
};

struct PeerEntry {
  std::uint32_t addrBe = 0;  // IPv4, network byte order
  std::uint16_t portBe = 0;  // network byte order
  PeerStats stats;
};

struct ProgInfo {
  std::uint32_t id = 0;
  std::size_t elfInsns = 0;       // as compiled, before libbpf fixups
  std::uint32_t xlatedInsns = 0;  // after the verifier's rewrites
  std::uint32_t jitedBytes = 0;
  std::uint32_t verifiedInsns = 0;  // instructions the verifier walked
};

class SockopsProgram {
 public:
  static std::expected<SockopsProgram, std::string> load(const SockopsOptions& opts = {});

  SockopsProgram(SockopsProgram&& other) noexcept;
  SockopsProgram& operator=(SockopsProgram&& other) noexcept;
  SockopsProgram(const SockopsProgram&) = delete;
  SockopsProgram& operator=(const SockopsProgram&) = delete;
  ~SockopsProgram();

  // Attaches to the cgroup v2 directory `cgroupFd` (and so its descendants).
  // Through a bpf_link: if this process dies the kernel detaches it.
  std::expected<void, std::string> attach(int cgroupFd);
  void detach();
  bool attached() const { return link_ != nullptr; }

  std::expected<SockopsCounters, std::string> counters() const;
  // nullopt when the kernel never saw that peer (or evicted it).
  std::expected<std::optional<PeerStats>, std::string> peer(std::uint32_t addrBe,
                                                            std::uint16_t portBe) const;
  std::expected<std::vector<PeerEntry>, std::string> peers() const;
  std::expected<ProgInfo, std::string> info() const;

  int progFd() const;
  const std::vector<std::string>& pinnedPaths() const { return pinned_; }

 private:
  SockopsProgram() = default;
  void reset();

  sluice_sockops* skel_ = nullptr;
  bpf_link* link_ = nullptr;
  std::string pinDir_;  // non-empty once created by us
  std::vector<std::string> pinned_;
};

// Cgroup-attached program ids of `type` (a bpf_attach_type) on `cgroupFd`.
std::expected<std::vector<std::uint32_t>, std::string> attachedProgramIds(int cgroupFd,
                                                                          int type);
// BPF_CGROUP_SOCK_OPS, spelled here so callers need no libbpf header.
int sockopsAttachType();

// Why eBPF cannot be used on this host (not root, no cgroup v2, the program
// does not load), or nullopt if it can. Loads and unloads the program; attaches
// nothing. The daemon logs the reason once for --bpf auto|required.
std::optional<std::string> probeBpf();

}  // namespace sluice::bpf
