#include "bpf_test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "bpf/datapath.h"

namespace sluice::bpf::testing {

bool inCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::optional<std::string> bpfUnavailableReason() {
  if (::geteuid() != 0)
    return "not root (euid " + std::to_string(::geteuid()) +
           "): the BPF tests create cgroups and attach programs; run them as root";
  return probeBpf();
}

// ---- emergency cleanup ------------------------------------------------------

namespace {
constexpr int kSlots = 16;
constexpr int kPathMax = 256;
char gCgroups[kSlots][kPathMax];
volatile sig_atomic_t gCgroupUsed[kSlots];
volatile sig_atomic_t gPids[kSlots];
char gMounts[kSlots][kPathMax];
volatile sig_atomic_t gMountUsed[kSlots];

void trackPath(char (*paths)[kPathMax], volatile sig_atomic_t* used, const std::string& path) {
  if (path.size() >= kPathMax) return;
  for (int i = 0; i < kSlots; ++i) {
    if (!used[i]) {
      std::memcpy(paths[i], path.c_str(), path.size() + 1);
      used[i] = 1;
      return;
    }
  }
}

void untrackPath(char (*paths)[kPathMax], volatile sig_atomic_t* used, const std::string& path) {
  for (int i = 0; i < kSlots; ++i)
    if (used[i] && path == paths[i]) used[i] = 0;
}

void emergencyHandler(int sig) {
  for (int i = 0; i < kSlots; ++i) {
    pid_t p = static_cast<pid_t>(gPids[i]);
    if (p > 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
  for (int i = kSlots - 1; i >= 0; --i)  // children were tracked after parents
    if (gCgroupUsed[i]) ::rmdir(gCgroups[i]);
  for (int i = 0; i < kSlots; ++i) {
    if (gMountUsed[i]) {
      ::umount2(gMounts[i], MNT_DETACH);
      ::rmdir(gMounts[i]);
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
}  // namespace

void installEmergencyCleanup() {
  struct sigaction sa {};
  sa.sa_handler = emergencyHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM, SIGABRT, SIGSEGV}) ::sigaction(sig, &sa, nullptr);
}

void trackCgroup(const std::string& path) { trackPath(gCgroups, gCgroupUsed, path); }
void untrackCgroup(const std::string& path) { untrackPath(gCgroups, gCgroupUsed, path); }
void trackMount(const std::string& path) { trackPath(gMounts, gMountUsed, path); }
void untrackMount(const std::string& path) { untrackPath(gMounts, gMountUsed, path); }

bool isMountPoint(const std::string& path) {
  std::ifstream in("/proc/mounts");
  std::string device, mountPoint, rest;
  while (in >> device >> mountPoint && std::getline(in, rest))
    if (mountPoint == path) return true;
  return false;
}

void trackPid(pid_t pid) {
  for (int i = 0; i < kSlots; ++i) {
    if (gPids[i] == 0) {
      gPids[i] = pid;
      return;
    }
  }
}

void untrackPid(pid_t pid) {
  for (int i = 0; i < kSlots; ++i)
    if (gPids[i] == pid) gPids[i] = 0;
}

std::expected<TrackedBpffs, std::string> TrackedBpffs::acquire(
    const std::string& preferred, const std::string& fallbackTemplate) {
  auto d = BpffsDir::acquire(preferred, fallbackTemplate);
  if (!d) return std::unexpected(d.error());
  if (d->ownsMount()) trackMount(d->path());
  return TrackedBpffs(std::move(*d));
}

std::expected<void, std::string> TrackedBpffs::release() {
  if (!dir_) return {};
  std::string path = dir_->path();
  bool owned = dir_->ownsMount();
  auto r = dir_->release();
  dir_.reset();
  if (owned) untrackMount(path);
  return r;
}

TrackedBpffs::~TrackedBpffs() {
  if (auto r = release(); !r) std::fprintf(stderr, "sluice: %s\n", r.error().c_str());
}

// ---- sockets -----------------------------------------------------------------

namespace {
std::string errText() { return std::strerror(errno); }

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool waitReadable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}
}  // namespace

std::expected<Listener, std::string> Listener::open() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected("socket: " + errText());
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::string e = errText();
    ::close(fd);
    return std::unexpected("listener on 127.0.0.1: " + e);
  }
  return Listener(fd, ntohs(a.sin_port));
}

Listener::~Listener() {
  if (fd_ >= 0) ::close(fd_);
}

std::expected<void, std::string> Listener::serve(int n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<std::int64_t>(ms.count(), 0));
  };
  for (int i = 0; i < n; ++i) {
    if (!waitReadable(fd_, left())) return std::unexpected("timed out accepting connection " +
                                                           std::to_string(i + 1));
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return std::unexpected("accept: " + errText());
    char buf[64];
    bool eof = false;
    while (!eof && waitReadable(c, left())) {
      ssize_t r = ::read(c, buf, sizeof(buf));
      eof = r <= 0;
    }
    ::close(c);
    if (!eof) return std::unexpected("timed out waiting for the client to close");
  }
  return {};
}

std::expected<void, std::string> connectOnce(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected("socket: " + errText());
  sockaddr_in a = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::write(fd, "x", 1) != 1) {
    std::string e = errText();
    ::close(fd);
    return std::unexpected("connect to 127.0.0.1:" + std::to_string(port) + ": " + e);
  }
  ::close(fd);
  return {};
}

// ---- child ------------------------------------------------------------------

std::expected<ConnectorChild, std::string> ConnectorChild::spawn(std::uint16_t port, int n) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::unexpected("pipe: " + errText());
  pid_t pid = ::fork();
  if (pid < 0) {
    std::string e = errText();
    ::close(fds[0]);
    ::close(fds[1]);
    return std::unexpected("fork: " + e);
  }
  if (pid == 0) {
    // Child: only syscalls from here, then _exit (never return into gtest).
    ::close(fds[1]);
    char go = 0;
    if (::read(fds[0], &go, 1) != 1 || go != 'g') ::_exit(2);
    for (int i = 0; i < n; ++i)
      if (!connectOnce(port)) ::_exit(10 + i);
    ::_exit(0);
  }
  ::close(fds[0]);
  trackPid(pid);
  return ConnectorChild(pid, fds[1]);
}

ConnectorChild::~ConnectorChild() {
  if (goFd_ >= 0) ::close(goFd_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);  // our own child, by pid
    ::waitpid(pid_, nullptr, 0);
    untrackPid(pid_);
  }
}

std::expected<void, std::string> ConnectorChild::go() {
  if (goFd_ < 0 || ::write(goFd_, "g", 1) != 1) return std::unexpected("cannot release child");
  ::close(goFd_);
  goFd_ = -1;
  return {};
}

std::expected<int, std::string> ConnectorChild::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      untrackPid(pid_);
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return std::unexpected("child ended abnormally, status " + std::to_string(status));
    }
    if (r < 0) return std::unexpected("waitpid: " + errText());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::unexpected("child did not finish in time");
}

std::expected<std::string, std::string> cgroupOfPid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return std::unexpected("no cgroup v2 entry in /proc/" + std::to_string(pid) + "/cgroup");
}

std::expected<void, std::string> TestCgroup::create(const std::string& suffix) {
  auto m = findCgroup2Mount();
  if (!m) return std::unexpected(m.error());
  mount = *m;
  auto c = Cgroup::create(mount, "sluice-test-" + std::to_string(::getpid()) + suffix);
  if (!c) return std::unexpected(c.error());
  cg.emplace(std::move(*c));
  trackCgroup(cg->path());
  return {};
}

std::expected<void, std::string> TestCgroup::createUnder(const TestCgroup& parent,
                                                         const std::string& name) {
  mount = parent.mount;
  auto c = Cgroup::create(parent.path(), name);
  if (!c) return std::unexpected(c.error());
  cg.emplace(std::move(*c));
  trackCgroup(cg->path());
  return {};
}

TestCgroup::~TestCgroup() {
  if (cg) {
    std::string p = cg->path();
    cg.reset();
    untrackCgroup(p);
  }
}

}  // namespace sluice::bpf::testing
