// Istio's own validation documents (tests/data/istio_validation): each is
// loaded and compiled as `sluicectl analyze` does, and Sluice must reach
// Istio's verdict. A document Sluice cannot agree on is listed below with
// its reason; the test fails if it starts agreeing, so the list stays true.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "../../common/repo_path.h"
#include "config/loader.h"
#include "route/table.h"

namespace sluice::config {
namespace {

namespace fs = std::filesystem;

fs::path dataDir() { return sluice::testing::repoPath("tests/data/istio_validation"); }

// Known disagreements, by file name: what Sluice says instead, and why.
const std::map<std::string, std::string> kExceptions = {
    // `addresses: [1.2.3.4, 001:db8::]`: libyaml (yaml-cpp) refuses a plain
    // scalar ending in ':' before ']' in a flow sequence; Kubernetes'
    // go-yaml accepts it.
    {"066-serviceentry-valid-yaml-0.yaml", "YAML syntax error"},
};

struct Verdict {
  bool valid = false;
  std::string errors;
};

Verdict analyze(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  LoadReport report;
  Verdict v;
  for (const auto& e : loadYaml(text.str(), file.filename().string(), report)) v.errors += e.str() + "\n";
  if (v.errors.empty()) {
    auto snap = route::compile(std::move(report.resources), 1);
    if (!snap) {
      for (const auto& e : snap.error()) v.errors += e.str() + "\n";
    }
  }
  v.valid = v.errors.empty();
  return v;
}

TEST(IstioValidation, SluiceReachesIstiosVerdictOnIstiosOwnDocuments) {
  const fs::path dir = dataDir();
  ASSERT_FALSE(dir.empty()) << "tests/data/istio_validation not found from " << fs::current_path();
  int checked = 0, agreed = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path());
    std::string first;
    std::getline(in, first);
    ASSERT_TRUE(first.starts_with("# expect: ")) << entry.path();
    const bool wantValid = first.starts_with("# expect: valid");
    const Verdict got = analyze(entry.path());
    ++checked;
    const std::string name = entry.path().filename().string();
    if (auto ex = kExceptions.find(name); ex != kExceptions.end()) {
      EXPECT_NE(got.valid, wantValid) << name << " now agrees with Istio: take it off the exception list";
      EXPECT_NE(got.errors.find(ex->second), std::string::npos) << name << ": " << got.errors;
      continue;
    }
    if (got.valid == wantValid) ++agreed;
    EXPECT_EQ(got.valid, wantValid) << entry.path().lexically_relative(dir) << "\n" << first << "\n" << got.errors;
  }
  EXPECT_EQ(checked, 51);
  EXPECT_EQ(agreed, checked - int(kExceptions.size()));
}

}  // namespace
}  // namespace sluice::config
