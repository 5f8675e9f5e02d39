// Internal to config/: typed readers over YAML tree nodes (yaml_tree.h) that record
// ConfigErrors (file, 1-based line, resource, field path) instead of throwing,
// so one pass collects every problem in a document.
//
// Convention shared by every reader: a YAML null value (`key:` with nothing
// after it) means "unset", as protobuf's JSON mapping treats null, so readers
// return false and leave the output untouched.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "config/model.h"
#include "config/yaml_tree.h"
#include "http/wire.h"

namespace sluice::config::detail {

using yaml::Node;

class Ctx {
 public:
  Ctx(const std::string& file, std::vector<ConfigError>& errors, std::vector<std::string>& warnings)
      : file_(file), errors_(errors), warnings_(warnings) {}

  const std::string& file() const { return file_; }
  void setResource(std::string resource, int docLine) {
    resource_ = std::move(resource);
    docLine_ = docLine;
  }
  const std::string& resource() const { return resource_; }
  const std::string& ns() const { return ns_; }
  void setNamespace(std::string ns) { ns_ = std::move(ns); }
  // Nodes of a YAML text embedded in the file (a ConfigMap's data value)
  // count their lines from its start: this many lines come before it.
  void setLineOffset(int lines) { lineOffset_ = lines; }

  // 1-based line of `n`, or the document's line for a default (absent) Node.
  int line(const Node& n) const;
  void error(const Node& at, const std::string& path, std::string message);
  void errorAtLine(int line, const std::string& path, std::string message);
  void warn(const Node& at, const std::string& path, std::string message);
  size_t errorCount() const { return errors_.size(); }
  // The key node of the field forFields is currently visiting; read it first
  // thing in the callback (nested forFields calls overwrite it).
  const Node& currentKey() const { return currentKey_; }
  void setCurrentKey(const Node& k) { currentKey_.reset(k); }

 private:
  const std::string& file_;
  std::vector<ConfigError>& errors_;
  std::vector<std::string>& warnings_;
  std::string resource_;
  std::string ns_ = "default";
  int docLine_ = 0;
  int lineOffset_ = 0;
  Node currentKey_;
};

std::string join(const std::string& path, std::string_view key);
std::string index(const std::string& path, size_t i);

bool expectMap(Ctx& c, const Node& n, const std::string& path);

// Calls fn(key, value, path) for each entry of a map node; fn returns false
// for a key it does not know, which becomes an "unknown field" error on the
// key's line. Duplicate keys are errors too (the API server rejects them).
using FieldFn = std::function<bool(const std::string& key, const Node& v, const std::string& path)>;
void forFields(Ctx& c, const Node& n, const std::string& path, const FieldFn& fn);

// Calls fn(element, path) for each element of a sequence node.
using ElemFn = std::function<void(const Node& e, const std::string& path)>;
bool forList(Ctx& c, const Node& n, const std::string& path, const ElemFn& fn);

bool readString(Ctx& c, const Node& n, const std::string& path, std::string& out);
bool readString(Ctx& c, const Node& n, const std::string& path, std::optional<std::string>& out);
bool readBool(Ctx& c, const Node& n, const std::string& path, bool& out);
bool readBool(Ctx& c, const Node& n, const std::string& path, std::optional<bool>& out);
bool readInt64(Ctx& c, const Node& n, const std::string& path, int64_t min, int64_t max, int64_t& out);
bool readDouble(Ctx& c, const Node& n, const std::string& path, double& out);

template <class T>
bool readInt(Ctx& c, const Node& n, const std::string& path, T& out,
             int64_t min = std::numeric_limits<T>::min(), int64_t max = std::numeric_limits<T>::max()) {
  int64_t v = 0;
  if (!readInt64(c, n, path, min, max, v)) return false;
  out = static_cast<T>(v);
  return true;
}
template <class T>
bool readInt(Ctx& c, const Node& n, const std::string& path, std::optional<T>& out,
             int64_t min = std::numeric_limits<T>::min(), int64_t max = std::numeric_limits<T>::max()) {
  T v{};
  if (!readInt(c, n, path, v, min, max)) return false;
  out = v;
  return true;
}
inline bool readPort(Ctx& c, const Node& n, const std::string& path, uint32_t& out) {
  return readInt(c, n, path, out, 1, 65535);
}
inline bool readPort(Ctx& c, const Node& n, const std::string& path, std::optional<uint32_t>& out) {
  return readInt(c, n, path, out, 1, 65535);
}

// minMs: Istio's ValidateDuration (>= 1ms, whole milliseconds).
bool readDuration(Ctx& c, const Node& n, const std::string& path, std::optional<Duration>& out,
                  bool minMs);
bool readStringList(Ctx& c, const Node& n, const std::string& path, std::vector<std::string>& out);
// A string that will be written into an HTTP head as `field` (a rewritten
// path, an authority, a header value): the one place such configuration is
// checked (http::wireError), so no CR, LF or NUL can reach the wire. Returns
// false (and records an error) when it cannot be written.
bool checkWire(Ctx& c, const Node& n, const std::string& path, std::string_view value, http::WireField field);
bool readWireString(Ctx& c, const Node& n, const std::string& path, std::string& out, http::WireField field);
bool readWireStringList(Ctx& c, const Node& n, const std::string& path, std::vector<std::string>& out,
                        http::WireField field);
bool readStringMap(Ctx& c, const Node& n, const std::string& path, std::map<std::string, std::string>& out);
// Reads a string that must be one of `allowed`.
bool readEnum(Ctx& c, const Node& n, const std::string& path, std::initializer_list<std::string_view> allowed,
              std::string& out);

// Parses a sub-message into an optional, leaving it unset for null.
template <class T, class Fn>
void readMessage(Ctx& c, const Node& n, const std::string& path, std::optional<T>& out, Fn&& parse) {
  if (n.isNull()) return;
  if (!expectMap(c, n, path)) return;
  // Not out.emplace(): clang decides early that a nested struct with default
  // member initializers is not default-constructible (the fuzz build).
  out = T{};
  parse(c, n, path, *out);
}
template <class T, class Fn>
void readMessageList(Ctx& c, const Node& n, const std::string& path, std::vector<T>& out, Fn&& parse) {
  forList(c, n, path, [&](const Node& e, const std::string& p) {
    if (!expectMap(c, e, p)) return;
    parse(c, e, p, out.emplace_back());
  });
}

// --- pieces shared by several kinds

void parseStringMatch(Ctx& c, const Node& n, const std::string& path, StringMatch& out, bool allowPresence);
// {exact|prefix|regex} keyed by name; keys lower-cased when lowerKeys.
void parseStringMatchMap(Ctx& c, const Node& n, const std::string& path,
                         std::map<std::string, StringMatch>& out, bool lowerKeys);
void parsePercent(Ctx& c, const Node& n, const std::string& path, std::optional<Percent>& out);
void parsePortSelector(Ctx& c, const Node& n, const std::string& path, std::optional<PortSelector>& out);
// Destination with the host expanded against the current namespace.
void parseDestination(Ctx& c, const Node& n, const std::string& path, Destination& out);
// Accepts {matchLabels: {...}} (DestinationRule) or {labels: {...}} (ServiceEntry).
void parseWorkloadSelector(Ctx& c, const Node& n, const std::string& path, std::string_view labelsKey,
                           std::map<std::string, std::string>& out);
// WorkloadEntry spec (also ServiceEntry.endpoints[]).
void parseWorkloadEntrySpec(Ctx& c, const Node& n, const std::string& path, WorkloadEntry& out);
// exportTo as Istio validates it: ".", "*", "~" or namespace names, no
// duplicates ("." is the resource's own namespace), "*" and "~" alone; a
// DestinationRule with a workloadSelector exports to its own namespace
// only.
void validateExportTo(Ctx& c, const Node& n, const std::string& path, const std::vector<std::string>& exportTo,
                      bool drWithSelector = false);
// EnvoyFilter spec (parse_envoy_filter.cc).
void parseEnvoyFilterSpec(Ctx& c, const Node& n, const std::string& path, EnvoyFilter& out);

// --- Envoy protobuf messages inside EnvoyFilter patches (parse_envoy_proto.cc)

// Protobuf JSON names: "statPrefix" and "stat_prefix" are one field.
std::string snakeCase(std::string_view key);
// forFields with each key in its snake_case form.
void forProtoFields(Ctx& c, const Node& n, const std::string& path, const FieldFn& fn);
// envoy.type.v3.HttpStatus {code}: a StatusCode name (TooManyRequests) or
// number; `out` is left as it was when the code is not one of Envoy's.
void parseHttpStatus(Ctx& c, const Node& n, const std::string& path, uint32_t& out);

// --- rate limiting (parse_rate_limit.cc)

// typed_config of envoy.filters.http.ratelimit. `unsupported`: it asks for
// something Sluice does not do (reported; the filter is not applied).
void parseGlobalRateLimit(Ctx& c, const Node& n, const std::string& path, GlobalRateLimitConfig& out,
                          bool& unsupported);
// A `rate_limits` list (route or virtual host). Entries with an action
// Sluice does not build are reported and left out.
void parseRateLimitPolicies(Ctx& c, const Node& n, const std::string& path, std::vector<RateLimitPolicyConfig>& out);
// envoyproxy/ratelimit's configuration: {domain, descriptors}.
void parseRateLimitDomain(Ctx& c, const Node& n, const std::string& path, RateLimitDomainConfig& out);

// Istio's protocol names (case-insensitive), e.g. HTTP, HTTPS, GRPC, TCP, TLS.
bool validProtocol(std::string_view p);
// Wildcard-capable DNS name as Istio's ValidateWildcardDomain accepts it.
std::optional<std::string> hostError(std::string_view host);
bool validIpOrCidr(std::string_view s);
bool validIp(std::string_view s);
std::string lower(std::string_view s);
// "name" -> "ns/name", "mesh" kept, "ns/name" kept, "name.ns.svc..." -> "ns/name".
std::string qualifyGateway(std::string_view gw, std::string_view ns);

// --- per-kind spec parsers (spec node already known to be a map)
void parseVirtualServiceSpec(Ctx& c, const Node& spec, VirtualService& out);
void parseDestinationRuleSpec(Ctx& c, const Node& spec, DestinationRule& out);
void parseGatewaySpec(Ctx& c, const Node& spec, Gateway& out);
void parseServiceEntrySpec(Ctx& c, const Node& spec, ServiceEntry& out);
// Kubernetes objects (parse_kube_objects.cc). An EndpointSlice has no spec:
// `doc` is the whole document, with out.metadata already read.
void parseKubeServiceSpec(Ctx& c, const Node& spec, KubeService& out);
void parseEndpointSlice(Ctx& c, const Node& doc, EndpointSlice& out);
void parsePod(Ctx& c, const Node& spec, const Node& status, Pod& out);

}  // namespace sluice::config::detail
