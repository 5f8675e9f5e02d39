// A file or folder of this repository from wherever a test binary runs (the
// repository root under `make test`, a build folder by hand). Header-only so
// unit and integration tests can share it.
#pragma once

#include <filesystem>
#include <string>

namespace sluice::testing {

// The first `<dir>/rel` that exists, walking up from the current directory;
// empty when none does.
inline std::filesystem::path repoPath(const std::string& rel) {
  std::error_code ec;
  for (std::filesystem::path p = std::filesystem::current_path(ec); !p.empty(); p = p.parent_path()) {
    if (std::filesystem::exists(p / rel, ec)) return p / rel;
    if (p == p.parent_path()) break;
  }
  return {};
}

}  // namespace sluice::testing
