// RAII owner of Sluice's kernel data path: the five programs of bpf/ (one
// skeleton each), the maps they share, their attachment to one cgroup v2 and
// to the sockhash, and the pins that outlive a daemon restart.
//
// Life cycle: load() -> configure() -> attach(cgroupFd) -> ... -> destructor
// (detach, unpin what is not meant to persist, free). Every map is created
// once (by the sockops object) and handed to the other objects by fd, so all
// programs see one instance.
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

struct bpf_link;  // libbpf

namespace sluice::bpf {

// Capacity of sluice_enabled. sluicectl creates the map with exactly this
// shape when it runs before the daemon, so both must agree.
inline constexpr std::uint32_t kEnabledMapEntries = 1024;
inline constexpr const char* kEnabledMapName = "sluice_enabled";
inline constexpr const char* kDefaultPinDir = "/sys/fs/bpf/sluice";

struct DatapathOptions {
  bool trackPeers = true;                // per-remote-endpoint map on/off (rodata)
  std::uint32_t peerMapEntries = 16384;  // LRU capacity of sluice_peers
  // Load and attach connect4/getpeername4/getsockopt. Off: accounting and
  // redirection only.
  bool capture = true;
  // Empty: pin nothing. Otherwise a directory on bpffs, created if missing.
  // sluice_enabled is reused from it when already pinned there (enablement
  // survives a restart) and stays pinned after destruction; every other map
  // is created fresh, pinned, and unpinned on destruction.
  std::string pinDir;
};

// Sums of the per-CPU counters, indexed by sluice_counter.
struct Counters {
  std::array<std::uint64_t, SLUICE_CNT_MAX> raw{};

  std::uint64_t at(sluice_counter c) const { return raw[c]; }
  std::uint64_t openedActive() const { return raw[SLUICE_CNT_OPENED_ACTIVE]; }
  std::uint64_t openedPassive() const { return raw[SLUICE_CNT_OPENED_PASSIVE]; }
  std::uint64_t closed() const { return raw[SLUICE_CNT_CLOSED]; }
  std::int64_t active() const { return static_cast<std::int64_t>(raw[SLUICE_CNT_ACTIVE]); }
};

// Stable snake_case name of a counter, for /stats and metrics.
const char* counterName(sluice_counter c);

struct ConnStats {
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  std::int64_t active = 0;
  std::uint64_t bytesSent = 0;
  std::uint64_t bytesReceived = 0;
};

// An IPv4 endpoint, both fields in network byte order.
struct Endpoint4 {
  std::uint32_t addrBe = 0;
  std::uint16_t portBe = 0;
  bool operator==(const Endpoint4&) const = default;
};

// A VIP for sluice_services: an L4 one is never socket-redirected, so the
// engine can splice it.
struct ServiceVip {
  Endpoint4 vip;
  bool l4 = false;
  bool operator==(const ServiceVip&) const = default;
};

struct StatsEntry {
  Endpoint4 key;
  ConnStats stats;
};

struct ProgInfo {
  std::string name;
  std::uint32_t id = 0;
  std::size_t elfInsns = 0;       // as compiled, before libbpf fixups
  std::uint32_t xlatedInsns = 0;  // after the verifier's rewrites
  std::uint32_t jitedBytes = 0;
  std::uint32_t verifiedInsns = 0;  // instructions the verifier walked
};

struct DatapathConfig {
  Endpoint4 proxy;                 // the outbound listener captures go to
  std::uint64_t proxyCgroupId = 0;  // the daemon's own cgroup: never captured
  bool capture = true;             // SLUICE_CFG_CAPTURE
  bool redirect = true;            // SLUICE_CFG_REDIRECT
};

class Datapath {
 public:
  static std::expected<Datapath, std::string> load(const DatapathOptions& opts = {});

  Datapath(Datapath&& other) noexcept;
  Datapath& operator=(Datapath&& other) noexcept;
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;
  ~Datapath();

  std::expected<void, std::string> configure(const DatapathConfig& cfg);

  // Attaches the cgroup programs to the cgroup v2 directory `cgroupFd` (and
  // so its descendants) through bpf_links, and sk_msg to the sockhash. If
  // this process dies the kernel detaches the links; the sockhash is not
  // pinned, so sk_msg goes with it.
  std::expected<void, std::string> attach(int cgroupFd);
  void detach();
  bool attached() const { return !links_.empty(); }

  // Replaces the VIP set (ServiceEntry addresses x ports): adds the new,
  // deletes the gone, updates the changed. Ids follow the order given.
  std::expected<void, std::string> syncServices(const std::vector<ServiceVip>& vips);
  std::expected<std::vector<Endpoint4>, std::string> services() const;

  // Makes sluice_endpts hold exactly these endpoints: new ones start
  // healthy, known ones keep their flags, gone ones are deleted.
  std::expected<void, std::string> syncEndpoints(const std::vector<Endpoint4>& endpoints);
  // Outlier detection's verdict on one endpoint (SLUICE_EP_EJECTED).
  std::expected<void, std::string> setEndpointEjected(Endpoint4 ep, bool ejected);
  // nullopt when the endpoint is not in the map.
  std::optional<std::uint32_t> endpointFlags(Endpoint4 ep) const;

  // The VIP:port a captured connection was dialled to, by its two ends as
  // the proxy sees them after accept(). nullopt: not a captured connection.
  std::optional<Endpoint4> originalDestination(Endpoint4 client, Endpoint4 proxy) const;

  // L4 splice. markNoRedirect() keeps a socket out of sluice_socks; call it
  // before connect(). spliceAttach() pairs two connected sockets and hands
  // them to the stream verdict: from then on the kernel moves every byte
  // either receives to the other, except while it holds a direction (see
  // struct sluice_l4pair): bytes that arrived before the pair was complete,
  // or while the destination is too far behind, stay readable on their
  // socket, spliceState() says held, and the caller writes them on itself,
  // reporting with spliceCopied(). spliceDetach() undoes it (closing the
  // sockets does too, except for the map entries, so call it before close).
  // Thread-safe. Only established sockets can join (EOPNOTSUPP otherwise,
  // e.g. a client that already half-closed).
  std::expected<void, std::string> markNoRedirect(int fd);
  std::expected<void, std::string> spliceAttach(int fdA, int fdB);
  void spliceDetach(int fdA, int fdB);
  // What the verdict did with the bytes `fd` received since spliceAttach:
  // how many it sent out of the partner, how many it kept on `fd`, and
  // whether it holds them now (see struct sluice_l4pair).
  struct SpliceState {
    std::uint64_t redirected = 0;
    std::uint64_t kept = 0;
    bool held = false;
  };
  std::expected<SpliceState, std::string> spliceState(int fd) const;
  // The caller wrote `copied` bytes held on `fd` to its partner itself:
  // what lets the verdict resume.
  std::expected<void, std::string> spliceCopied(int fd, std::uint64_t copied);

  std::expected<Counters, std::string> counters() const;
  // nullopt when the kernel never saw that peer (or evicted it).
  std::expected<std::optional<ConnStats>, std::string> peer(Endpoint4 ep) const;
  std::expected<std::vector<StatsEntry>, std::string> peers() const;
  std::expected<std::optional<ConnStats>, std::string> service(Endpoint4 vip) const;
  std::expected<std::vector<StatsEntry>, std::string> serviceStats() const;
  std::expected<std::vector<ProgInfo>, std::string> info() const;

  // The map fd sluicectl-style enablement writes to (see EnabledCgroups).
  int enabledMapFd() const;
  int sockopsProgFd() const;
  const std::vector<std::string>& pinnedPaths() const { return pinned_; }

  struct Skeletons;  // the generated skeletons; defined in datapath.cc

 private:
  Datapath();
  void reset();

  std::unique_ptr<Skeletons> sk_;
  std::vector<::bpf_link*> links_;
  int sockmapAttachedProg_ = -1;  // prog fd attached to sluice_socks, or -1
  int l4AttachedProg_ = -1;       // prog fd attached to sluice_l4socks, or -1
  std::string pinDir_;
  bool createdPinDir_ = false;
  std::vector<std::string> pinned_;  // unpinned on destruction
};

// The enabled-cgroup set, through the map pinned at <pinDir>/sluice_enabled.
// Used by `sluicectl mesh`; works with or without a running daemon.
class EnabledCgroups {
 public:
  // Opens the pinned map; with `create`, creates and pins it first when
  // absent (and the pin directory with it).
  static std::expected<EnabledCgroups, std::string> open(const std::string& pinDir, bool create);
  EnabledCgroups(EnabledCgroups&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  EnabledCgroups(const EnabledCgroups&) = delete;
  ~EnabledCgroups();

  std::expected<void, std::string> enable(std::uint64_t cgroupId);
  // false when it was not enabled.
  std::expected<bool, std::string> disable(std::uint64_t cgroupId);
  std::expected<std::vector<std::uint64_t>, std::string> list() const;

 private:
  explicit EnabledCgroups(int fd) : fd_(fd) {}
  int fd_;
};

// Cgroup-attached program ids of `type` (a bpf_attach_type) on `cgroupFd`.
std::expected<std::vector<std::uint32_t>, std::string> attachedProgramIds(int cgroupFd,
                                                                          int type);
// bpf_attach_type values, spelled here so callers need no libbpf header.
int sockopsAttachType();
int connect4AttachType();

// Why eBPF cannot be used on this host (not root, no cgroup v2, a program
// does not load), or nullopt if it can. Loads and unloads the programs;
// attaches nothing. The daemon logs the reason once for --bpf auto|required.
std::optional<std::string> probeBpf();

// The cgroup id (cgroup2 inode number) of a cgroup directory.
std::expected<std::uint64_t, std::string> cgroupIdOfPath(const std::string& path);
// The cgroup2 directory this process is in, as an absolute path.
std::expected<std::string, std::string> ownCgroupPath();

}  // namespace sluice::bpf
