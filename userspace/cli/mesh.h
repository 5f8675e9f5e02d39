// `sluicectl mesh enable|disable|status`: which cgroups' connections the
// kernel captures, written to the sluice_enabled map pinned under the
// daemon's --bpf-pin-dir. Works whether or not the daemon is running: a map
// created here is adopted by the next daemon start.
#pragma once

#include <string>

namespace sluice::cli {

int meshEnable(const std::string& cgroupPath, const std::string& pinDir);
int meshDisable(const std::string& cgroupPath, const std::string& pinDir);
// `cgroupRoot`: where the host's cgroup2 tree is mounted ("" = the first
// cgroup2 mount in /proc/mounts); inside a pod that is its own namespace, so
// pass the host tree's mount point.
int meshStatus(const std::string& pinDir, const std::string& cgroupRoot);
// Disables every enabled id whose cgroup no longer exists (deleted pods).
int meshPrune(const std::string& pinDir, const std::string& cgroupRoot);

}  // namespace sluice::cli
