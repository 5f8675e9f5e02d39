#include "route/delegate.h"

#include <optional>

namespace sluice::route {

namespace {

using config::HTTPMatchRequest;
using config::StringMatch;
using Kind = config::StringMatch::Kind;

bool sameMatch(const StringMatch& a, const StringMatch& b) { return a.kind == b.kind && a.value == b.value; }

// The uri both blocks accept, or nullopt when no request can satisfy both
// under Istio's rule: the delegate may only narrow the root's uri.
std::optional<std::optional<StringMatch>> mergeUri(const std::optional<StringMatch>& root,
                                                   const std::optional<StringMatch>& leaf) {
  if (!root) return leaf;
  if (!leaf) return root;
  if (root->kind == Kind::Regex || leaf->kind == Kind::Regex) return std::nullopt;
  if (root->kind == Kind::Exact) {
    if (leaf->kind == Kind::Exact && leaf->value == root->value) return leaf;
    return std::nullopt;
  }
  if (root->kind == Kind::Prefix) {
    if ((leaf->kind == Kind::Exact || leaf->kind == Kind::Prefix) && leaf->value.starts_with(root->value)) {
      return leaf;
    }
    return std::nullopt;
  }
  return leaf;  // root is a bare presence test: the delegate's is narrower
}

// Scalar conditions (method, authority, scheme): either side, or both equal.
bool mergeScalar(std::optional<StringMatch>& into, const std::optional<StringMatch>& leaf) {
  if (!leaf) return true;
  if (!into) {
    into = leaf;
    return true;
  }
  return sameMatch(*into, *leaf);
}

template <typename T>
bool mergeOptionalValue(std::optional<T>& into, const std::optional<T>& leaf) {
  if (!leaf) return true;
  if (!into) {
    into = leaf;
    return true;
  }
  return *into == *leaf;
}

// Union of named conditions; a name both sides constrain differently can
// never be satisfied by one request.
bool mergeNamed(std::map<std::string, StringMatch>& into, const std::map<std::string, StringMatch>& leaf) {
  for (const auto& [name, m] : leaf) {
    auto [it, inserted] = into.emplace(name, m);
    if (!inserted && !sameMatch(it->second, m)) return false;
  }
  return true;
}

bool mergeLabels(std::map<std::string, std::string>& into, const std::map<std::string, std::string>& leaf) {
  for (const auto& [k, v] : leaf) {
    auto [it, inserted] = into.emplace(k, v);
    if (!inserted && it->second != v) return false;
  }
  return true;
}

std::optional<HTTPMatchRequest> mergeBlock(const HTTPMatchRequest& root, const HTTPMatchRequest& leaf) {
  HTTPMatchRequest out = root;
  out.name = leaf.name.empty() ? root.name : leaf.name;

  auto uri = mergeUri(root.uri, leaf.uri);
  if (!uri) return std::nullopt;
  out.uri = *uri;
  // ignoreUriCase belongs to whichever uri survived.
  if (leaf.uri) out.ignoreUriCase = leaf.ignoreUriCase;

  if (!mergeScalar(out.scheme, leaf.scheme)) return std::nullopt;
  if (!mergeScalar(out.method, leaf.method)) return std::nullopt;
  if (!mergeScalar(out.authority, leaf.authority)) return std::nullopt;
  if (!mergeOptionalValue(out.port, leaf.port)) return std::nullopt;
  if (!mergeNamed(out.headers, leaf.headers)) return std::nullopt;
  if (!mergeNamed(out.withoutHeaders, leaf.withoutHeaders)) return std::nullopt;
  if (!mergeNamed(out.queryParams, leaf.queryParams)) return std::nullopt;
  if (!mergeLabels(out.sourceLabels, leaf.sourceLabels)) return std::nullopt;
  if (!leaf.sourceNamespace.empty()) {
    if (!out.sourceNamespace.empty() && out.sourceNamespace != leaf.sourceNamespace) return std::nullopt;
    out.sourceNamespace = leaf.sourceNamespace;
  }
  if (!leaf.gateways.empty()) out.gateways = leaf.gateways;
  if (leaf.statPrefix) out.statPrefix = leaf.statPrefix;
  return out;
}

template <typename T>
void inherit(std::optional<T>& leaf, const std::optional<T>& root) {
  if (!leaf) leaf = root;
}

}  // namespace

std::vector<config::HTTPRoute> mergeDelegate(const config::HTTPRoute& root,
                                             const config::VirtualService& delegate,
                                             std::vector<std::string>& warnings) {
  std::vector<config::HTTPRoute> out;
  const std::string who = "delegate " + delegate.metadata.namespace_ + "/" + delegate.metadata.name;
  for (size_t i = 0; i < delegate.http.size(); ++i) {
    const config::HTTPRoute& leaf = delegate.http[i];
    const std::string where = who + ": http[" + std::to_string(i) + "]: ";
    if (leaf.delegate) {
      warnings.push_back(where + "delegates again (only one level is supported); route dropped");
      continue;
    }

    config::HTTPRoute merged = leaf;
    if (!root.match.empty() && !leaf.match.empty()) {
      merged.match.clear();
      for (const auto& r : root.match) {
        for (const auto& l : leaf.match) {
          if (auto block = mergeBlock(r, l)) merged.match.push_back(std::move(*block));
        }
      }
      if (merged.match.empty()) {
        warnings.push_back(where + "match conflicts with the root's; route dropped");
        continue;
      }
    } else if (leaf.match.empty()) {
      merged.match = root.match;
    }

    if (merged.name.empty()) merged.name = root.name;
    inherit(merged.rewrite, root.rewrite);
    inherit(merged.timeout, root.timeout);
    inherit(merged.retries, root.retries);
    inherit(merged.fault, root.fault);
    inherit(merged.corsPolicy, root.corsPolicy);
    inherit(merged.headers, root.headers);
    // Mirroring is one setting spread over several fields: a delegate that
    // sets any of them replaces the root's whole mirror configuration.
    bool leafMirrors = leaf.mirror || leaf.mirrorPercentage || leaf.mirrorPercent || !leaf.mirrors.empty();
    if (!leafMirrors) {
      merged.mirror = root.mirror;
      merged.mirrorPercentage = root.mirrorPercentage;
      merged.mirrorPercent = root.mirrorPercent;
      merged.mirrors = root.mirrors;
    }
    out.push_back(std::move(merged));
  }
  return out;
}

}  // namespace sluice::route
