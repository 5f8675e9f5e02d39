// `sluicectl mesh enable|disable|status`: which cgroups' connections the
// kernel captures, written to the sluice_enabled map pinned under the
// daemon's --bpf-pin-dir. Works whether or not the daemon is running: a map
// created here is adopted by the next daemon start.
#pragma once

#include <string>

namespace sluice::cli {

int meshEnable(const std::string& cgroupPath, const std::string& pinDir);
int meshDisable(const std::string& cgroupPath, const std::string& pinDir);
int meshStatus(const std::string& pinDir);

}  // namespace sluice::cli
