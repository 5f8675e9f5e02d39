// One Istio HTTPMatchRequest compiled for the request path.
//
// Every condition present in the block must hold (AND); route/table.h ORs the
// blocks of a route. The matcher never allocates for the common case (a
// header sent once); a header sent several times is matched against its
// values joined with "," as Envoy does, which needs one thread-local buffer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"

namespace sluice::route {

struct RequestView;

// A StringMatch ready to run: the regex is compiled (RE2, full match) and
// case-folding decided once.
struct StringMatcher {
  config::StringMatch::Kind kind = config::StringMatch::Kind::Present;
  std::string value;  // lower-cased when ignoreCase
  std::shared_ptr<const re2::RE2> regex;
  bool ignoreCase = false;  // exact/prefix only (Istio's ignoreUriCase)

  bool matches(std::string_view input) const;
};

// Builds a StringMatcher; compiles the regex if the loader did not.
std::expected<StringMatcher, std::string> compileStringMatch(const config::StringMatch& m,
                                                             bool ignoreCase = false);

class CompiledMatch {
 public:
  static std::expected<std::shared_ptr<const CompiledMatch>, std::string> compile(
      const config::HTTPMatchRequest& spec);

  bool matches(const RequestView& req) const;

  const std::string& name() const { return name_; }
  // False when the block can never match (a source-identity condition:
  // there is no client identity yet); compile() drops such blocks.
  bool reachable() const { return !never_; }
  // Whether the block applies to traffic of `gateway` ("mesh" for sidecar
  // traffic, else "ns/name"): a block that names gateways applies only to
  // those; one that names none, to every gateway of its VirtualService.
  // Matches every request, as Istio counts it: no conditions but a uri of
  // prefix "/" or regex ".*" (Istio sorts such routes last in a gateway's
  // merged virtual host, and ignores a VirtualService's routes after one).
  bool catchAll() const;
  bool appliesTo(std::string_view gateway) const {
    return gateways_.empty() || std::find(gateways_.begin(), gateways_.end(), gateway) != gateways_.end();
  }
  std::optional<uint32_t> port() const { return port_; }
  // The uri condition, or null: what a `rewrite.uri` replaces.
  const StringMatcher* uri() const { return uri_ ? &*uri_ : nullptr; }

 private:
  struct HeaderCond {
    std::string name;  // lower case; ":authority", ":method", ... map to the request line
    StringMatcher match;
    bool invert = false;  // withoutHeaders
  };
  struct QueryCond {
    std::string name;
    StringMatcher match;
  };

  bool headerMatches(const HeaderCond& c, const RequestView& req) const;

  std::string name_;
  std::optional<StringMatcher> uri_;
  std::optional<StringMatcher> scheme_;
  std::optional<StringMatcher> method_;
  std::optional<StringMatcher> authority_;
  std::vector<HeaderCond> headers_;
  std::vector<QueryCond> query_;
  std::optional<uint32_t> port_;
  std::vector<std::string> gateways_;
  bool never_ = false;
};

// Splits "/p?q" -> "/p" (a "#fragment" is dropped too).
std::string_view pathWithoutQuery(std::string_view path);
// Raw (undecoded) value of query parameter `name` in `path`, or nullopt when
// absent. "?a" yields an empty value.
std::optional<std::string_view> queryParam(std::string_view path, std::string_view name);

}  // namespace sluice::route
