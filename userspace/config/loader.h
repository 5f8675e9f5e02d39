// Loads and validates Istio YAML into the typed model (model.h).
//
// Validation follows Istio's admission webhook: unknown fields, wrong types,
// bad durations, invalid RE2 regexes, negative weights, empty route lists and
// conflicting fields are errors. Each error names the file, the line, the
// resource and the field path, e.g.
//   configs/x.yaml:14: VirtualService default/reviews: spec.http[0].route[1].weight: must not be negative
#pragma once

#include <expected>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"

namespace sluice::config {

struct ConfigError {
  std::string file;
  int line = 0;          // 1-based, 0 when unknown
  std::string resource;  // "VirtualService default/reviews", may be empty
  std::string path;      // "spec.http[0].route[1].weight", may be empty
  std::string message;
  // "<file>:<line>: <resource>: <path>: <message>" with empty parts left out.
  std::string str() const;
};

struct LoadReport {
  Resources resources;
  std::vector<std::string> warnings;  // unknown kinds skipped, etc.
};

// Parses one YAML text (possibly multi-document) named `file` and appends its
// resources to `out`. Returns every error found (not just the first).
std::vector<ConfigError> loadYaml(std::string_view text, const std::string& file, LoadReport& out);

// Loads every *.yaml / *.yml / *.json below `dir` (recursively, following the
// Kubernetes ConfigMap `..data` symlink layout, skipping hidden `..<ts>` dirs
// so files are not read twice). Any error rejects the whole load, including
// a YAML name that is not a regular file (a FIFO would block the loader) and
// a file over kMaxConfigFileBytes (a ConfigMap holds at most 1 MiB).
inline constexpr size_t kMaxConfigFileBytes = size_t(64) << 20;
std::expected<LoadReport, std::vector<ConfigError>> loadDirectory(const std::string& dir);

// What the daemon serves from a directory in which some files are invalid.
// The unit of isolation is the file, as a ConfigMap key or one
// `kubectl apply -f` is: a file with any error (YAML, validation, a
// resource another file already defines) keeps the version of it that last
// loaded cleanly, or is left out if it never did; every other file applies.
struct FileResources {
  Resources resources;  // this file's alone (resources.files = {the file})
  std::vector<std::string> warnings;
  // XXH3-128 of the file's bytes: an unchanged file is not parsed again and
  // keeps its object, so "nothing changed" is a pointer comparison.
  uint64_t hashLow = 0, hashHigh = 0;
};
using GoodFiles = std::map<std::string, std::shared_ptr<const FileResources>>;

struct IsolatedLoad {
  LoadReport report;                // the good files and the last good version of the others
  GoodFiles serving;                // per file, what `report` holds of it: the next load's `lastGood`
  std::vector<ConfigError> errors;  // why files were held back (empty: every file is as written)
  std::vector<std::string> heldBack;  // invalid files still serving their last good version
  std::vector<std::string> leftOut;   // invalid files with no good version: not serving at all
};

// loadDirectory with per-file isolation. Only a directory that cannot be
// read at all fails the whole load. Resources that two files define are
// kept in the file that comes first in path order, and the other file is
// held back.
std::expected<IsolatedLoad, std::vector<ConfigError>> loadDirectoryIsolated(const std::string& dir,
                                                                            const GoodFiles& lastGood);

// `reviews` in namespace `default` -> `reviews.default.svc.cluster.local`.
// Names containing a dot and wildcards are kept as written (lower-cased).
std::string expandHost(std::string_view host, std::string_view ns);

}  // namespace sluice::config
