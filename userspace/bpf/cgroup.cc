#include "bpf/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace sluice::bpf {
namespace {

std::string errnoText(int err) { return std::strerror(err); }

// /proc/mounts escapes space, tab, newline and backslash as \ooo.
std::string unescapeMountField(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\\' && i + 3 < in.size()) {
      int v = 0;
      bool ok = true;
      for (std::size_t k = 1; k <= 3; ++k) {
        char c = in[i + k];
        if (c < '0' || c > '7') {
          ok = false;
          break;
        }
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

}  // namespace

std::expected<std::string, std::string> parseCgroup2Mount(std::string_view mountsText) {
  std::size_t pos = 0;
  while (pos < mountsText.size()) {
    std::size_t eol = mountsText.find('\n', pos);
    if (eol == std::string_view::npos) eol = mountsText.size();
    std::string_view line = mountsText.substr(pos, eol - pos);
    pos = eol + 1;

    // device mountpoint fstype options dump pass
    std::string_view fields[3];
    std::size_t n = 0, i = 0;
    while (n < 3 && i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      std::size_t start = i;
      while (i < line.size() && line[i] != ' ') ++i;
      if (i > start) fields[n++] = line.substr(start, i - start);
    }
    if (n == 3 && fields[2] == "cgroup2") return unescapeMountField(fields[1]);
  }
  return std::unexpected(
      "no cgroup v2 filesystem is mounted (none listed in /proc/mounts); eBPF capture "
      "attaches to cgroup v2: mount it (mount -t cgroup2 none /sys/fs/cgroup/unified) or "
      "boot with systemd.unified_cgroup_hierarchy=1, or run with --bpf off");
}

std::expected<std::string, std::string> findCgroup2Mount(const std::string& mountsPath) {
  std::ifstream in(mountsPath);
  if (!in) return std::unexpected("cannot read " + mountsPath + " to find the cgroup v2 mount");
  std::stringstream ss;
  ss << in.rdbuf();
  return parseCgroup2Mount(ss.str());
}

std::expected<Cgroup, std::string> Cgroup::create(const std::string& parent,
                                                  const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    return std::unexpected("invalid cgroup name '" + name + "': one path component expected");
  std::string path = parent + "/" + name;
  if (::mkdir(path.c_str(), 0755) != 0) {
    int err = errno;
    std::string msg = "cannot create cgroup " + path + ": " + errnoText(err);
    if (err == EACCES || err == EPERM) msg += " (creating cgroups needs root)";
    if (err == EEXIST) msg += " (refusing to adopt a cgroup this process did not create)";
    return std::unexpected(msg);
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::rmdir(path.c_str());
    return std::unexpected("cannot open cgroup " + path + ": " + errnoText(err));
  }
  return Cgroup(std::move(path), fd, static_cast<std::uint64_t>(st.st_ino));
}

Cgroup::Cgroup(Cgroup&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), id_(other.id_) {
  other.path_.clear();
  other.fd_ = -1;
}

Cgroup& Cgroup::operator=(Cgroup&& other) noexcept {
  if (this != &other) {
    (void)remove();
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    id_ = other.id_;
    other.path_.clear();
    other.fd_ = -1;
  }
  return *this;
}

Cgroup::~Cgroup() {
  if (auto r = remove(); !r) std::fprintf(stderr, "sluice: %s\n", r.error().c_str());
}

std::expected<void, std::string> Cgroup::movePid(pid_t pid) const {
  if (path_.empty()) return std::unexpected("cgroup already removed");
  std::string procs = path_ + "/cgroup.procs";
  int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return std::unexpected("cannot open " + procs + ": " + errnoText(errno));
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, pid);
  *end++ = '\n';
  ssize_t n = ::write(fd, buf, static_cast<std::size_t>(end - buf));
  int err = errno;
  ::close(fd);
  if (n < 0)
    return std::unexpected("cannot move pid " + std::to_string(pid) + " into " + path_ + ": " +
                           errnoText(err));
  return {};
}

std::expected<std::vector<pid_t>, std::string> Cgroup::pids() const {
  if (path_.empty()) return std::unexpected("cgroup already removed");
  std::ifstream in(path_ + "/cgroup.procs");
  if (!in) return std::unexpected("cannot read " + path_ + "/cgroup.procs");
  std::vector<pid_t> out;
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

std::expected<void, std::string> Cgroup::remove() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (path_.empty()) return {};
  // A member that just exited leaves the cgroup asynchronously; give it a
  // bounded moment (50 x 20 ms) before reporting the cgroup as busy.
  int err = 0;
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (::rmdir(path_.c_str()) == 0 || errno == ENOENT) {
      path_.clear();
      return {};
    }
    err = errno;
    if (err != EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string msg = "cannot remove cgroup " + path_ + ": " + errnoText(err);
  if (err == EBUSY) msg += " (processes still in it; they were not killed)";
  path_.clear();
  return std::unexpected(msg);
}

}  // namespace sluice::bpf
