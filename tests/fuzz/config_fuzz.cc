// libFuzzer target for the configuration path a user's YAML takes: the
// loader with all of its validation, then the route compiler on whatever
// loaded cleanly. Besides memory safety it checks that every error can be
// acted on (it carries a message) and that a configuration that loads also
// compiles: validation and compilation must agree on what is valid.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "route/table.h"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // big files only make each run slow
  std::string_view text(reinterpret_cast<const char*>(data), size);
  sluice::config::LoadReport report;
  std::vector<sluice::config::ConfigError> errors = sluice::config::loadYaml(text, "fuzz.yaml", report);
  for (const auto& e : errors) check(!e.message.empty() && !e.str().empty());
  if (!errors.empty()) return 0;
  auto snap = sluice::route::compile(std::move(report.resources), 1);
  check(snap.has_value());
  return 0;
}
