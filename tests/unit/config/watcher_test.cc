// ConfigWatcher against a real inotify: plain writes, new subdirectories and
// the Kubernetes ConfigMap `..data` symlink swap each produce one debounced
// onChange; stop() returns promptly.
#include "config/watcher.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "test_util.h"

namespace sluice::config {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::TempDir;

// Counts onChange calls and lets the test wait for the next one.
class ChangeCounter {
 public:
  void bump() {
    std::lock_guard lock(mu_);
    ++count_;
    cv_.notify_all();
  }
  // Waits until count > seen or the timeout passes; returns the count.
  int waitAbove(int seen, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return count_ > seen; });
    return count_;
  }
  int count() {
    std::lock_guard lock(mu_);
    return count_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

TEST(ConfigWatcher, StartFailsForMissingDirectory) {
  ConfigWatcher w("/nonexistent/sluice-watch", [] {});
  auto r = w.start();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("/nonexistent/sluice-watch"), std::string::npos);
}

TEST(ConfigWatcher, BurstOfWritesIsOneChange) {
  TempDir d;
  ChangeCounter changes;
  ConfigWatcher w(d.path(), [&] { changes.bump(); });
  ASSERT_TRUE(w.start().has_value());
  for (int i = 0; i < 5; ++i) d.write("f" + std::to_string(i) + ".yaml", "a: 1\n");
  EXPECT_EQ(changes.waitAbove(0, 3s), 1);
  std::this_thread::sleep_for(300ms);  // well past the 100 ms debounce
  EXPECT_EQ(changes.count(), 1);
}

TEST(ConfigWatcher, NewSubdirectoryIsWatched) {
  TempDir d;
  ChangeCounter changes;
  ConfigWatcher w(d.path(), [&] { changes.bump(); });
  ASSERT_TRUE(w.start().has_value());
  fs::create_directory(d.path() + "/team");
  ASSERT_GE(changes.waitAbove(0, 3s), 1);
  int seen = changes.count();
  d.write("team/routes.yaml", "a: 1\n");  // only seen if team/ got its own watch
  EXPECT_GT(changes.waitAbove(seen, 3s), seen);
}

TEST(ConfigWatcher, ConfigMapSymlinkSwapTriggersChange) {
  TempDir d;
  const std::string p = d.path();
  d.write("..2026_1/x.yaml", "v: 1\n");
  fs::create_directory_symlink("..2026_1", p + "/..data");
  fs::create_symlink("..data/x.yaml", p + "/x.yaml");

  ChangeCounter changes;
  ConfigWatcher w(p, [&] { changes.bump(); });
  ASSERT_TRUE(w.start().has_value());
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(changes.count(), 0);

  // What kubelet does: write a new timestamped dir, point a temp link at it,
  // rename the temp link over ..data (atomic), then delete the old dir.
  d.write("..2026_2/x.yaml", "v: 2\n");
  fs::create_directory_symlink("..2026_2", p + "/..data_tmp");
  fs::rename(p + "/..data_tmp", p + "/..data");
  fs::remove_all(p + "/..2026_1");

  EXPECT_EQ(changes.waitAbove(0, 3s), 1);
  std::ifstream in(p + "/x.yaml");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "v: 2\n");  // the visible link now resolves to the new data
}

TEST(ConfigWatcher, StopIsPromptAndIdempotent) {
  TempDir d;
  ConfigWatcher w(d.path(), [] {});
  ASSERT_TRUE(w.start().has_value());
  auto t0 = std::chrono::steady_clock::now();
  w.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  w.stop();
}

TEST(ConfigWatcher, NoFdLeakAcrossStartStop) {
  auto countFds = [] {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  TempDir d;
  int before = countFds();
  for (int i = 0; i < 20; ++i) {
    ConfigWatcher w(d.path(), [] {});
    ASSERT_TRUE(w.start().has_value());
  }
  EXPECT_EQ(countFds(), before);
}

}  // namespace
}  // namespace sluice::config
