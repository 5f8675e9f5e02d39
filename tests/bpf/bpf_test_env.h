// Shared by tests/bpf: the skip-or-fail rule, a last-resort cleanup for
// SIGINT/SIGTERM/abort, and a child process that connects from a cgroup.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>

#include "bpf/bpffs_dir.h"
#include "bpf/cgroup.h"

namespace sluice::bpf::testing {

bool inCi();
// Why the BPF tests cannot run here, or nullopt.
std::optional<std::string> bpfUnavailableReason();

// Async-signal-safe registry of what a run created. The RAII owners are the
// real cleanup; this only covers a run killed by SIGINT/SIGTERM or abort().
// bpf_links need no entry: the kernel detaches them when the process dies.
void installEmergencyCleanup();
void trackCgroup(const std::string& path);
void untrackCgroup(const std::string& path);
void trackPid(pid_t pid);
void untrackPid(pid_t pid);
// A private bpffs mounted by the run: lazily unmounted, then its directory
// removed (pins inside it go with the instance).
void trackMount(const std::string& path);
void untrackMount(const std::string& path);

// True when /proc/mounts lists a mount whose mount point is exactly `path`.
bool isMountPoint(const std::string& path);

// BpffsDir plus its emergency-cleanup entry while it owns a private mount.
class TrackedBpffs {
 public:
  static std::expected<TrackedBpffs, std::string> acquire(
      const std::string& preferred = kDefaultBpffs,
      const std::string& fallbackTemplate = kBpffsFallbackTemplate);
  TrackedBpffs(TrackedBpffs&&) noexcept = default;
  TrackedBpffs(const TrackedBpffs&) = delete;
  ~TrackedBpffs();
  const BpffsDir& dir() const { return *dir_; }
  // Release first, untrack after: a signal in between still finds the entry.
  std::expected<void, std::string> release();

 private:
  explicit TrackedBpffs(BpffsDir d) : dir_(std::move(d)) {}
  std::optional<BpffsDir> dir_;
};

// 127.0.0.1:<ephemeral> TCP listener owned by the test process.
class Listener {
 public:
  static std::expected<Listener, std::string> open();
  Listener(Listener&& o) noexcept : fd_(o.fd_), port_(o.port_) { o.fd_ = -1; }
  Listener(const Listener&) = delete;
  ~Listener();
  std::uint16_t port() const { return port_; }  // host byte order
  // Accepts n connections, reads each to EOF and closes it, so the client
  // side can finish its close. Bounded by `timeout` overall.
  std::expected<void, std::string> serve(int n, std::chrono::milliseconds timeout);

 private:
  Listener(int fd, std::uint16_t port) : fd_(fd), port_(port) {}
  int fd_;
  std::uint16_t port_;
};

// One blocking connect + 1-byte write + close to 127.0.0.1:port.
std::expected<void, std::string> connectOnce(std::uint16_t port);

// A forked child that waits for go(), then makes `n` connections to
// 127.0.0.1:port and exits 0 if all succeeded. The destructor SIGKILLs and
// reaps it by pid if it is still running.
class ConnectorChild {
 public:
  static std::expected<ConnectorChild, std::string> spawn(std::uint16_t port, int n);
  ConnectorChild(ConnectorChild&& o) noexcept : pid_(o.pid_), goFd_(o.goFd_) {
    o.pid_ = -1;
    o.goFd_ = -1;
  }
  ConnectorChild(const ConnectorChild&) = delete;
  ~ConnectorChild();
  pid_t pid() const { return pid_; }
  std::expected<void, std::string> go();
  // Exit status, or an error on timeout / abnormal termination.
  std::expected<int, std::string> wait(std::chrono::milliseconds timeout);

 private:
  ConnectorChild(pid_t pid, int goFd) : pid_(pid), goFd_(goFd) {}
  pid_t pid_;
  int goFd_;
};

// A cgroup this test created plus its emergency-cleanup entry. create()
// makes sluice-test-<pid><suffix> under the cgroup2 mount; child() one more
// level under it. Members must have exited before destruction.
struct TestCgroup {
  std::string mount;
  std::optional<Cgroup> cg;

  std::expected<void, std::string> create(const std::string& suffix);
  std::expected<void, std::string> createUnder(const TestCgroup& parent, const std::string& name);
  std::string relative() const { return cg->path().substr(mount.size()); }
  const std::string& path() const { return cg->path(); }
  ~TestCgroup();
};

// The cgroup v2 path of `pid` relative to the cgroup2 mount ("/a/b").
std::expected<std::string, std::string> cgroupOfPid(pid_t pid);

}  // namespace sluice::bpf::testing

// Not root or no BPF: skip with the reason, except under CI=true where the
// BPF tests must run and a missing capability is a failure.
#define SLUICE_REQUIRE_BPF()                                                        \
  do {                                                                              \
    if (auto why_ = ::sluice::bpf::testing::bpfUnavailableReason()) {               \
      if (::sluice::bpf::testing::inCi()) FAIL() << "CI=true: BPF tests must run: " \
                                                 << *why_;                          \
      GTEST_SKIP() << *why_;                                                        \
    }                                                                               \
  } while (0)
