// Attaches the real sockops program to a cgroup this test creates, runs real
// 127.0.0.1 connections from a child inside it and from the test process
// outside it, and checks the kernel's counts, then that nothing is left behind.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "bpf/bpffs_dir.h"
#include "bpf/cgroup.h"
#include "bpf/datapath.h"
#include "bpf_test_env.h"

namespace sluice::bpf {
namespace {

using namespace std::chrono_literals;
using testing::ConnectorChild;
using testing::Listener;
using testing::TestCgroup;

const bool kCleanupInstalled = [] {
  testing::installEmergencyCleanup();
  return true;
}();

// Runs `n` connections from a child moved into `cg`; the test process serves.
void connectFromInside(const TestCgroup& tc, Listener& listener, int n) {
  auto child = ConnectorChild::spawn(listener.port(), n);
  ASSERT_TRUE(child) << child.error();
  auto moved = tc.cg->movePid(child->pid());
  ASSERT_TRUE(moved) << moved.error();
  auto where = testing::cgroupOfPid(child->pid());
  ASSERT_TRUE(where) << where.error();
  ASSERT_EQ(*where, tc.relative()) << "child is not in the test cgroup";
  ASSERT_TRUE(child->go());
  auto served = listener.serve(n, 5s);
  ASSERT_TRUE(served) << served.error();
  auto status = child->wait(5s);
  ASSERT_TRUE(status) << status.error();
  ASSERT_EQ(*status, 0) << "child connect failed (10+i = i-th connection)";
}

// Closes finish in softirq after the last FIN; poll for them, bounded.
Counters waitForClosed(const Datapath& prog, std::uint64_t closed) {
  Counters c;
  for (int i = 0; i < 250; ++i) {
    auto r = prog.counters();
    EXPECT_TRUE(r) << r.error();
    if (!r) break;
    c = *r;
    if (c.closed() >= closed) break;
    std::this_thread::sleep_for(20ms);
  }
  return c;
}

bool programExists(std::uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

TEST(SockopsBpf, CountsOnlyConnectionsFromItsCgroupAndCleansUp) {
  SLUICE_REQUIRE_BPF();

  TestCgroup tc;
  auto created = tc.create("");
  ASSERT_TRUE(created) << created.error();
  const std::string cgPath = tc.cg->path();

  std::optional<Datapath> prog;
  {
    auto p = Datapath::load({.capture = false});
    ASSERT_TRUE(p) << p.error();
    prog.emplace(std::move(*p));
  }
  auto infos = prog->info();
  ASSERT_TRUE(infos) << infos.error();
  ASSERT_EQ(infos->size(), 3u) << "capture off: sockops, sk_msg and sk_skb only";
  const ProgInfo* info = &(*infos)[0];
  ASSERT_EQ(info->name, "sockops");
  std::printf("[ sockops  ] prog id %u: %zu insns in ELF, %u xlated insns, %u JIT bytes, "
              "%u insns verified\n",
              info->id, info->elfInsns, info->xlatedInsns, info->jitedBytes,
              info->verifiedInsns);
  ::testing::Test::RecordProperty("xlated_insns", static_cast<int>(info->xlatedInsns));
  EXPECT_GT(info->xlatedInsns, 0u);

  auto attached = prog->attach(tc.cg->fd());
  ASSERT_TRUE(attached) << attached.error();
  auto ids = attachedProgramIds(tc.cg->fd(), sockopsAttachType());
  ASSERT_TRUE(ids) << ids.error();
  EXPECT_EQ(*ids, std::vector<std::uint32_t>{info->id});

  auto listener = Listener::open();
  ASSERT_TRUE(listener) << listener.error();
  const std::uint16_t portBe = htons(listener->port());
  const std::uint32_t loBe = htonl(INADDR_LOOPBACK);

  auto before = prog->counters();
  ASSERT_TRUE(before) << before.error();
  EXPECT_EQ(before->raw, (std::array<std::uint64_t, SLUICE_CNT_MAX>{}));

  // 1. Five connections from a child inside the cgroup.
  connectFromInside(tc, *listener, 5);
  if (HasFatalFailure()) return;
  Counters c = waitForClosed(*prog, 5);
  EXPECT_EQ(c.openedActive(), 5u);
  EXPECT_EQ(c.openedPassive(), 0u) << "accepted sockets belong to the listener's cgroup";
  EXPECT_EQ(c.closed(), 5u);
  EXPECT_EQ(c.active(), 0);
  for (auto r : {SLUICE_CNT_CB_FLAGS_FAILED, SLUICE_CNT_PEER_NOT_IPV4, SLUICE_CNT_PEER_MAP_FULL,
                 SLUICE_CNT_PEER_MISSING})
    EXPECT_EQ(c.at(r), 0u) << "reason counter " << r;
  auto peer = prog->peer({loBe, portBe});
  ASSERT_TRUE(peer) << peer.error();
  ASSERT_TRUE(peer->has_value()) << "no entry for 127.0.0.1:" << listener->port();
  EXPECT_EQ((*peer)->opened, 5u);
  EXPECT_EQ((*peer)->closed, 5u);
  EXPECT_EQ((*peer)->active, 0);
  auto all = prog->peers();
  ASSERT_TRUE(all) << all.error();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].key.portBe, portBe);
  EXPECT_EQ((*all)[0].key.addrBe, loBe);

  // 2. A connection from the test process (outside the cgroup) is invisible;
  //    one more from inside afterwards proves the program was still counting.
  auto outside = testing::connectOnce(listener->port());
  ASSERT_TRUE(outside) << outside.error();
  ASSERT_TRUE(listener->serve(1, 5s));
  connectFromInside(tc, *listener, 1);
  if (HasFatalFailure()) return;
  c = waitForClosed(*prog, 6);
  EXPECT_EQ(c.openedActive(), 6u);
  EXPECT_EQ(c.openedPassive(), 0u);
  EXPECT_EQ(c.closed(), 6u);
  EXPECT_EQ(c.active(), 0);
  peer = prog->peer({loBe, portBe});
  ASSERT_TRUE(peer && peer->has_value());
  EXPECT_EQ((*peer)->opened, 6u);

  // 3. Detached: nothing attached to the cgroup, inside connections not seen.
  prog->detach();
  ids = attachedProgramIds(tc.cg->fd(), sockopsAttachType());
  ASSERT_TRUE(ids) << ids.error();
  EXPECT_TRUE(ids->empty());
  connectFromInside(tc, *listener, 2);
  if (HasFatalFailure()) return;
  std::this_thread::sleep_for(100ms);
  auto after = prog->counters();
  ASSERT_TRUE(after) << after.error();
  EXPECT_EQ(after->openedActive(), 6u);
  EXPECT_EQ(after->closed(), 6u);

  // 4. Destroyed: the kernel frees the program (deferred, so poll), then the
  //    cgroup, now empty, is removed.
  prog.reset();
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = !programExists(info->id);
    if (!gone) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(gone) << "program " << info->id << " still loaded after destroy";
  auto members = tc.cg->pids();
  ASSERT_TRUE(members) << members.error();
  EXPECT_TRUE(members->empty());
  auto removed = tc.cg->remove();
  EXPECT_TRUE(removed) << removed.error();
  EXPECT_NE(::access(cgPath.c_str(), F_OK), 0) << cgPath << " still exists";
}

TEST(SockopsBpf, TrackPeersOffKeepsGlobalCountsOnly) {
  SLUICE_REQUIRE_BPF();
  TestCgroup tc;
  auto created = tc.create("-nopeers");
  ASSERT_TRUE(created) << created.error();
  auto prog = Datapath::load({.trackPeers = false, .capture = false});
  ASSERT_TRUE(prog) << prog.error();
  ASSERT_TRUE(prog->attach(tc.cg->fd()));
  auto listener = Listener::open();
  ASSERT_TRUE(listener) << listener.error();

  connectFromInside(tc, *listener, 2);
  if (HasFatalFailure()) return;
  Counters c = waitForClosed(*prog, 2);
  EXPECT_EQ(c.openedActive(), 2u);
  EXPECT_EQ(c.closed(), 2u);
  auto all = prog->peers();
  ASSERT_TRUE(all) << all.error();
  EXPECT_TRUE(all->empty());
}

TEST(SockopsBpf, RefusesToAdoptAnExistingCgroup) {
  SLUICE_REQUIRE_BPF();
  TestCgroup tc;
  auto created = tc.create("-adopt");
  ASSERT_TRUE(created) << created.error();
  auto name = tc.cg->path().substr(tc.cg->path().find_last_of('/') + 1);
  auto again = Cgroup::create(tc.mount, name);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().find("refusing to adopt"), std::string::npos) << again.error();
  EXPECT_EQ(::access(tc.cg->path().c_str(), F_OK), 0) << "the original must survive";
}

// Pins under /sys/fs/bpf when the host mounted bpffs there; otherwise under a
// private bpffs the test mounts in /tmp (never on /sys/fs/bpf) and removes.
TEST(SockopsBpf, PinsMapsInPerRunDirectoryAndUnpins) {
  SLUICE_REQUIRE_BPF();
  const bool hostBpffs = isBpffs(kDefaultBpffs);
  std::string root;
  bool owned = false;
  {
    auto fs = testing::TrackedBpffs::acquire();
    ASSERT_TRUE(fs) << fs.error();
    root = fs->dir().path();
    owned = fs->dir().ownsMount();
    EXPECT_EQ(owned, !hostBpffs);
    if (owned) {
      EXPECT_NE(root, kDefaultBpffs);
      EXPECT_TRUE(testing::isMountPoint(root)) << root;
    } else {
      EXPECT_EQ(root, kDefaultBpffs);
    }
    ASSERT_TRUE(isBpffs(root)) << root;

    const std::string dir = root + "/sluice-test-" + std::to_string(::getpid());
    // An assertion that fails below still leaves nothing pinned behind.
    struct RemovePins {
      const std::string& dir;
      ~RemovePins() {
        ::unlink((dir + "/sluice_enabled").c_str());
        ::rmdir(dir.c_str());
      }
    } removePins{dir};
    {
      auto prog = Datapath::load({.pinDir = dir});
      ASSERT_TRUE(prog) << prog.error();
      // Every map but the two sockhashes and the socket storage (they hold
      // live sockets) and sluice_enabled (pinned too, but kept: see below).
      ASSERT_EQ(prog->pinnedPaths().size(), 10u);
      EXPECT_EQ(::access((dir + "/sluice_enabled").c_str(), F_OK), 0);
      for (const auto& p : prog->pinnedPaths()) {
        EXPECT_EQ(p.rfind(dir + "/", 0), 0u) << p;
        // A real pinned map, not just a file: the kernel hands back a map fd.
        int fd = bpf_obj_get(p.c_str());
        EXPECT_GE(fd, 0) << p << ": " << std::strerror(errno);
        if (fd >= 0) {
          bpf_map_info mi{};
          __u32 len = sizeof(mi);
          EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &mi, &len), 0) << p;
          EXPECT_EQ(p.substr(p.find_last_of('/') + 1), mi.name);
          ::close(fd);
        }
      }
    }
    // Enablement outlives the daemon: only sluice_enabled is left, and the
    // test removes it itself.
    const std::string enabled = dir + "/sluice_enabled";
    EXPECT_EQ(::access(enabled.c_str(), F_OK), 0) << enabled << " must persist";
    ::unlink(enabled.c_str());
    EXPECT_EQ(::rmdir(dir.c_str()), 0) << dir << " held more than sluice_enabled: "
                                        << std::strerror(errno);
    auto released = fs->release();
    EXPECT_TRUE(released) << released.error();
  }
  if (owned) {
    EXPECT_FALSE(testing::isMountPoint(root)) << root << " still mounted";
    EXPECT_NE(::access(root.c_str(), F_OK), 0) << root << " left behind";
  }
  EXPECT_EQ(isBpffs(kDefaultBpffs), hostBpffs) << "/sys/fs/bpf must be left as found";
}

// Every program of bpf/ passes this kernel's verifier; the sizes go to the
// log (and the issue notes) so growth is visible.
TEST(DatapathBpf, EveryProgramLoadsAndReportsItsSize) {
  SLUICE_REQUIRE_BPF();
  auto dp = Datapath::load();
  ASSERT_TRUE(dp) << dp.error();
  auto infos = dp->info();
  ASSERT_TRUE(infos) << infos.error();
  std::vector<std::string> names;
  for (const ProgInfo& p : *infos) {
    names.push_back(p.name);
    std::printf("[ %-12s] %3zu insns in ELF, %3u xlated, %4u JIT bytes, %5u insns verified\n",
                p.name.c_str(), p.elfInsns, p.xlatedInsns, p.jitedBytes, p.verifiedInsns);
    EXPECT_GT(p.xlatedInsns, 0u) << p.name;
    EXPECT_GT(p.jitedBytes, 0u) << p.name << ": not JIT-compiled";
  }
  EXPECT_EQ(names, (std::vector<std::string>{"sockops", "sk_msg", "sk_skb", "connect4",
                                             "getpeername4", "getsockopt"}));
}

TEST(SockopsBpf, ProbeSaysBpfIsUsable) {
  SLUICE_REQUIRE_BPF();  // itself built on probeBpf(); this pins the contract
  EXPECT_EQ(probeBpf(), std::nullopt);
}

}  // namespace
}  // namespace sluice::bpf
