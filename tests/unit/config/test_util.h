// Helpers shared by the config tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"

namespace sluice::config::testing {

// Raw strings in the tests start with a newline for readability; drop it so
// line 1 is the first YAML line.
inline std::string_view trimFirstNewline(std::string_view s) {
  if (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}

struct Loaded {
  LoadReport report;
  std::vector<std::string> errors;  // ConfigError::str() of each
};

inline Loaded load(std::string_view yaml, const std::string& file = "configs/x.yaml") {
  Loaded l;
  for (const auto& e : loadYaml(trimFirstNewline(yaml), file, l.report)) l.errors.push_back(e.str());
  return l;
}

inline std::string joinLines(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

// A temporary directory removed (recursively) when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sluice-config-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    if (p == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string write(const std::string& rel, std::string_view content) const {
    std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << trimFirstNewline(content);
    return p.string();
  }

 private:
  std::string path_;
};

}  // namespace sluice::config::testing
