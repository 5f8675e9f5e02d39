#include "bpf/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <tuple>

#include "bpf/bpffs_dir.h"
#include "bpf/cgroup.h"
#include "bpf/maps_check.h"
#include "connect4.skel.h"
#include "getpeername4.skel.h"
#include "getsockopt.skel.h"
#include "sk_msg.skel.h"
#include "sk_skb.skel.h"
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
  if (err < 0) err = -err;
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

sluice_addr_key toKey(Endpoint4 e) {
  sluice_addr_key k{};
  k.addr = e.addrBe;
  k.port = e.portBe;
  return k;
}

ConnStats toStats(const sluice_conn_stats& v) {
  return {v.opened, v.closed, static_cast<std::int64_t>(v.active), v.bytes_sent,
          v.bytes_received};
}

}  // namespace

struct Datapath::Skeletons {
  sluice_sockops* sockops = nullptr;
  sluice_sk_msg* skMsg = nullptr;
  sluice_sk_skb* skSkb = nullptr;
  sluice_connect4* connect4 = nullptr;
  sluice_getpeername4* getpeername4 = nullptr;
  sluice_getsockopt* getsockopt = nullptr;

  ~Skeletons() {
    if (getsockopt) sluice_getsockopt__destroy(getsockopt);
    if (getpeername4) sluice_getpeername4__destroy(getpeername4);
    if (connect4) sluice_connect4__destroy(connect4);
    if (skSkb) sluice_sk_skb__destroy(skSkb);
    if (skMsg) sluice_sk_msg__destroy(skMsg);
    if (sockops) sluice_sockops__destroy(sockops);
  }

  // (object, its one program, source name) of every loaded object.
  std::vector<std::tuple<bpf_object*, bpf_program*, const char*>> all() const {
    std::vector<std::tuple<bpf_object*, bpf_program*, const char*>> v;
    if (sockops) v.emplace_back(sockops->obj, sockops->progs.sluice_sockops, "sockops");
    if (skMsg) v.emplace_back(skMsg->obj, skMsg->progs.sluice_sk_msg, "sk_msg");
    if (skSkb) v.emplace_back(skSkb->obj, skSkb->progs.sluice_sk_skb, "sk_skb");
    if (connect4) v.emplace_back(connect4->obj, connect4->progs.sluice_connect4, "connect4");
    if (getpeername4)
      v.emplace_back(getpeername4->obj, getpeername4->progs.sluice_getpeername4, "getpeername4");
    if (getsockopt)
      v.emplace_back(getsockopt->obj, getsockopt->progs.sluice_getsockopt, "getsockopt");
    return v;
  }
  int mapFd(const char* name) const {
    bpf_map* m = bpf_object__find_map_by_name(sockops->obj, name);
    return m ? bpf_map__fd(m) : -1;
  }
};

namespace {

// Points every non-internal map of `obj` at the instance the sockops object
// created, so the programs of all objects share one set of maps.
std::expected<void, std::string> shareMaps(bpf_object* obj, const Datapath::Skeletons& sk,
                                           const char* objName) {
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, obj) {
    if (bpf_map__is_internal(m)) continue;  // .rodata/.bss stay per object
    int fd = sk.mapFd(bpf_map__name(m));
    if (fd < 0)
      return std::unexpected(std::string("map ") + bpf_map__name(m) + " of " + objName +
                             " is not defined by the sockops object: build mismatch");
    if (int err = bpf_map__reuse_fd(m, fd); err != 0)
      return std::unexpected(std::string("cannot share map ") + bpf_map__name(m) + " with " +
                             objName + ": " + errnoText(err));
  }
  return {};
}

std::string loadError(const char* what, int err, const std::string& verifierLog,
                      const std::string& libbpfLog) {
  std::string msg = std::string("loading the ") + what + " BPF program failed: " +
                    errnoText(err) + privilegeHint(err);
  std::string vlog = tail(verifierLog, 2048);
  if (!vlog.empty())
    msg += "; verifier says:\n" + vlog;
  else if (!libbpfLog.empty())
    msg += "; libbpf: " + tail(libbpfLog, 1024);
  return msg;
}

std::expected<void, std::string> ensurePinDir(const std::string& dir, bool* created) {
  *created = false;
  std::string parent = dir.substr(0, dir.find_last_of('/'));
  if (parent.empty()) parent = "/";
  if (!isBpffs(dir) && !isBpffs(parent))
    return std::unexpected("cannot pin maps under " + dir + ": " + parent +
                           " is not a bpffs mount (mount -t bpf bpf /sys/fs/bpf)");
  if (::mkdir(dir.c_str(), 0700) == 0) {
    *created = true;
    return {};
  }
  if (errno == EEXIST) return {};
  return std::unexpected("cannot create pin directory " + dir + ": " + errnoText(errno) +
                         privilegeHint(errno));
}

}  // namespace

Datapath::Datapath() : sk_(std::make_unique<Skeletons>()) {}

std::expected<Datapath, std::string> Datapath::load(const DatapathOptions& opts) {
  installLibbpfPrint();
  std::string libbpfLog;
  SinkScope sink(&libbpfLog);

  // Verifier output lands here only if a load fails: libbpf then retries
  // with log_level 1 into this buffer.
  std::string verifierLog(256 * 1024, '\0');
  LIBBPF_OPTS(bpf_object_open_opts, openOpts, .kernel_log_buf = verifierLog.data(),
              .kernel_log_size = verifierLog.size(), .kernel_log_level = 0);

  Datapath dp;
  Skeletons& sk = *dp.sk_;
  auto openFailed = [&](const char* name) {
    return std::unexpected(std::string("cannot open the ") + name + " BPF object: " +
                           errnoText(errno) + " " + tail(libbpfLog, 1024));
  };

  // The sockops object defines (creates) every map; the others borrow them.
  sk.sockops = sluice_sockops__open_opts(&openOpts);
  if (sk.sockops == nullptr) return openFailed("sockops");
  sk.sockops->rodata->sluice_track_peers = opts.trackPeers ? 1 : 0;
  if (int err = bpf_map__set_max_entries(sk.sockops->maps.sluice_peers, opts.peerMapEntries);
      err != 0)
    return std::unexpected("invalid peer map size " + std::to_string(opts.peerMapEntries) + ": " +
                           errnoText(err));
  if (int err = bpf_map__set_max_entries(sk.sockops->maps.sluice_enabled, kEnabledMapEntries);
      err != 0)
    return std::unexpected("cannot size sluice_enabled: " + errnoText(err));

  int enabledPinnedFd = -1;
  if (!opts.pinDir.empty()) {
    if (auto r = ensurePinDir(opts.pinDir, &dp.createdPinDir_); !r) return std::unexpected(r.error());
    dp.pinDir_ = opts.pinDir;
    std::string enabledPath = opts.pinDir + "/" + kEnabledMapName;
    enabledPinnedFd = bpf_obj_get(enabledPath.c_str());
    if (enabledPinnedFd >= 0) {
      // Enablement written before this start (by sluicectl or a previous
      // daemon) carries over.
      int err = bpf_map__reuse_fd(sk.sockops->maps.sluice_enabled, enabledPinnedFd);
      ::close(enabledPinnedFd);  // reuse_fd dups it
      if (err != 0)
        return std::unexpected("cannot reuse " + enabledPath + ": " + errnoText(err) +
                               " (remove it if it was made by an incompatible version)");
    }
  }

  if (int err = sluice_sockops__load(sk.sockops); err != 0)
    return std::unexpected(loadError("sockops", err, verifierLog, libbpfLog));

  sk.skMsg = sluice_sk_msg__open_opts(&openOpts);
  if (sk.skMsg == nullptr) return openFailed("sk_msg");
  if (auto r = shareMaps(sk.skMsg->obj, sk, "sk_msg"); !r) return std::unexpected(r.error());
  if (int err = sluice_sk_msg__load(sk.skMsg); err != 0)
    return std::unexpected(loadError("sk_msg", err, verifierLog, libbpfLog));

  sk.skSkb = sluice_sk_skb__open_opts(&openOpts);
  if (sk.skSkb == nullptr) return openFailed("sk_skb");
  if (auto r = shareMaps(sk.skSkb->obj, sk, "sk_skb"); !r) return std::unexpected(r.error());
  if (int err = sluice_sk_skb__load(sk.skSkb); err != 0)
    return std::unexpected(loadError("sk_skb", err, verifierLog, libbpfLog));

  if (opts.capture) {
    sk.connect4 = sluice_connect4__open_opts(&openOpts);
    if (sk.connect4 == nullptr) return openFailed("connect4");
    if (auto r = shareMaps(sk.connect4->obj, sk, "connect4"); !r) return std::unexpected(r.error());
    if (int err = sluice_connect4__load(sk.connect4); err != 0)
      return std::unexpected(loadError("connect4", err, verifierLog, libbpfLog));

    sk.getpeername4 = sluice_getpeername4__open_opts(&openOpts);
    if (sk.getpeername4 == nullptr) return openFailed("getpeername4");
    if (auto r = shareMaps(sk.getpeername4->obj, sk, "getpeername4"); !r)
      return std::unexpected(r.error());
    if (int err = sluice_getpeername4__load(sk.getpeername4); err != 0)
      return std::unexpected(loadError("getpeername4", err, verifierLog, libbpfLog));

    sk.getsockopt = sluice_getsockopt__open_opts(&openOpts);
    if (sk.getsockopt == nullptr) return openFailed("getsockopt");
    if (auto r = shareMaps(sk.getsockopt->obj, sk, "getsockopt"); !r)
      return std::unexpected(r.error());
    if (int err = sluice_getsockopt__load(sk.getsockopt); err != 0)
      return std::unexpected(loadError("getsockopt", err, verifierLog, libbpfLog));
  }

  if (!opts.pinDir.empty()) {
    bpf_map* m = nullptr;
    bpf_object__for_each_map(m, sk.sockops->obj) {
      if (bpf_map__is_internal(m)) continue;
      std::string name = bpf_map__name(m);
      // The sockhash holds live sockets and the sk_msg attachment; it must
      // die with this process, so it is never pinned.
      if (name == "sluice_socks" || name == "sluice_sock" || name == "sluice_l4socks") continue;
      std::string path = opts.pinDir + "/" + name;
      bool persistent = name == kEnabledMapName;
      if (persistent && enabledPinnedFd >= 0) continue;  // already pinned there
      ::unlink(path.c_str());  // a stale pin of a dead daemon: clean start
      if (int err = bpf_map__pin(m, path.c_str()); err != 0)
        return std::unexpected("cannot pin map at " + path + ": " + errnoText(err));
      if (!persistent) dp.pinned_.push_back(path);
    }
  }
  return dp;
}

Datapath::Datapath(Datapath&& other) noexcept
    : sk_(std::move(other.sk_)),
      links_(std::exchange(other.links_, {})),
      sockmapAttachedProg_(std::exchange(other.sockmapAttachedProg_, -1)),
      l4AttachedProg_(std::exchange(other.l4AttachedProg_, -1)),
      pinDir_(std::exchange(other.pinDir_, {})),
      createdPinDir_(std::exchange(other.createdPinDir_, false)),
      pinned_(std::exchange(other.pinned_, {})) {}

Datapath& Datapath::operator=(Datapath&& other) noexcept {
  if (this != &other) {
    reset();
    sk_ = std::move(other.sk_);
    links_ = std::exchange(other.links_, {});
    sockmapAttachedProg_ = std::exchange(other.sockmapAttachedProg_, -1);
    l4AttachedProg_ = std::exchange(other.l4AttachedProg_, -1);
    pinDir_ = std::exchange(other.pinDir_, {});
    createdPinDir_ = std::exchange(other.createdPinDir_, false);
    pinned_ = std::exchange(other.pinned_, {});
  }
  return *this;
}

Datapath::~Datapath() { reset(); }

// Reverse order of acquisition: detach, unpin, then free programs and maps.
void Datapath::reset() {
  detach();
  for (const std::string& p : pinned_) ::unlink(p.c_str());
  pinned_.clear();
  // Removed only when empty: a persisted sluice_enabled keeps it.
  if (createdPinDir_ && !pinDir_.empty()) ::rmdir(pinDir_.c_str());
  pinDir_.clear();
  createdPinDir_ = false;
  sk_.reset();
}

std::expected<void, std::string> Datapath::configure(const DatapathConfig& cfg) {
  if (!sk_) return std::unexpected("data path is not loaded");
  sluice_config v{};
  v.proxy_addr = cfg.proxy.addrBe;
  v.proxy_port = cfg.proxy.portBe;
  v.proxy_cgroup_id = cfg.proxyCgroupId;
  v.flags = (cfg.capture ? SLUICE_CFG_CAPTURE : 0u) | (cfg.redirect ? SLUICE_CFG_REDIRECT : 0u);
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(sk_->mapFd("sluice_config"), &zero, &v, BPF_ANY) != 0)
    return std::unexpected("cannot write sluice_config: " + errnoText(errno));
  return {};
}

std::expected<void, std::string> Datapath::attach(int cgroupFd) {
  if (!sk_) return std::unexpected("data path is not loaded");
  if (attached()) return std::unexpected("data path is already attached");
  for (auto [obj, prog, name] : sk_->all()) {
    // sk_msg and sk_skb attach to their sockhashes below.
    if (prog == sk_->skMsg->progs.sluice_sk_msg || prog == sk_->skSkb->progs.sluice_sk_skb)
      continue;
    bpf_link* link = bpf_program__attach_cgroup(prog, cgroupFd);
    if (link == nullptr) {
      int err = errno;
      detach();
      std::string msg = std::string("cannot attach ") + name + " to cgroup fd " +
                        std::to_string(cgroupFd) + ": " + errnoText(err) + privilegeHint(err);
      if (err == EBADF || err == ENOTDIR || err == EINVAL)
        msg += " (the fd must be an open cgroup v2 directory)";
      return std::unexpected(msg);
    }
    links_.push_back(link);
  }
  int progFd = bpf_program__fd(sk_->skMsg->progs.sluice_sk_msg);
  if (bpf_prog_attach(progFd, sk_->mapFd("sluice_socks"), BPF_SK_MSG_VERDICT, 0) != 0) {
    int err = errno;
    detach();
    return std::unexpected("cannot attach sk_msg to sluice_socks: " + errnoText(err) +
                           privilegeHint(err));
  }
  sockmapAttachedProg_ = progFd;
  int l4Fd = bpf_program__fd(sk_->skSkb->progs.sluice_sk_skb);
  if (bpf_prog_attach(l4Fd, sk_->mapFd("sluice_l4socks"), BPF_SK_SKB_STREAM_VERDICT, 0) != 0) {
    int err = errno;
    detach();
    return std::unexpected("cannot attach sk_skb to sluice_l4socks: " + errnoText(err) +
                           privilegeHint(err));
  }
  l4AttachedProg_ = l4Fd;
  return {};
}

void Datapath::detach() {
  // Cgroup programs first: no new socket enters the sockhash after this.
  for (bpf_link* l : links_) bpf_link__destroy(l);
  links_.clear();
  if (sockmapAttachedProg_ >= 0 && sk_) {
    bpf_prog_detach2(sockmapAttachedProg_, sk_->mapFd("sluice_socks"), BPF_SK_MSG_VERDICT);
    sockmapAttachedProg_ = -1;
  }
  if (l4AttachedProg_ >= 0 && sk_) {
    bpf_prog_detach2(l4AttachedProg_, sk_->mapFd("sluice_l4socks"), BPF_SK_SKB_STREAM_VERDICT);
    l4AttachedProg_ = -1;
  }
}

std::expected<void, std::string> Datapath::syncServices(const std::vector<ServiceVip>& vips) {
  if (!sk_) return std::unexpected("data path is not loaded");
  int fd = sk_->mapFd("sluice_services");
  auto current = services();
  if (!current) return std::unexpected(current.error());
  for (const Endpoint4& old : *current) {
    auto same = [&](const ServiceVip& v) { return v.vip == old; };
    if (std::find_if(vips.begin(), vips.end(), same) != vips.end()) continue;
    sluice_addr_key k = toKey(old);
    bpf_map_delete_elem(fd, &k);
  }
  std::uint32_t id = 0;
  for (const ServiceVip& v : vips) {
    sluice_addr_key k = toKey(v.vip);
    sluice_service val{};
    val.id = ++id;
    val.flags = v.l4 ? SLUICE_SVC_L4 : 0u;
    if (bpf_map_update_elem(fd, &k, &val, BPF_ANY) != 0)
      return std::unexpected("cannot write sluice_services (" + std::to_string(vips.size()) +
                             " VIPs): " + errnoText(errno));
  }
  return {};
}

std::expected<void, std::string> Datapath::syncEndpoints(const std::vector<Endpoint4>& endpoints) {
  if (!sk_) return std::unexpected("data path is not loaded");
  int fd = sk_->mapFd("sluice_endpts");
  std::vector<sluice_addr_key> stale;
  sluice_addr_key key{}, next{};
  const sluice_addr_key* cur = nullptr;
  std::uint32_t limit = bpf_map__max_entries(sk_->sockops->maps.sluice_endpts);
  for (std::uint32_t i = 0; i < limit && bpf_map_get_next_key(fd, cur, &next) == 0; ++i) {
    if (std::find(endpoints.begin(), endpoints.end(), Endpoint4{next.addr, next.port}) == endpoints.end())
      stale.push_back(next);
    key = next;
    cur = &key;
  }
  for (const sluice_addr_key& k : stale) bpf_map_delete_elem(fd, &k);
  std::uint32_t id = 0;
  for (const Endpoint4& e : endpoints) {
    sluice_addr_key k = toKey(e);
    sluice_endpoint v{};
    v.id = ++id;
    if (bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST) != 0 && errno != EEXIST)
      return std::unexpected("cannot write sluice_endpts (" + std::to_string(endpoints.size()) +
                             " endpoints): " + errnoText(errno));
  }
  return {};
}

std::expected<void, std::string> Datapath::setEndpointEjected(Endpoint4 ep, bool ejected) {
  if (!sk_) return std::unexpected("data path is not loaded");
  int fd = sk_->mapFd("sluice_endpts");
  sluice_addr_key k = toKey(ep);
  sluice_endpoint v{};
  if (bpf_map_lookup_elem(fd, &k, &v) != 0) v = {};
  v.flags = ejected ? (v.flags | SLUICE_EP_EJECTED) : (v.flags & ~SLUICE_EP_EJECTED);
  if (bpf_map_update_elem(fd, &k, &v, BPF_ANY) != 0)
    return std::unexpected("cannot update sluice_endpts: " + errnoText(errno));
  return {};
}

std::optional<std::uint32_t> Datapath::endpointFlags(Endpoint4 ep) const {
  if (!sk_) return std::nullopt;
  sluice_addr_key k = toKey(ep);
  sluice_endpoint v{};
  if (bpf_map_lookup_elem(sk_->mapFd("sluice_endpts"), &k, &v) != 0) return std::nullopt;
  return v.flags;
}

std::expected<void, std::string> Datapath::markNoRedirect(int fd) {
  if (!sk_) return std::unexpected("data path is not loaded");
  sluice_sock_state st{};
  st.flags = SLUICE_SOCK_NO_REDIRECT;
  if (bpf_map_update_elem(sk_->mapFd("sluice_sock"), &fd, &st, BPF_ANY) != 0)
    return std::unexpected("cannot mark socket: " + errnoText(errno));
  return {};
}

namespace {
std::expected<std::uint64_t, std::string> socketCookie(int fd) {
  std::uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
    return std::unexpected("SO_COOKIE: " + errnoText(errno));
  return cookie;
}
}  // namespace

std::expected<void, std::string> Datapath::spliceAttach(int fdA, int fdB) {
  if (!sk_) return std::unexpected("data path is not loaded");
  auto a = socketCookie(fdA);
  auto b = socketCookie(fdB);
  if (!a || !b) return std::unexpected(!a ? a.error() : b.error());
  int peers = sk_->mapFd("sluice_l4peer");
  int socks = sk_->mapFd("sluice_l4socks");
  // Pairing first: a verdict that runs between the two inserts must find it.
  // Both directions start held: bytes that arrived before the pair was
  // complete are kept for the caller, and nothing redirected overtakes them.
  sluice_l4pair toB{}, toA{};
  toB.peer = *b;
  toA.peer = *a;
  toB.held = toA.held = SLUICE_L4_STARTING;
  if (bpf_map_update_elem(peers, &*a, &toB, BPF_ANY) != 0 ||
      bpf_map_update_elem(peers, &*b, &toA, BPF_ANY) != 0) {
    int err = errno;
    bpf_map_delete_elem(peers, &*a);
    return std::unexpected("cannot pair sockets in sluice_l4peer: " + errnoText(err));
  }
  // B before A: once A is in, A's bytes always find B. Bytes B receives in
  // between cannot be redirected yet; the verdict keeps them on B, held,
  // for the caller to read (see spliceAttach's contract).
  std::uint64_t va = static_cast<std::uint64_t>(fdA), vb = static_cast<std::uint64_t>(fdB);
  if (bpf_map_update_elem(socks, &*b, &vb, BPF_NOEXIST) != 0 ||
      bpf_map_update_elem(socks, &*a, &va, BPF_NOEXIST) != 0) {
    int err = errno;
    spliceDetach(fdA, fdB);
    return std::unexpected("cannot insert sockets into sluice_l4socks: " + errnoText(err));
  }
  // Bytes that arrived before the insert sit in the receive queue with no
  // new data_ready to come; setting SO_RCVLOWAT re-evaluates readiness,
  // which runs the verdict over them.
  int one = 1;
  ::setsockopt(fdA, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
  ::setsockopt(fdB, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
  return {};
}

std::expected<Datapath::SpliceState, std::string> Datapath::spliceState(int fd) const {
  if (!sk_) return std::unexpected("data path is not loaded");
  auto c = socketCookie(fd);
  if (!c) return std::unexpected(c.error());
  sluice_l4pair pair{};
  if (bpf_map_lookup_elem(sk_->mapFd("sluice_l4peer"), &*c, &pair) != 0)
    return std::unexpected("socket is not spliced: " + errnoText(errno));
  if (pair.held == SLUICE_L4_BROKEN)
    return std::unexpected("the kernel could not keep the spliced stream exact (bpf.l4_broken)");
  return SpliceState{.redirected = pair.redirected, .kept = pair.kept,
                     .held = pair.held == SLUICE_L4_HELD};
}

std::expected<void, std::string> Datapath::spliceCopied(int fd, std::uint64_t copied) {
  if (!sk_) return std::unexpected("data path is not loaded");
  auto c = socketCookie(fd);
  if (!c) return std::unexpected(c.error());
  sluice_l4copy v{.copied = copied};
  if (bpf_map_update_elem(sk_->mapFd("sluice_l4copy"), &*c, &v, BPF_ANY) != 0)
    return std::unexpected("cannot write sluice_l4copy: " + errnoText(errno));
  return {};
}

void Datapath::spliceDetach(int fdA, int fdB) {
  if (!sk_) return;
  int peers = sk_->mapFd("sluice_l4peer");
  int socks = sk_->mapFd("sluice_l4socks");
  int copies = sk_->mapFd("sluice_l4copy");
  for (int fd : {fdA, fdB}) {
    auto c = socketCookie(fd);
    if (!c) continue;
    bpf_map_delete_elem(socks, &*c);
    bpf_map_delete_elem(peers, &*c);
    bpf_map_delete_elem(copies, &*c);
  }
}

namespace {
template <typename V, typename F>
std::expected<void, std::string> walkMap(int fd, std::uint32_t limit, F&& fn) {
  sluice_addr_key key{}, next{};
  const sluice_addr_key* cur = nullptr;
  // Bounded by the map size; entries deleted mid-walk (LRU) restart the walk
  // in the kernel, so the bound also caps that.
  for (std::uint32_t i = 0; i < limit && bpf_map_get_next_key(fd, cur, &next) == 0; ++i) {
    V val{};
    if (bpf_map_lookup_elem(fd, &next, &val) == 0) fn(next, val);
    key = next;
    cur = &key;
  }
  return {};
}
}  // namespace

std::expected<std::vector<Endpoint4>, std::string> Datapath::services() const {
  if (!sk_) return std::unexpected("data path is not loaded");
  std::vector<Endpoint4> out;
  walkMap<sluice_service>(sk_->mapFd("sluice_services"),
                          bpf_map__max_entries(sk_->sockops->maps.sluice_services),
                          [&](const sluice_addr_key& k, const sluice_service&) {
                            out.push_back({k.addr, k.port});
                          });
  return out;
}

std::optional<Endpoint4> Datapath::originalDestination(Endpoint4 client, Endpoint4 proxy) const {
  if (!sk_) return std::nullopt;
  sluice_tuple4 t{};
  t.src_addr = client.addrBe;
  t.src_port = client.portBe;
  t.dst_addr = proxy.addrBe;
  t.dst_port = proxy.portBe;
  sluice_addr_key v{};
  if (bpf_map_lookup_elem(sk_->mapFd("sluice_origdst"), &t, &v) != 0) return std::nullopt;
  return Endpoint4{v.addr, v.port};
}

std::expected<Counters, std::string> Datapath::counters() const {
  if (!sk_) return std::unexpected("data path is not loaded");
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return std::unexpected("cannot count possible CPUs: " + errnoText(ncpu));
  int fd = sk_->mapFd("sluice_cnt");
  std::vector<std::uint64_t> perCpu(static_cast<std::size_t>(ncpu));
  Counters out;
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
std::expected<std::optional<ConnStats>, std::string> lookupStats(int fd, Endpoint4 ep) {
  sluice_addr_key key = toKey(ep);
  sluice_conn_stats val{};
  if (bpf_map_lookup_elem(fd, &key, &val) != 0) {
    if (errno == ENOENT) return std::optional<ConnStats>{};
    return std::unexpected("cannot read stats map: " + errnoText(errno));
  }
  return std::optional<ConnStats>{toStats(val)};
}
}  // namespace

std::expected<std::optional<ConnStats>, std::string> Datapath::peer(Endpoint4 ep) const {
  if (!sk_) return std::unexpected("data path is not loaded");
  return lookupStats(sk_->mapFd("sluice_peers"), ep);
}

std::expected<std::optional<ConnStats>, std::string> Datapath::service(Endpoint4 vip) const {
  if (!sk_) return std::unexpected("data path is not loaded");
  return lookupStats(sk_->mapFd("sluice_svcstat"), vip);
}

namespace {
std::vector<StatsEntry> allStats(int fd, std::uint32_t limit) {
  std::vector<StatsEntry> out;
  walkMap<sluice_conn_stats>(fd, limit, [&](const sluice_addr_key& k, const sluice_conn_stats& v) {
    out.push_back({{k.addr, k.port}, toStats(v)});
  });
  return out;
}
}  // namespace

std::expected<std::vector<StatsEntry>, std::string> Datapath::peers() const {
  if (!sk_) return std::unexpected("data path is not loaded");
  return allStats(sk_->mapFd("sluice_peers"),
                  bpf_map__max_entries(sk_->sockops->maps.sluice_peers));
}

std::expected<std::vector<StatsEntry>, std::string> Datapath::serviceStats() const {
  if (!sk_) return std::unexpected("data path is not loaded");
  return allStats(sk_->mapFd("sluice_svcstat"),
                  bpf_map__max_entries(sk_->sockops->maps.sluice_svcstat));
}

std::expected<std::vector<ProgInfo>, std::string> Datapath::info() const {
  if (!sk_) return std::unexpected("data path is not loaded");
  std::vector<ProgInfo> out;
  for (auto [obj, prog, name] : sk_->all()) {
    bpf_prog_info raw{};
    __u32 len = sizeof(raw);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &raw, &len) != 0)
      return std::unexpected(std::string("cannot query ") + name + " info: " + errnoText(errno));
    ProgInfo p;
    p.name = name;
    p.id = raw.id;
    p.elfInsns = bpf_program__insn_cnt(prog);
    p.xlatedInsns = raw.xlated_prog_len / sizeof(bpf_insn);
    p.jitedBytes = raw.jited_prog_len;
    p.verifiedInsns = raw.verified_insns;
    out.push_back(p);
  }
  return out;
}

int Datapath::enabledMapFd() const { return sk_ ? sk_->mapFd(kEnabledMapName) : -1; }

int Datapath::sockopsProgFd() const {
  return sk_ ? bpf_program__fd(sk_->sockops->progs.sluice_sockops) : -1;
}

// ---- EnabledCgroups ------------------------------------------------------

std::expected<EnabledCgroups, std::string> EnabledCgroups::open(const std::string& pinDir,
                                                                bool create) {
  std::string path = pinDir + "/" + kEnabledMapName;
  int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) {
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.type != BPF_MAP_TYPE_HASH ||
        info.key_size != sizeof(std::uint64_t) || info.value_size != sizeof(sluice_enabled)) {
      ::close(fd);
      return std::unexpected(path + " is not a sluice_enabled map of this version");
    }
    return EnabledCgroups(fd);
  }
  int err = errno;
  if (err != ENOENT || !create)
    return std::unexpected("cannot open " + path + ": " + errnoText(err) +
                           (err == ENOENT ? " (no daemon has run with --bpf-pin-dir " + pinDir + ")"
                                          : privilegeHint(err)));
  bool created = false;
  if (auto r = ensurePinDir(pinDir, &created); !r) return std::unexpected(r.error());
  LIBBPF_OPTS(bpf_map_create_opts, mopts);
  fd = bpf_map_create(BPF_MAP_TYPE_HASH, kEnabledMapName, sizeof(std::uint64_t),
                      sizeof(sluice_enabled), kEnabledMapEntries, &mopts);
  if (fd < 0)
    return std::unexpected(std::string("cannot create the sluice_enabled map: ") +
                           errnoText(errno) + privilegeHint(errno));
  if (bpf_obj_pin(fd, path.c_str()) != 0) {
    err = errno;
    ::close(fd);
    return std::unexpected("cannot pin " + path + ": " + errnoText(err));
  }
  return EnabledCgroups(fd);
}

EnabledCgroups::~EnabledCgroups() {
  if (fd_ >= 0) ::close(fd_);
}

std::expected<void, std::string> EnabledCgroups::enable(std::uint64_t cgroupId) {
  sluice_enabled v{};
  if (bpf_map_update_elem(fd_, &cgroupId, &v, BPF_ANY) != 0)
    return std::unexpected("cannot enable cgroup id " + std::to_string(cgroupId) + ": " +
                           errnoText(errno) +
                           (errno == E2BIG ? " (at most " + std::to_string(kEnabledMapEntries) +
                                                 " cgroups)"
                                           : ""));
  return {};
}

std::expected<bool, std::string> EnabledCgroups::disable(std::uint64_t cgroupId) {
  if (bpf_map_delete_elem(fd_, &cgroupId) == 0) return true;
  if (errno == ENOENT) return false;
  return std::unexpected("cannot disable cgroup id " + std::to_string(cgroupId) + ": " +
                         errnoText(errno));
}

std::expected<std::vector<std::uint64_t>, std::string> EnabledCgroups::list() const {
  std::vector<std::uint64_t> out;
  std::uint64_t key = 0, next = 0;
  const std::uint64_t* cur = nullptr;
  for (std::uint32_t i = 0; i < kEnabledMapEntries && bpf_map_get_next_key(fd_, cur, &next) == 0;
       ++i) {
    out.push_back(next);
    key = next;
    cur = &key;
  }
  return out;
}

// ---- free functions --------------------------------------------------------

const char* counterName(sluice_counter c) {
  switch (c) {
    case SLUICE_CNT_OPENED_ACTIVE: return "opened_active";
    case SLUICE_CNT_OPENED_PASSIVE: return "opened_passive";
    case SLUICE_CNT_CLOSED: return "closed";
    case SLUICE_CNT_ACTIVE: return "active";
    case SLUICE_CNT_CB_FLAGS_FAILED: return "cb_flags_failed";
    case SLUICE_CNT_PEER_NOT_IPV4: return "peer_not_ipv4";
    case SLUICE_CNT_PEER_MAP_FULL: return "peer_map_full";
    case SLUICE_CNT_PEER_MISSING: return "peer_missing";
    case SLUICE_CNT_CAPTURED: return "captured";
    case SLUICE_CNT_CAPTURE_NO_STORAGE: return "capture_no_storage";
    case SLUICE_CNT_PEERNAME_REWRITTEN: return "peername_rewritten";
    case SLUICE_CNT_ORIGDST_ANSWERED: return "origdst_answered";
    case SLUICE_CNT_ORIGDST_RECORDED: return "origdst_recorded";
    case SLUICE_CNT_ORIGDST_MAP_FULL: return "origdst_map_full";
    case SLUICE_CNT_SOCKHASH_ADDED: return "sockhash_added";
    case SLUICE_CNT_SOCKHASH_FAILED: return "sockhash_failed";
    case SLUICE_CNT_MSG_REDIRECTED: return "msg_redirected";
    case SLUICE_CNT_MSG_REDIRECTED_BYTES: return "msg_redirected_bytes";
    case SLUICE_CNT_MSG_PASSED: return "msg_passed";
    case SLUICE_CNT_L4_SPLICED_BYTES: return "l4_spliced_bytes";
    case SLUICE_CNT_L4_NO_PEER: return "l4_no_peer";
    case SLUICE_CNT_L4_HELD: return "l4_held";
    case SLUICE_CNT_L4_HELD_BYTES: return "l4_held_bytes";
    case SLUICE_CNT_SOCKHASH_KEPT_OUT: return "sockhash_kept_out";
    case SLUICE_CNT_L4_RESUMED: return "l4_resumed";
    case SLUICE_CNT_L4_TRIMMED: return "l4_trimmed";
    case SLUICE_CNT_L4_TRIMMED_BYTES: return "l4_trimmed_bytes";
    case SLUICE_CNT_L4_BROKEN: return "l4_broken";
    case SLUICE_CNT_MSG_BACKLOGGED: return "msg_backlogged";
    case SLUICE_CNT_MSG_KEPT_ON_TCP_BYTES: return "msg_kept_on_tcp_bytes";
    case SLUICE_CNT_MAX: break;
  }
  return "unknown";
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
int connect4AttachType() { return BPF_CGROUP_INET4_CONNECT; }

std::optional<std::string> probeBpf() {
  auto mount = findCgroup2Mount();
  if (!mount) return mount.error();
  auto dp = Datapath::load();
  if (!dp) {
    if (::geteuid() != 0)
      return "not root (euid " + std::to_string(::geteuid()) +
             "): eBPF capture needs root or CAP_BPF+CAP_NET_ADMIN; " + dp.error();
    return dp.error();
  }
  return std::nullopt;
}

std::expected<std::uint64_t, std::string> cgroupIdOfPath(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return std::unexpected("cannot stat cgroup " + path + ": " + errnoText(errno));
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
    return std::unexpected(path + " is not a cgroup v2 directory");
  return static_cast<std::uint64_t>(st.st_ino);
}

std::expected<std::string, std::string> ownCgroupPath() {
  auto mount = findCgroup2Mount();
  if (!mount) return std::unexpected(mount.error());
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return *mount + line.substr(3);
  }
  return std::unexpected("no cgroup v2 entry in /proc/self/cgroup");
}

}  // namespace sluice::bpf
