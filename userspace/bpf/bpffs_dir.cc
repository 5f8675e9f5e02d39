#include "bpf/bpffs_dir.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

namespace sluice::bpf {
namespace {

std::string errnoText(int err) { return std::strerror(err); }

}  // namespace

bool isBpffs(const std::string& path) {
  struct statfs fs {};
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC;
}

std::expected<BpffsDir, std::string> BpffsDir::acquire(const std::string& preferred,
                                                       const std::string& fallbackTemplate) {
  if (isBpffs(preferred)) return BpffsDir(preferred, false);

  std::vector<char> tmpl(fallbackTemplate.begin(), fallbackTemplate.end());
  tmpl.push_back('\0');
  if (::mkdtemp(tmpl.data()) == nullptr)
    return std::unexpected(preferred + " is not a bpffs mount and no fallback directory from " +
                           fallbackTemplate + " could be made: " + errnoText(errno));
  std::string dir(tmpl.data());

  // mode=0700: the instance root would otherwise be world-writable (1777).
  if (::mount("bpf", dir.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
    int err = errno;
    ::rmdir(dir.c_str());
    std::string msg = preferred + " is not a bpffs mount and mounting a private bpffs on " +
                      dir + " failed: " + errnoText(err);
    if (err == EPERM) msg += " (mounting needs root or CAP_SYS_ADMIN)";
    if (err == ENODEV) msg += " (this kernel has no bpf filesystem: CONFIG_BPF_SYSCALL)";
    return std::unexpected(msg);
  }
  BpffsDir out(std::move(dir), true);
  if (!isBpffs(out.path_)) {
    std::string msg = "mounted bpffs on " + out.path_ + " but statfs does not report bpffs";
    (void)out.release();
    return std::unexpected(msg);
  }
  return out;
}

BpffsDir::BpffsDir(BpffsDir&& other) noexcept
    : path_(std::exchange(other.path_, {})), ownsMount_(std::exchange(other.ownsMount_, false)) {}

BpffsDir& BpffsDir::operator=(BpffsDir&& other) noexcept {
  if (this != &other) {
    (void)release();
    path_ = std::exchange(other.path_, {});
    ownsMount_ = std::exchange(other.ownsMount_, false);
  }
  return *this;
}

BpffsDir::~BpffsDir() {
  if (auto r = release(); !r) std::fprintf(stderr, "sluice: %s\n", r.error().c_str());
}

std::expected<void, std::string> BpffsDir::release() {
  std::string dir = std::exchange(path_, {});
  if (!std::exchange(ownsMount_, false) || dir.empty()) return {};

  std::string problem;
  if (::umount2(dir.c_str(), 0) != 0) {
    int err = errno;
    // EBUSY: an fd is still open on a pin; detach now, the kernel frees the
    // instance when that fd closes. EINVAL: no longer a mount point (someone
    // unmounted it already), so only the directory is left to remove.
    if (err == EBUSY) {
      if (::umount2(dir.c_str(), MNT_DETACH) != 0)
        problem = "cannot unmount private bpffs " + dir + ": " + errnoText(errno);
    } else if (err != EINVAL) {
      problem = "cannot unmount private bpffs " + dir + ": " + errnoText(err);
    }
  }
  if (problem.empty() && ::rmdir(dir.c_str()) != 0 && errno != ENOENT)
    problem = "cannot remove " + dir + ": " + errnoText(errno);
  if (!problem.empty()) return std::unexpected(problem);
  return {};
}

}  // namespace sluice::bpf
