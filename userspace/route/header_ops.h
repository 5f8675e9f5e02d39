// VirtualService `headers` (request/response set, add, remove) and
// `rewrite`, compiled once per route so the request path only copies bytes.
// Values are istio/ header templates. As in Envoy, a value that renders
// empty is not added (and a `set` whose value renders empty leaves the
// original header alone).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"
#include "http/header_map.h"
#include "http/parser.h"
#include "istio/header_template.h"

namespace re2 {
class RE2;
}

namespace sluice::route {

class CompiledMatch;

// The effective header mutation of one direction for one (route,
// destination) pair. Levels apply in order (destination first, then route,
// so the route's operations win, as Envoy orders them); within a level,
// `remove` applies before `set` and `add`.
class HeaderMutation {
 public:
  // Null levels are skipped. Errors name the field ("set[x-a]: unknown
  // variable %FOO%").
  static std::expected<HeaderMutation, std::string> compile(
      std::span<const config::HeaderOperations* const> levels);
  bool empty() const { return drop_.empty() && entries_.empty(); }

  // Per request: dynamic values rendered once, then serialised.
  class Rendered {
   public:
    // Whether an original header named `name` (any case) is dropped.
    bool drops(std::string_view name) const;
    // Applies the operations to `headers`: removed and replaced names go,
    // then the generated fields are added (literal values as views into the
    // compiled mutation, rendered ones as copies).
    void applyTo(http::HeaderMap& headers) const;

   private:
    friend class HeaderMutation;
    const HeaderMutation* m_ = nullptr;
    std::vector<std::string> values_;  // one per entry; empty = not added
  };
  Rendered render(const istio::HeaderContext& ctx) const;

 private:
  struct Entry {
    std::string name;  // lower case
    istio::HeaderTemplate value;
    bool set = false;  // set: replaces originals (when it renders non-empty)
  };
  std::vector<std::string> drop_;  // removed or statically set names, lower case
  std::vector<Entry> entries_;     // in output order
};

// `rewrite`: the path (prefix or whole-path replacement, or RE2 regex
// rewrite with \1 captures) and the authority.
class PathRewrite {
 public:
  static std::expected<PathRewrite, std::string> compile(const config::HTTPRewrite& spec);
  // The new path + query for `path` (origin form, with query) given the match
  // block that selected the route (null: the route matches everything), or
  // nullopt when the path stays as it is.
  std::optional<std::string> rewritePath(std::string_view path, const CompiledMatch* matched) const;
  const std::string& authority() const { return authority_; }
  bool rewritesPath() const { return !uri_.empty() || regex_ != nullptr; }

 private:
  std::string uri_;
  std::shared_ptr<const re2::RE2> regex_;
  std::string substitution_;
  std::string authority_;
};

}  // namespace sluice::route
