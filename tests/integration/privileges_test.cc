// What sluiced keeps of its privileges (explicit mode): once started as root
// it holds only CAP_NET_BIND_SERVICE, in every thread (eBPF mode keeps more:
// tests/bpf/capture_test.cc), and an admin API off loopback must be asked
// for by name.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>


#include "proxy_fixture.h"

namespace sluice::itest::proxy {
namespace {

using Privileges = ProxyTest;

TEST_F(Privileges, OnlyTheBindCapabilityIsKept) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a daemon started unprivileged has nothing to drop";
  ASSERT_NO_FATAL_FAILURE(startMesh(2));
  ASSERT_OK(get("/after-drop"));  // still serves
  const auto threads = threadCapabilities(daemonPid());
  EXPECT_GE(threads.size(), 4u) << "main, two workers, admin";
  for (const auto& caps : threads) {
    const std::map<std::string, uint64_t> want = {
        {"CapEff", 1ull << 10}, {"CapPrm", 1ull << 10}, {"CapBnd", 1ull << 10}, {"CapInh", 0}, {"CapAmb", 0}};
    for (const auto& [set, bits] : want) EXPECT_EQ(caps.at(set), bits) << set;
  }
}

TEST_F(Privileges, AnAdminOffLoopbackNeedsTheFlag) {
  std::vector<std::string> argv = {binaryPath("sluiced").string(), "--config-dir", tmp_.path().string(),
                                   "--bpf", "off", "--outbound", "127.0.0.1:" + std::to_string(freePort()),
                                   "--admin", "0.0.0.0:" + std::to_string(freePort())};
  auto p = Process::start(argv, tmp_.path() / "remote.log");
  ASSERT_OK(p);
  auto rc = p->wait(5000ms);
  ASSERT_TRUE(rc.has_value()) << "sluiced served its admin API off loopback without --admin-allow-remote";
  EXPECT_TRUE(WIFEXITED(*rc) && WEXITSTATUS(*rc) == 2);
  EXPECT_NE(p->logText().find("--admin-allow-remote"), std::string::npos) << p->logText();
}

}  // namespace
}  // namespace sluice::itest::proxy
