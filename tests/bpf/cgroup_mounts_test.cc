// /proc/mounts parsing: no privileges needed, always runs.
#include <gtest/gtest.h>

#include "bpf/cgroup.h"

namespace sluice::bpf {
namespace {

TEST(Cgroup2Mount, FindsHybridUnifiedMount) {
  auto m = parseCgroup2Mount(
      "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
      "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n");
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, "/sys/fs/cgroup/unified");
}

TEST(Cgroup2Mount, IgnoresV1AndDeviceNamedCgroup2) {
  // The device column says cgroup2 but the filesystem type is v1.
  auto m = parseCgroup2Mount("cgroup2 /sys/fs/cgroup/x cgroup rw 0 0\n"
                             "none /mnt/cg2 cgroup2 rw 0 0");
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, "/mnt/cg2");
}

TEST(Cgroup2Mount, DecodesOctalEscapes) {
  auto m = parseCgroup2Mount("none /mnt/my\\040cgroups cgroup2 rw 0 0\n");
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, "/mnt/my cgroups");
}

TEST(Cgroup2Mount, ExplainsWhenAbsent) {
  auto m = parseCgroup2Mount("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().find("cgroup v2"), std::string::npos) << m.error();
  EXPECT_NE(m.error().find("--bpf off"), std::string::npos) << m.error();
}

TEST(Cgroup2Mount, RealProcMountsAgreesWithFileParse) {
  auto m = findCgroup2Mount();
  auto missing = findCgroup2Mount("/nonexistent/mounts");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("/nonexistent/mounts"), std::string::npos);
  if (!m) GTEST_SKIP() << m.error();
  EXPECT_EQ(m->front(), '/');
}

}  // namespace
}  // namespace sluice::bpf
