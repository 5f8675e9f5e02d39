// BpffsDir on any host: a plain /tmp directory stands in for a /sys/fs/bpf
// that is not bpffs, so the fallback path runs whether or not the host
// mounted bpffs. Root only (mount); cleanup is checked through /proc/mounts.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "bpf/bpffs_dir.h"
#include "bpf_test_env.h"

namespace sluice::bpf {
namespace {

// A plain directory (not bpffs) the test owns; removed on scope exit.
struct PlainDir {
  std::string path;
  PlainDir() {
    std::string t = "/tmp/sluice-plain-XXXXXX";
    if (::mkdtemp(t.data()) != nullptr) path = t;
  }
  ~PlainDir() {
    if (!path.empty()) ::rmdir(path.c_str());
  }
};

TEST(BpffsDir, MountsPrivateInstanceWhenPreferredIsNotBpffs) {
  SLUICE_REQUIRE_BPF();
  PlainDir plain;
  ASSERT_FALSE(plain.path.empty());
  ASSERT_FALSE(isBpffs(plain.path));

  auto fs = testing::TrackedBpffs::acquire(plain.path);
  ASSERT_TRUE(fs) << fs.error();
  const std::string root = fs->dir().path();
  EXPECT_TRUE(fs->dir().ownsMount());
  EXPECT_EQ(root.rfind("/tmp/sluice-bpffs-", 0), 0u) << root;
  EXPECT_TRUE(isBpffs(root));
  EXPECT_TRUE(testing::isMountPoint(root));
  EXPECT_FALSE(isBpffs(plain.path)) << "must not mount on the preferred path";
  EXPECT_FALSE(testing::isMountPoint(plain.path));
  struct stat st {};
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  // The kernel keeps the sticky bit on a bpffs root; only the rwx bits follow mode=.
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "private instance root must not be world-writable";

  // Content inside the instance does not block release: it goes with it.
  ASSERT_EQ(::mkdir((root + "/sub").c_str(), 0700), 0);

  auto r = fs->release();
  EXPECT_TRUE(r) << r.error();
  EXPECT_FALSE(testing::isMountPoint(root));
  EXPECT_NE(::access(root.c_str(), F_OK), 0) << root << " left behind";
  EXPECT_TRUE(fs->release()) << "release is idempotent";
}

TEST(BpffsDir, BorrowsPreferredWhenItIsBpffsAndLeavesItMounted) {
  SLUICE_REQUIRE_BPF();
  PlainDir plain;
  ASSERT_FALSE(plain.path.empty());
  auto owner = testing::TrackedBpffs::acquire(plain.path);
  ASSERT_TRUE(owner) << owner.error();
  const std::string root = owner->dir().path();

  {
    auto borrowed = BpffsDir::acquire(root);
    ASSERT_TRUE(borrowed) << borrowed.error();
    EXPECT_EQ(borrowed->path(), root);
    EXPECT_FALSE(borrowed->ownsMount());
    auto r = borrowed->release();
    EXPECT_TRUE(r) << r.error();
  }
  EXPECT_TRUE(testing::isMountPoint(root)) << "a borrowed bpffs must stay mounted";
  EXPECT_EQ(::access(root.c_str(), F_OK), 0);
}

TEST(BpffsDir, DetachesLazilyWhileAnFdKeepsItBusy) {
  SLUICE_REQUIRE_BPF();
  PlainDir plain;
  ASSERT_FALSE(plain.path.empty());
  auto fs = testing::TrackedBpffs::acquire(plain.path);
  ASSERT_TRUE(fs) << fs.error();
  const std::string root = fs->dir().path();
  ASSERT_EQ(::mkdir((root + "/busy").c_str(), 0700), 0);
  int fd = ::open((root + "/busy").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // The fd makes a plain umount fail with EBUSY; release must still succeed.
  ASSERT_NE(::umount2(root.c_str(), 0), 0);
  ASSERT_EQ(errno, EBUSY);

  auto r = fs->release();
  EXPECT_TRUE(r) << r.error();
  EXPECT_FALSE(testing::isMountPoint(root));
  EXPECT_NE(::access(root.c_str(), F_OK), 0) << root << " left behind";
  ::close(fd);
}

// Fails at mkdtemp, before any mount: needs no privileges.
TEST(BpffsDir, ReportsAnUnusableFallbackTemplate) {
  PlainDir plain;
  ASSERT_FALSE(plain.path.empty());
  auto fs = BpffsDir::acquire(plain.path, "/nonexistent-sluice-dir/bpffs-XXXXXX");
  ASSERT_FALSE(fs);
  EXPECT_NE(fs.error().find("not a bpffs mount"), std::string::npos) << fs.error();
  EXPECT_NE(fs.error().find("/nonexistent-sluice-dir/"), std::string::npos) << fs.error();
}

}  // namespace
}  // namespace sluice::bpf
