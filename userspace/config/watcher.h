// Watches a config directory tree with inotify and calls onChange once per
// burst of changes (after ~100 ms of quiet, at most ~1 s after the first
// event). Handles the Kubernetes ConfigMap layout, where an update is an
// atomic rename of the `..data` symlink in the top directory.
//
// onChange runs on the watcher's own thread; it should hand off (e.g. reload
// and swap a snapshot) rather than block for long.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <string>
#include <thread>
#include <unordered_map>

namespace sluice::config {

class ConfigWatcher {
 public:
  ConfigWatcher(std::string dir, std::function<void()> onChange,
                std::chrono::milliseconds debounce = std::chrono::milliseconds(100));
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // Starts the thread. Fails if inotify is unavailable or `dir` cannot be watched.
  std::expected<void, std::string> start();
  // Wakes the thread and joins it. Idempotent; the destructor calls it.
  void stop();

 private:
  void run();
  void addTree(const std::string& dir);
  void addWatch(const std::string& dir);
  bool drainEvents();  // true if any event is relevant

  std::string dir_;
  std::function<void()> onChange_;
  std::chrono::milliseconds debounce_;
  int inotifyFd_ = -1;
  int wakeFd_ = -1;
  int rootWd_ = -1;
  std::unordered_map<int, std::string> watches_;  // wd -> directory path
  std::thread thread_;
};

}  // namespace sluice::config
