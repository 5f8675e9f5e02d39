// The files sluice-kube-sync keeps in sluiced's config directory: one JSON
// document per object, `<kind>/<namespace>/<name>.json`.
//
// Writers say what a file should hold (put / remove / replaceUnder); the
// mirror writes only what differs from what it last wrote (or found there at
// start), each file atomically (a dot-named temporary, which sluiced's
// loader skips, renamed into place). Changes are held until the stream of
// them pauses for `quiet`, or for at most `maxDelay` after the first, then
// written together: a burst of API events lands as one burst of files, which
// sluiced's watcher turns into one reload.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace sluice::kubesync {

class Mirror {
 public:
  Mirror(std::string dir, std::chrono::milliseconds quiet, std::chrono::milliseconds maxDelay);

  // Takes in the files already under `dir` (a restarted sync rewrites only
  // what changed, and removes what no longer exists after the next list).
  std::expected<void, std::string> scan();

  // `rel` is "<kind>/<namespace>/<name>.json".
  void put(const std::string& rel, std::string content);
  void remove(const std::string& rel);
  // After a full list: the files under `prefix/` become exactly `files`.
  void replaceUnder(const std::string& prefix, const std::map<std::string, std::string>& files);

  // The writer loop; returns when `stop` is set, after writing what is pending.
  void run(const std::atomic<bool>& stop);
  // Writes what is pending now. Returns false if any write or removal
  // failed (logged; queued again for the next batch).
  bool flush();

  struct Counters {
    uint64_t written = 0, removed = 0, batches = 0, failures = 0;
  };
  Counters counters() const;

 private:
  std::string dir_;
  std::chrono::milliseconds quiet_, maxDelay_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // What each file should hold: XXH3-64 of its content.
  std::unordered_map<std::string, uint64_t> desired_;
  // Files to write (content) or remove (nullopt), latest change wins.
  std::map<std::string, std::optional<std::string>> pending_;
  std::chrono::steady_clock::time_point firstChange_, lastChange_;
  Counters counters_;
};

}  // namespace sluice::kubesync
