#include "config/watcher.h"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>

namespace sluice::config {

namespace {

constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF |
                           IN_MOVE_SELF | IN_ATTRIB;
// A stream of writes must not postpone the reload forever.
constexpr std::chrono::milliseconds kMaxDelay{1000};
// While the root directory is gone, retry watching it this often.
constexpr int kRootRetryMs = 500;

}  // namespace

ConfigWatcher::ConfigWatcher(std::string dir, std::function<void()> onChange, std::chrono::milliseconds debounce)
    : dir_(std::move(dir)), onChange_(std::move(onChange)), debounce_(debounce) {}

ConfigWatcher::~ConfigWatcher() { stop(); }

std::expected<void, std::string> ConfigWatcher::start() {
  if (thread_.joinable()) return {};
  inotifyFd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotifyFd_ < 0) return std::unexpected(std::string("inotify_init1: ") + std::strerror(errno));
  wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd_ < 0) {
    std::string err = std::string("eventfd: ") + std::strerror(errno);
    ::close(inotifyFd_);
    inotifyFd_ = -1;
    return std::unexpected(err);
  }
  rootWd_ = inotify_add_watch(inotifyFd_, dir_.c_str(), kMask | IN_ONLYDIR);
  if (rootWd_ < 0) {
    std::string err = "cannot watch " + dir_ + ": " + std::strerror(errno);
    ::close(inotifyFd_);
    ::close(wakeFd_);
    inotifyFd_ = wakeFd_ = -1;
    return std::unexpected(err);
  }
  watches_[rootWd_] = dir_;
  addTree(dir_);
  thread_ = std::thread([this] { run(); });
  return {};
}

void ConfigWatcher::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    // eventfd writes of 8 bytes cannot be short; a failure would mean a bad fd.
    [[maybe_unused]] ssize_t n = ::write(wakeFd_, &one, sizeof(one));
    thread_.join();
  }
  if (inotifyFd_ >= 0) ::close(inotifyFd_);
  if (wakeFd_ >= 0) ::close(wakeFd_);
  inotifyFd_ = wakeFd_ = rootWd_ = -1;
  watches_.clear();
}

void ConfigWatcher::addWatch(const std::string& dir) {
  int wd = inotify_add_watch(inotifyFd_, dir.c_str(), kMask | IN_ONLYDIR);
  if (wd >= 0) watches_[wd] = dir;
}

// Watches visible subdirectories. Dot-prefixed ones (the ConfigMap
// `..<timestamp>` dirs) are not read by the loader, and the `..data` swap is
// seen as a rename in the top directory, so they need no watch.
void ConfigWatcher::addTree(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = dir + "/" + e->d_name;
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    // inotify returns the existing wd for an already watched inode, which
    // also stops symlink loops from recursing forever.
    int wd = inotify_add_watch(inotifyFd_, path.c_str(), kMask | IN_ONLYDIR);
    if (wd < 0 || watches_.contains(wd)) continue;
    watches_[wd] = path;
    addTree(path);
  }
  ::closedir(d);
}

bool ConfigWatcher::drainEvents() {
  alignas(inotify_event) char buf[16384];
  bool relevant = false;
  for (;;) {
    ssize_t n = ::read(inotifyFd_, buf, sizeof(buf));
    if (n <= 0) break;  // EAGAIN: drained
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        relevant = true;
        continue;
      }
      if (ev->mask & IN_IGNORED) {
        if (ev->wd == rootWd_) rootWd_ = -1;
        watches_.erase(ev->wd);
        relevant = true;
        continue;
      }
      relevant = true;
      auto it = watches_.find(ev->wd);
      if (it != watches_.end() && ev->len > 0 && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
          ev->name[0] != '.') {
        std::string sub = it->second + "/" + ev->name;
        addWatch(sub);
        addTree(sub);
      }
    }
  }
  return relevant;
}

void ConfigWatcher::run() {
  using Clock = std::chrono::steady_clock;
  bool pending = false;
  Clock::time_point first{}, last{};
  for (;;) {
    int timeout = -1;
    if (pending) {
      auto now = Clock::now();
      auto due = std::min(last + debounce_, first + kMaxDelay);
      timeout = due <= now ? 0 : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(due - now).count());
    } else if (rootWd_ < 0) {
      timeout = kRootRetryMs;
    }
    pollfd fds[2] = {{wakeFd_, POLLIN, 0}, {inotifyFd_, POLLIN, 0}};
    int rc = ::poll(fds, 2, timeout);
    if (rc < 0 && errno != EINTR) return;
    if (fds[0].revents & POLLIN) return;
    if (rc > 0 && (fds[1].revents & POLLIN) && drainEvents()) {
      auto now = Clock::now();
      if (!pending) first = now;
      pending = true;
      last = now;
    }
    if (rootWd_ < 0) {
      // The directory was removed or replaced: watch the new one when it appears.
      int wd = inotify_add_watch(inotifyFd_, dir_.c_str(), kMask | IN_ONLYDIR);
      if (wd >= 0) {
        rootWd_ = wd;
        watches_[wd] = dir_;
        addTree(dir_);
        auto now = Clock::now();
        if (!pending) first = now;
        pending = true;
        last = now;
      }
    }
    if (pending) {
      auto now = Clock::now();
      if (now >= last + debounce_ || now >= first + kMaxDelay) {
        pending = false;
        onChange_();
      }
    }
  }
}

}  // namespace sluice::config
