// loadDirectory: recursion, ordering, the ConfigMap `..data` layout,
// all-or-nothing rejection, duplicates across files, and load speed.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/loader.h"
#include "test_util.h"

namespace sluice::config {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string dr(std::string_view name, std::string_view ns = "default") {
  return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + std::string(name) +
         ", namespace: " + std::string(ns) + "}\nspec: {host: " + std::string(name) + "}\n";
}

std::vector<std::string> strs(const std::vector<ConfigError>& errs) {
  std::vector<std::string> out;
  for (const auto& e : errs) out.push_back(e.str());
  return out;
}

TEST(LoadDirectory, RecursiveSortedYamlAndYmlOnly) {
  TempDir d;
  d.write("b.yaml", dr("b"));
  d.write("a.yml", dr("a"));
  d.write("sub/deeper/c.yaml", dr("c"));
  d.write("notes.txt", "not: yaml: at all: [");
  d.write(".hidden.yaml", "garbage: [");
  d.write("sub/.swp.yaml", "garbage: [");
  auto r = loadDirectory(d.path() + "/");
  ASSERT_TRUE(r.has_value()) << testing::joinLines(strs(r.error()));
  EXPECT_THAT(r->resources.files,
              ElementsAre(d.path() + "/a.yml", d.path() + "/b.yaml", d.path() + "/sub/deeper/c.yaml"));
  ASSERT_EQ(r->resources.destinationRules.size(), 3u);
  EXPECT_EQ(r->resources.destinationRules[0].metadata.name, "a");
  EXPECT_EQ(r->resources.destinationRules[2].source.file, d.path() + "/sub/deeper/c.yaml");
}

TEST(LoadDirectory, ConfigMapLayoutReadsEachFileOnce) {
  TempDir d;
  const std::string p = d.path();
  d.write("..2026_01_01_00_00_00.1/routes.yaml", dr("routes"));
  d.write("..2026_01_01_00_00_00.1/rules.yaml", dr("rules"));
  fs::create_directory_symlink("..2026_01_01_00_00_00.1", p + "/..data");
  fs::create_symlink("..data/routes.yaml", p + "/routes.yaml");
  fs::create_symlink("..data/rules.yaml", p + "/rules.yaml");
  auto r = loadDirectory(p);
  ASSERT_TRUE(r.has_value()) << testing::joinLines(strs(r.error()));
  EXPECT_THAT(r->resources.files, ElementsAre(p + "/routes.yaml", p + "/rules.yaml"));
  EXPECT_EQ(r->resources.destinationRules.size(), 2u);  // not 4: the hidden dirs are not walked
}

TEST(LoadDirectory, MissingDirectoryIsAnError) {
  auto r = loadDirectory("/nonexistent/sluice-config");
  ASSERT_FALSE(r.has_value());
  ASSERT_EQ(r.error().size(), 1u);
  EXPECT_EQ(r.error()[0].str(), "/nonexistent/sluice-config: cannot read directory: No such file or directory");
}

TEST(LoadDirectory, UnreadableFileIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read mode-000 files";
  TempDir d;
  std::string f = d.write("a.yaml", dr("a"));
  fs::permissions(f, fs::perms::none);
  auto r = loadDirectory(d.path());
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(r.error()[0].str(), HasSubstr("a.yaml: cannot read file"));
}

// A FIFO named like YAML would block the loader on open; a huge file would
// be read whole. Both are refused by name, and nothing else loads.
TEST(LoadDirectory, FifosAndOversizedFilesAreErrors) {
  TempDir d;
  d.write("a.yaml", dr("a"));
  const std::string fifo = d.path() + "/pipe.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string big = d.write("big.yml", dr("big"));
  fs::resize_file(big, kMaxConfigFileBytes + 1);  // sparse: no disk used
  auto r = loadDirectory(d.path());
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(strs(r.error()),
              ElementsAre(d.path() + "/big.yml: file is " + std::to_string(kMaxConfigFileBytes + 1) +
                              " bytes, over the limit of " + std::to_string(kMaxConfigFileBytes),
                          fifo + ": not a regular file"));
  // Other names are not the loader's business.
  fs::remove(big);
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo((d.path() + "/notes.pipe").c_str(), 0600), 0);
  EXPECT_TRUE(loadDirectory(d.path()).has_value());
}

TEST(LoadDirectory, AnyErrorRejectsTheWholeLoad) {
  TempDir d;
  d.write("a.yaml", dr("a"));
  d.write("b.yaml", R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad}
spec:
  hosts: [bad]
  http:
  - route:
    - destination: {host: bad}
      weight: -1
)");
  auto r = loadDirectory(d.path());
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(strs(r.error()), ElementsAre(d.path() + "/b.yaml:9: VirtualService default/bad: "
                                                      "spec.http[0].route[0].weight: must not be negative"));
}

TEST(LoadDirectory, SyntaxErrorNamesFile) {
  TempDir d;
  d.write("a.yaml", "apiVersion: networking.istio.io/v1\nkind: [unclosed\n");
  auto r = loadDirectory(d.path());
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(r.error()[0].str(), ::testing::StartsWith(d.path() + "/a.yaml:"));
  EXPECT_THAT(r.error()[0].str(), HasSubstr("YAML syntax error"));
}

TEST(LoadDirectory, DuplicateAcrossFilesNamesBoth) {
  TempDir d;
  d.write("a.yaml", dr("reviews"));
  d.write("z/b.yaml", "---\n" + dr("reviews"));
  d.write("c.yaml", dr("reviews", "other"));  // other namespace: fine
  auto r = loadDirectory(d.path());
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(strs(r.error()), ElementsAre(d.path() + "/z/b.yaml:2: DestinationRule default/reviews: duplicate "
                                                      "resource, also defined at " + d.path() + "/a.yaml:1"));
}

TEST(LoadDirectory, TenThousandVirtualServices) {
  TempDir d;
  std::string yaml;
  yaml.reserve(10000 * 400);
  for (int i = 0; i < 10000; ++i) {
    std::string n = "svc-" + std::to_string(i);
    yaml += "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: " + n +
            "\n  namespace: ns" + std::to_string(i % 10) + "\nspec:\n  hosts:\n  - " + n +
            "\n  http:\n  - match:\n    - uri:\n        prefix: /api\n      headers:\n        x-canary:\n"
            "          exact: \"true\"\n    route:\n    - destination:\n        host: " + n +
            "\n        subset: v2\n  - route:\n    - destination:\n        host: " + n +
            "\n        subset: v1\n      weight: 90\n    - destination:\n        host: " + n +
            "\n        subset: v2\n      weight: 10\n    timeout: 2s\n    retries:\n      attempts: 2\n"
            "      retryOn: 5xx,connect-failure\n";
  }
  d.write("big.yaml", yaml);
  auto t0 = std::chrono::steady_clock::now();
  std::clock_t c0 = std::clock();
  auto r = loadDirectory(d.path());
  std::clock_t c1 = std::clock();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  long long cpuMs = static_cast<long long>((c1 - c0) * 1000 / CLOCKS_PER_SEC);
  // CPU time is printed too: on a shared, busy machine wall time mostly measures waiting.
  std::printf("[ INFO     ] loaded 10000 VirtualServices (%zu bytes) in %lld ms wall, %lld ms CPU\n", yaml.size(),
              static_cast<long long>(ms), cpuMs);
  ASSERT_TRUE(r.has_value()) << testing::joinLines(strs(r.error()));
  ASSERT_EQ(r->resources.virtualServices.size(), 10000u);
  EXPECT_EQ(r->resources.virtualServices[9999].hosts[0], "svc-9999.ns9.svc.cluster.local");
  EXPECT_EQ(r->resources.virtualServices[9999].http[1].route[1].weight, 10);
  // Generous bound: sanitizer and -O0 builds are several times slower than -O2.
  EXPECT_LT(cpuMs, 5000);
}

// loadDirectoryIsolated: the file is the unit. A file with an error keeps
// its last good version, or stays out; the others apply; a name two files
// define stays with the first file in path order.
TEST(LoadDirectoryIsolated, AnInvalidFileKeepsItsLastGoodVersionAndTheRestApplies) {
  TempDir d;
  d.write("a.yaml", dr("a"));
  d.write("b.yaml", dr("b"));
  auto first = loadDirectoryIsolated(d.path(), {});
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->errors.empty());
  ASSERT_EQ(first->report.resources.destinationRules.size(), 2u);

  d.write("a.yaml", dr("a2") + "  bogus: 1\n");  // invalid now
  d.write("b.yaml", dr("b2"));                    // changed, valid
  d.write("c.yaml", "spec: [");                   // never valid
  auto second = loadDirectoryIsolated(d.path(), first->serving);
  ASSERT_TRUE(second.has_value());
  std::vector<std::string> names;
  for (const auto& r : second->report.resources.destinationRules) names.push_back(r.metadata.name);
  EXPECT_THAT(names, ElementsAre("a", "b2")) << "a keeps its last good version, b's change applies";
  EXPECT_THAT(second->heldBack, ElementsAre(d.path() + "/a.yaml"));
  EXPECT_THAT(second->leftOut, ElementsAre(d.path() + "/c.yaml"));
  EXPECT_EQ(second->serving.at(d.path() + "/a.yaml"), first->serving.at(d.path() + "/a.yaml"));
  EXPECT_THAT(testing::joinLines(strs(second->errors)), HasSubstr("a.yaml"));
  EXPECT_THAT(testing::joinLines(strs(second->errors)), HasSubstr("c.yaml"));

  // An unchanged file keeps its object: "nothing changed" is cheap to see.
  auto third = loadDirectoryIsolated(d.path(), second->serving);
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->serving.at(d.path() + "/b.yaml"), second->serving.at(d.path() + "/b.yaml"));
}

TEST(LoadDirectoryIsolated, ANameTwoFilesDefineStaysWithTheFirstFile) {
  TempDir d;
  d.write("a.yaml", dr("x"));
  d.write("b.yaml", dr("x") + "---\n" + dr("y"));
  auto r = loadDirectoryIsolated(d.path(), {});
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->report.resources.destinationRules.size(), 1u);
  EXPECT_EQ(r->report.resources.destinationRules[0].source.file, d.path() + "/a.yaml");
  EXPECT_THAT(r->leftOut, ElementsAre(d.path() + "/b.yaml"));
  EXPECT_THAT(testing::joinLines(strs(r->errors)), HasSubstr("duplicate resource"));
}

TEST(LoadDirectoryIsolated, AnUnreadableDirectoryFailsTheWholeLoad) {
  auto r = loadDirectoryIsolated("/nonexistent/sluice-config", {});
  EXPECT_FALSE(r.has_value());
}

}  // namespace
}  // namespace sluice::config
