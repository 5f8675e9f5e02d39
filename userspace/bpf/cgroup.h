// cgroup v2 helpers for the BPF attach points: find the cgroup2 mount and own
// a child cgroup for its lifetime. Used by the daemon and by tests/bpf.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::bpf {

// Mount point of the first cgroup2 filesystem listed in `mountsText` (the
// format of /proc/mounts; octal escapes such as \040 are decoded).
std::expected<std::string, std::string> parseCgroup2Mount(std::string_view mountsText);

// Same, reading /proc/mounts (or `mountsPath`).
std::expected<std::string, std::string> findCgroup2Mount(
    const std::string& mountsPath = "/proc/mounts");

// A cgroup directory this process created. The destructor removes it; it
// never kills anything, so callers must let every member process exit first
// (rmdir of a populated cgroup fails with EBUSY and is reported on stderr).
class Cgroup {
 public:
  // mkdir(parent/name). Fails if it already exists: adopting a directory we
  // did not create would later delete someone else's cgroup.
  static std::expected<Cgroup, std::string> create(const std::string& parent,
                                                   const std::string& name);

  Cgroup(Cgroup&& other) noexcept;
  Cgroup& operator=(Cgroup&& other) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  ~Cgroup();

  const std::string& path() const { return path_; }
  // O_RDONLY|O_DIRECTORY fd, what BPF cgroup attach takes.
  int fd() const { return fd_; }
  // The kernel's cgroup id (the kernfs inode number on cgroup2), as
  // bpf_get_current_cgroup_id() reports it.
  std::uint64_t id() const { return id_; }

  std::expected<void, std::string> movePid(pid_t pid) const;
  std::expected<std::vector<pid_t>, std::string> pids() const;

  // Closes the fd and removes the directory, retrying briefly while exiting
  // members drain. Idempotent; the destructor calls it.
  std::expected<void, std::string> remove();

 private:
  Cgroup(std::string path, int fd, std::uint64_t id) : path_(std::move(path)), fd_(fd), id_(id) {}

  std::string path_;
  int fd_ = -1;
  std::uint64_t id_ = 0;
};

}  // namespace sluice::bpf
