#include "bpf/sockops_loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "bpf/cgroup.h"
#include "bpf/maps_check.h"
#include "sockops.skel.h"

namespace sluice::bpf {
namespace {

// libbpf reports through one global callback. While a load is in progress on
// this thread its warnings are collected into the error we return instead of
// going to stderr, so the daemon can log one line; otherwise warnings pass
// through and debug chatter is dropped.
thread_local std::string* tlsLibbpfSink = nullptr;

int libbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof(buf), fmt, args);
  if (n < 0) return n;
  if (tlsLibbpfSink != nullptr) {
    if (tlsLibbpfSink->size() < 8192) tlsLibbpfSink->append(buf);
    return n;
  }
  return std::fprintf(stderr, "libbpf: %s", buf);
}

void installLibbpfPrint() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(libbpfPrint); });
}

struct SinkScope {
  explicit SinkScope(std::string* s) { tlsLibbpfSink = s; }
  ~SinkScope() { tlsLibbpfSink = nullptr; }
};

std::string errnoText(int err) { return std::strerror(err < 0 ? -err : err); }

std::string privilegeHint(int err) {
  if ((err == EPERM || err == EACCES) && ::geteuid() != 0)
    return " (not root: loading and attaching BPF needs root or CAP_BPF+CAP_NET_ADMIN; "
           "run as root or use --bpf off)";
  return "";
}

// The end of a verifier log holds the failing instruction and the reason.
std::string tail(const std::string& s, std::size_t max) {
  std::size_t end = s.find_last_not_of("\n \0", std::string::npos, 3);
  if (end == std::string::npos) return "";
  std::string t = s.substr(0, end + 1);
  if (t.size() > max) t = "..." + t.substr(t.size() - max);
  return t;
}

}  // namespace

std::expected<SockopsProgram, std::string> SockopsProgram::load(const SockopsOptions& opts) {
  installLibbpfPrint();
  std::string libbpfLog;
  SinkScope sink(&libbpfLog);

  // Verifier output lands here only if the load fails: libbpf then retries
  // with log_level 1 into this buffer.
  std::string verifierLog(256 * 1024, '\0');
  LIBBPF_OPTS(bpf_object_open_opts, openOpts, .kernel_log_buf = verifierLog.data(),
              .kernel_log_size = verifierLog.size(), .kernel_log_level = 0);

  SockopsProgram prog;
  prog.skel_ = sluice_sockops__open_opts(&openOpts);
  if (prog.skel_ == nullptr)
    return std::unexpected("cannot open the sockops BPF object: " + errnoText(errno) + " " +
                           tail(libbpfLog, 1024));

  prog.skel_->rodata->sluice_track_peers = opts.trackPeers ? 1 : 0;
  if (int err = bpf_map__set_max_entries(prog.skel_->maps.sluice_peers, opts.peerMapEntries);
      err != 0)
    return std::unexpected("invalid peer map size " + std::to_string(opts.peerMapEntries) + ": " +
                           errnoText(err));

  if (int err = sluice_sockops__load(prog.skel_); err != 0) {
    std::string msg = "loading the sockops BPF program failed: " + errnoText(err) +
                      privilegeHint(-err);
    std::string vlog = tail(verifierLog, 2048);
    if (!vlog.empty())
      msg += "; verifier says:\n" + vlog;
    else if (!libbpfLog.empty())
      msg += "; libbpf: " + tail(libbpfLog, 1024);
    return std::unexpected(msg);
  }

  if (!opts.pinDir.empty()) {
    struct statfs fs {};
    std::string parent = opts.pinDir.substr(0, opts.pinDir.find_last_of('/'));
    if (::statfs(parent.empty() ? "/" : parent.c_str(), &fs) != 0 ||
        fs.f_type != BPF_FS_MAGIC)
      return std::unexpected("cannot pin maps under " + opts.pinDir + ": " + parent +
                             " is not a bpffs mount (mount -t bpf bpf /sys/fs/bpf)");
    if (::mkdir(opts.pinDir.c_str(), 0700) != 0)
      return std::unexpected("cannot create pin directory " + opts.pinDir + ": " +
                             errnoText(errno) + privilegeHint(errno));
    prog.pinDir_ = opts.pinDir;
    for (bpf_map* m : {prog.skel_->maps.sluice_cnt, prog.skel_->maps.sluice_peers}) {
      std::string path = opts.pinDir + "/" + bpf_map__name(m);
      if (int err = bpf_map__pin(m, path.c_str()); err != 0)
        return std::unexpected("cannot pin map at " + path + ": " + errnoText(err));
      prog.pinned_.push_back(path);
    }
  }
  return prog;
}

SockopsProgram::SockopsProgram(SockopsProgram&& other) noexcept
    : skel_(std::exchange(other.skel_, nullptr)),
      link_(std::exchange(other.link_, nullptr)),
      pinDir_(std::exchange(other.pinDir_, {})),
      pinned_(std::exchange(other.pinned_, {})) {}

SockopsProgram& SockopsProgram::operator=(SockopsProgram&& other) noexcept {
  if (this != &other) {
    reset();
    skel_ = std::exchange(other.skel_, nullptr);
    link_ = std::exchange(other.link_, nullptr);
    pinDir_ = std::exchange(other.pinDir_, {});
    pinned_ = std::exchange(other.pinned_, {});
  }
  return *this;
}

SockopsProgram::~SockopsProgram() { reset(); }

// Reverse order of acquisition: detach, unpin, then free program and maps.
void SockopsProgram::reset() {
  detach();
  for (const std::string& p : pinned_) ::unlink(p.c_str());
  pinned_.clear();
  if (!pinDir_.empty()) {
    ::rmdir(pinDir_.c_str());
    pinDir_.clear();
  }
  if (skel_ != nullptr) {
    sluice_sockops__destroy(skel_);
    skel_ = nullptr;
  }
}

std::expected<void, std::string> SockopsProgram::attach(int cgroupFd) {
  if (skel_ == nullptr) return std::unexpected("sockops program is not loaded");
  if (link_ != nullptr) return std::unexpected("sockops program is already attached");
  bpf_link* link = bpf_program__attach_cgroup(skel_->progs.sluice_sockops_count, cgroupFd);
  if (link == nullptr) {
    int err = errno;
    std::string msg = "cannot attach sockops to cgroup fd " + std::to_string(cgroupFd) + ": " +
                      errnoText(err) + privilegeHint(err);
    if (err == EBADF || err == ENOTDIR || err == EINVAL)
      msg += " (the fd must be an open cgroup v2 directory)";
    return std::unexpected(msg);
  }
  link_ = link;
  return {};
}

void SockopsProgram::detach() {
  if (link_ != nullptr) {
    bpf_link__destroy(link_);
    link_ = nullptr;
  }
}

int SockopsProgram::progFd() const {
  return skel_ == nullptr ? -1 : bpf_program__fd(skel_->progs.sluice_sockops_count);
}

std::expected<SockopsCounters, std::string> SockopsProgram::counters() const {
  if (skel_ == nullptr) return std::unexpected("sockops program is not loaded");
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return std::unexpected("cannot count possible CPUs: " + errnoText(ncpu));
  int fd = bpf_map__fd(skel_->maps.sluice_cnt);
  std::vector<std::uint64_t> perCpu(static_cast<std::size_t>(ncpu));
  SockopsCounters out;
  for (std::uint32_t k = 0; k < SLUICE_CNT_MAX; ++k) {
    if (bpf_map_lookup_elem(fd, &k, perCpu.data()) != 0)
      return std::unexpected("cannot read counter " + std::to_string(k) + ": " +
                             errnoText(errno));
    std::uint64_t sum = 0;
    for (std::uint64_t v : perCpu) sum += v;  // wraps on purpose: see SLUICE_CNT_ACTIVE
    out.raw[k] = sum;
  }
  return out;
}

namespace {
PeerStats toPeerStats(const sluice_peer_stats& v) {
  return {v.opened, v.closed, static_cast<std::int64_t>(v.active)};
}
}  // namespace

std::expected<std::optional<PeerStats>, std::string> SockopsProgram::peer(
    std::uint32_t addrBe, std::uint16_t portBe) const {
  if (skel_ == nullptr) return std::unexpected("sockops program is not loaded");
  sluice_peer_key key{};
  key.addr = addrBe;
  key.port = portBe;
  sluice_peer_stats val{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sluice_peers), &key, &val) != 0) {
    if (errno == ENOENT) return std::optional<PeerStats>{};
    return std::unexpected("cannot read peer map: " + errnoText(errno));
  }
  return std::optional<PeerStats>{toPeerStats(val)};
}

std::expected<std::vector<PeerEntry>, std::string> SockopsProgram::peers() const {
  if (skel_ == nullptr) return std::unexpected("sockops program is not loaded");
  int fd = bpf_map__fd(skel_->maps.sluice_peers);
  std::vector<PeerEntry> out;
  sluice_peer_key key{}, next{};
  const sluice_peer_key* cur = nullptr;
  // Bounded by the map size; entries deleted mid-walk (LRU) restart the walk
  // in the kernel, so the bound also caps that.
  std::uint32_t limit = bpf_map__max_entries(skel_->maps.sluice_peers);
  for (std::uint32_t i = 0; i < limit && bpf_map_get_next_key(fd, cur, &next) == 0; ++i) {
    sluice_peer_stats val{};
    if (bpf_map_lookup_elem(fd, &next, &val) == 0)
      out.push_back({next.addr, next.port, toPeerStats(val)});
    key = next;
    cur = &key;
  }
  return out;
}

std::expected<ProgInfo, std::string> SockopsProgram::info() const {
  if (skel_ == nullptr) return std::unexpected("sockops program is not loaded");
  bpf_prog_info raw{};
  __u32 len = sizeof(raw);
  if (bpf_obj_get_info_by_fd(progFd(), &raw, &len) != 0)
    return std::unexpected("cannot query program info: " + errnoText(errno));
  ProgInfo out;
  out.id = raw.id;
  out.elfInsns = bpf_program__insn_cnt(skel_->progs.sluice_sockops_count);
  out.xlatedInsns = raw.xlated_prog_len / sizeof(bpf_insn);
  out.jitedBytes = raw.jited_prog_len;
  out.verifiedInsns = raw.verified_insns;
  return out;
}

std::expected<std::vector<std::uint32_t>, std::string> attachedProgramIds(int cgroupFd,
                                                                          int type) {
  std::vector<std::uint32_t> ids(64);
  __u32 count = static_cast<__u32>(ids.size());
  __u32 flags = 0;
  if (bpf_prog_query(cgroupFd, static_cast<bpf_attach_type>(type), 0, &flags, ids.data(),
                     &count) != 0)
    return std::unexpected("cannot query programs attached to cgroup fd " +
                           std::to_string(cgroupFd) + ": " + errnoText(errno));
  ids.resize(count);
  return ids;
}

int sockopsAttachType() { return BPF_CGROUP_SOCK_OPS; }

std::optional<std::string> probeBpf() {
  auto mount = findCgroup2Mount();
  if (!mount) return mount.error();
  auto prog = SockopsProgram::load();
  if (!prog) {
    if (::geteuid() != 0)
      return "not root (euid " + std::to_string(::geteuid()) +
             "): eBPF capture needs root or CAP_BPF+CAP_NET_ADMIN; " + prog.error();
    return prog.error();
  }
  return std::nullopt;
}

}  // namespace sluice::bpf
