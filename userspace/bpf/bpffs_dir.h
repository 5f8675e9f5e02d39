// BpffsDir: a directory on bpffs to pin maps under, for hosts where
// /sys/fs/bpf is not mounted (containers, minimal VMs, CI runners).
//
// acquire() uses `preferred` as is when it already is a bpffs mount and then
// owns nothing. Otherwise it makes a fresh directory from `fallbackTemplate`
// (mkdtemp), mounts a private bpffs instance on it, and on release or
// destruction unmounts it (lazy MNT_DETACH if busy) and removes the directory.
// It never mounts on `preferred` itself: another process may expect that path
// to be whatever the host left there. Pins made under a private instance are
// visible only through its path and vanish with the unmount.
// Used by tests/bpf now and by the daemon's --bpf-pin-dir later.
#pragma once

#include <expected>
#include <string>

namespace sluice::bpf {

inline constexpr const char* kDefaultBpffs = "/sys/fs/bpf";
inline constexpr const char* kBpffsFallbackTemplate = "/tmp/sluice-bpffs-XXXXXX";

// statfs magic check; false when the path is missing or on another filesystem.
bool isBpffs(const std::string& path);

class BpffsDir {
 public:
  static std::expected<BpffsDir, std::string> acquire(
      const std::string& preferred = kDefaultBpffs,
      const std::string& fallbackTemplate = kBpffsFallbackTemplate);

  BpffsDir(BpffsDir&& other) noexcept;
  BpffsDir& operator=(BpffsDir&& other) noexcept;
  BpffsDir(const BpffsDir&) = delete;
  BpffsDir& operator=(const BpffsDir&) = delete;
  ~BpffsDir();

  const std::string& path() const { return path_; }
  // True when this object mounted path() and will unmount and remove it.
  bool ownsMount() const { return ownsMount_; }

  // Unmounts and removes a private mount; nothing for a borrowed one.
  // Idempotent; the destructor calls it and reports failures on stderr.
  std::expected<void, std::string> release();

 private:
  BpffsDir(std::string path, bool owns) : path_(std::move(path)), ownsMount_(owns) {}

  std::string path_;
  bool ownsMount_ = false;
};

}  // namespace sluice::bpf
