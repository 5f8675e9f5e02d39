// EnvoyFilter (networking.istio.io/v1alpha3). Sluice runs no Envoy, so of
// the patches only rate limiting means something to it: an HTTP_FILTER
// patch inserting envoy.filters.http.local_ratelimit or
// envoy.filters.http.ratelimit, whose typed_config is read field by field
// (snake_case or camelCase, as protobuf JSON allows; directly typed or
// wrapped in a TypedStruct), and a VIRTUAL_HOST or HTTP_ROUTE merge of
// `rate_limits` (parse_rate_limit.cc). Every other patch is parsed as far
// as its shape (applyTo, match.context, patch.operation) and recorded with
// a description of what it patches, for compile() to report and ignore.
#include <algorithm>
#include <cctype>
#include <limits>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Path = std::string;

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kUint32Max = std::numeric_limits<uint32_t>::max();

constexpr std::string_view kLocalRateLimitType =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
constexpr std::string_view kGlobalRateLimitType =
    "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit";

// envoy.type.v3.FractionalPercent inside a RuntimeFractionalPercent
// ({runtime_key, default_value: {numerator, denominator}}): parts per million.
void parseRuntimeFraction(Ctx& c, const Node& n, const Path& path, uint32_t& ppm) {
  if (!expectMap(c, n, path)) return;
  bool haveDefault = false;
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "runtime_key") {
      std::string ignored;
      readString(c, v, p, ignored);  // no runtime here: the default value holds
    } else if (key == "default_value") {
      haveDefault = true;
      if (!expectMap(c, v, p)) return true;
      uint64_t numerator = 0;
      std::string denominator = "HUNDRED";
      forProtoFields(c, v, p, [&](const std::string& k, const Node& fv, const Path& fp) {
        if (k == "numerator") readInt(c, fv, fp, numerator, 0, kUint32Max);
        else if (k == "denominator") readEnum(c, fv, fp, {"HUNDRED", "TEN_THOUSAND", "MILLION"}, denominator);
        else return false;
        return true;
      });
      const uint64_t scale = denominator == "HUNDRED" ? 10000 : denominator == "TEN_THOUSAND" ? 100 : 1;
      ppm = uint32_t(std::min<uint64_t>(1'000'000, numerator * scale));
    } else {
      return false;
    }
    return true;
  });
  if (!haveDefault) c.error(n, join(path, "default_value"), "is required");
}

void parseHeaderToAdd(Ctx& c, const Node& n, const Path& path, LocalRateLimitConfig::HeaderToAdd& out) {
  bool haveHeader = false;
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "header") {
      if (!expectMap(c, v, p)) return true;
      haveHeader = true;
      forProtoFields(c, v, p, [&](const std::string& k, const Node& hv, const Path& hp) {
        if (k == "key") {
          if (readWireString(c, hv, hp, out.name, http::WireField::HeaderName)) {
            std::transform(out.name.begin(), out.name.end(), out.name.begin(),
                           [](unsigned char ch) { return char(std::tolower(ch)); });
          }
        } else if (k == "value") {
          readWireString(c, hv, hp, out.value, http::WireField::HeaderValue);
        } else {
          return false;
        }
        return true;
      });
    } else if (key == "append_action") {
      readEnum(c, v, p, {"APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"},
               out.appendAction);
    } else if (key == "append") {
      // Deprecated: true appends, false overwrites.
      bool append = true;
      if (readBool(c, v, p, append)) out.appendAction = append ? "APPEND_IF_EXISTS_OR_ADD" : "OVERWRITE_IF_EXISTS_OR_ADD";
    } else if (key == "keep_empty_value") {
      readBool(c, v, p, out.keepEmptyValue);
    } else {
      return false;
    }
    return true;
  });
  if (!haveHeader || out.name.empty()) {
    c.error(n, join(path, "header"), "a header with a key is required");
    return;
  }
  // Framing and connection fields are the proxy's to write.
  static constexpr std::string_view kReserved[] = {"content-length", "transfer-encoding", "connection", "keep-alive",
                                                  "proxy-connection", "upgrade", "te", "host"};
  if (out.name.front() == ':' || std::find(std::begin(kReserved), std::end(kReserved), out.name) != std::end(kReserved))
    c.error(n, join(path, "header.key"), "\"" + out.name + "\" cannot be set on a local reply");
}

// envoy.type.v3.TokenBucket.
void parseTokenBucket(Ctx& c, const Node& v, const Path& p, uint32_t& maxTokens, uint32_t& tokensPerFill,
                      Duration& fillInterval) {
  std::optional<Duration> interval;
  forProtoFields(c, v, p, [&](const std::string& k, const Node& bv, const Path& bp) {
    if (k == "max_tokens") readInt(c, bv, bp, maxTokens, 1, kUint32Max);
    else if (k == "tokens_per_fill") readInt(c, bv, bp, tokensPerFill, 1, kUint32Max);
    else if (k == "fill_interval") readDuration(c, bv, bp, interval, false);
    else return false;
    return true;
  });
  if (maxTokens == 0) c.error(v, join(p, "max_tokens"), "must be at least 1");
  if (!interval) {
    c.error(v, join(p, "fill_interval"), "is required");
  } else if (*interval < std::chrono::milliseconds(50)) {
    c.error(v, join(p, "fill_interval"), "must be at least 50ms");
  } else {
    fillInterval = *interval;
  }
}

// LocalRateLimit descriptors[]: {entries: [{key, value}], token_bucket}.
void parseLocalDescriptor(Ctx& c, const Node& n, const Path& path, LocalRateLimitConfig::Descriptor& out) {
  bool haveBucket = false;
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "entries") {
      forList(c, v, p, [&](const Node& e, const Path& ep) {
        auto& entry = out.entries.emplace_back();
        forProtoFields(c, e, ep, [&](const std::string& k, const Node& ev, const Path& evp) {
          if (k == "key") readString(c, ev, evp, entry.first);
          else if (k == "value") readString(c, ev, evp, entry.second);
          else return false;
          return true;
        });
        if (entry.first.empty()) c.error(e, join(ep, "key"), "is required");
        if (entry.second.empty()) c.error(e, join(ep, "value"), "is required");
      });
    } else if (key == "token_bucket") {
      if (!expectMap(c, v, p)) return true;
      haveBucket = true;
      parseTokenBucket(c, v, p, out.maxTokens, out.tokensPerFill, out.fillInterval);
    } else {
      return false;
    }
    return true;
  });
  if (out.entries.empty()) c.error(n, join(path, "entries"), "at least one entry is required");
  if (!haveBucket) c.error(n, join(path, "token_bucket"), "is required");
}

// `unsupported`: it asks for something Sluice does not do yet (reported).
// `perRoute`: a route's or virtual host's typed_per_filter_config, which
// Envoy requires to have a bucket.
void parseLocalRateLimit(Ctx& c, const Node& n, const Path& path, LocalRateLimitConfig& out, bool& unsupported,
                         bool perRoute) {
  bool haveBucket = false;
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "@type") {
      // The type the caller already checked.
    } else if (key == "stat_prefix") {
      readString(c, v, p, out.statPrefix);
    } else if (key == "token_bucket") {
      if (!expectMap(c, v, p)) return true;
      haveBucket = true;
      parseTokenBucket(c, v, p, out.maxTokens, out.tokensPerFill, out.fillInterval);
    } else if (key == "filter_enabled") {
      parseRuntimeFraction(c, v, p, out.enabledPpm);
    } else if (key == "filter_enforced") {
      parseRuntimeFraction(c, v, p, out.enforcedPpm);
    } else if (key == "status") {
      parseHttpStatus(c, v, p, out.status);
      if (out.status < 400) out.status = 429;  // Envoy's rule for a code that is no error
    } else if (key == "response_headers_to_add") {
      readMessageList(c, v, p, out.responseHeaders, parseHeaderToAdd);
    } else if (key == "enable_x_ratelimit_headers" || key == "rate_limited_as_resource_exhausted" ||
               key == "request_headers_to_add_when_not_enforced" || key == "stage" || key == "vh_rate_limits" ||
               key == "local_cluster_rate_limit" || key == "max_dynamic_descriptors") {
      c.warn(v, p, "not supported yet: ignored");
    } else if (key == "descriptors") {
      readMessageList(c, v, p, out.descriptors, parseLocalDescriptor);
    } else if (key == "always_consume_default_token_bucket") {
      readBool(c, v, p, out.alwaysConsumeDefault);
    } else if (key == "rate_limits" || key == "local_rate_limit_per_downstream_connection") {
      // Each changes which requests the bucket limits: enforcing the
      // plain bucket instead would limit what the filter does not.
      c.warn(v, p, "not supported yet: this filter is not applied");
      unsupported = true;
    } else {
      return false;
    }
    return true;
  });
  if (out.statPrefix.empty()) c.error(n, join(path, "stat_prefix"), "is required");
  out.hasBucket = haveBucket;
  if (perRoute && !haveBucket) c.error(n, join(path, "token_bucket"), "is required in a per-route config");
  for (size_t i = 1; i < out.descriptors.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (out.descriptors[i].entries == out.descriptors[j].entries)
        c.error(n, index(join(path, "descriptors"), i), "duplicate descriptor (same entries as descriptors[" +
                                                            std::to_string(j) + "])");
    }
  }
}

// A typed config (directly typed, or in a TypedStruct) of one of the rate
// limit filters, parsed into `patch` (left unset when it asks for what
// Sluice does not do). False: another type.
bool parseTypedRateLimit(Ctx& c, const Node& typed, const Path& typedPath, EnvoyFilterPatch& patch,
                         bool perRoute = false) {
  if (!typed.isMap()) return false;
  std::string type;
  const Node* body = &typed;
  Path bodyPath = typedPath;
  for (const auto& [k, v] : typed.entries()) {
    if (k.scalar() == "@type" && v.isScalar()) type = v.scalar();
  }
  if (type == "type.googleapis.com/udpa.type.v1.TypedStruct" || type == "type.googleapis.com/xds.type.v3.TypedStruct") {
    body = nullptr;
    for (const auto& [k, v] : typed.entries()) {
      const std::string key = snakeCase(k.scalar());
      if (key == "type_url" && v.isScalar()) type = v.scalar();
      if (key == "value") {
        body = &v;
        bodyPath = join(typedPath, k.scalar());
      }
    }
  }
  const bool local = type == kLocalRateLimitType;
  if (!local && type != kGlobalRateLimitType) return false;
  if (!body || !body->isMap()) {
    c.error(typed, typedPath, local ? "a LocalRateLimit config is required" : "a RateLimit config is required");
    return true;
  }
  bool unsupported = false;
  if (local) {
    patch.localRateLimit = LocalRateLimitConfig{};
    parseLocalRateLimit(c, *body, bodyPath, *patch.localRateLimit, unsupported, perRoute);
    if (unsupported) patch.localRateLimit.reset();
  } else {
    patch.globalRateLimit = GlobalRateLimitConfig{};
    parseGlobalRateLimit(c, *body, bodyPath, *patch.globalRateLimit, unsupported);
    if (unsupported) patch.globalRateLimit.reset();
  }
  return true;
}

// patch.value of an HTTP_FILTER insert: {name, typed_config}. True when it
// is a rate limit filter.
bool parseHttpFilterValue(Ctx& c, const Node& n, const Path& path, std::string& name, EnvoyFilterPatch& patch) {
  if (!n.isMap()) return false;
  for (const auto& [k, v] : n.entries()) {
    const std::string key = snakeCase(k.scalar());
    if (key == "name" && v.isScalar()) name = v.scalar();
  }
  for (const auto& [k, v] : n.entries()) {
    if (snakeCase(k.scalar()) == "typed_config") {
      patch.filterName = name;
      return parseTypedRateLimit(c, v, join(path, k.scalar()), patch);
    }
  }
  return false;
}

// patch.value of a VIRTUAL_HOST merge ({rate_limits, typed_per_filter_config})
// or an HTTP_ROUTE one ({route: {rate_limits}, typed_per_filter_config}),
// where the per-filter config may be the local rate limit's. True when it
// merges those and nothing else (Sluice has nothing else of a route or
// virtual host to patch).
bool parseRateLimitsMerge(Ctx& c, const Node& n, const Path& path, bool route, EnvoyFilterPatch& patch) {
  if (!n.isMap() || n.size() == 0) return false;
  for (const auto& [k, v] : n.entries()) {
    const std::string key = snakeCase(k.scalar());
    const Path p = join(path, k.scalar());
    if (key == "typed_per_filter_config") {
      // Keyed by the name the filter has in the chain (the HTTP_FILTER
      // patch's `name`); only a local rate limit's is read.
      if (!v.isMap() || v.size() != 1) return false;
      const auto& [fk, fv] = v.entries()[0];
      if (!parseTypedRateLimit(c, fv, join(p, fk.scalar()), patch, /*perRoute=*/true) || patch.globalRateLimit)
        return false;
      patch.filterName = fk.scalar();
      // An unsupported one was reported by its parser and is left out; the
      // rest of the merge still applies.
    } else if (route && key == "route") {
      if (!v.isMap() || v.size() != 1) return false;
      const auto& [rk, rv] = v.entries()[0];
      if (snakeCase(rk.scalar()) != "rate_limits") return false;
      parseRateLimitPolicies(c, rv, join(p, rk.scalar()), patch.rateLimits);
      patch.mergesRateLimits = true;
    } else if (!route && key == "rate_limits") {
      parseRateLimitPolicies(c, v, p, patch.rateLimits);
      patch.mergesRateLimits = true;
    } else {
      return false;
    }
  }
  return true;
}

// match.routeConfiguration: {portNumber, vhost: {name, route: {name, action}}}.
struct RouteConfigurationMatch {
  std::optional<uint32_t> port;
  std::string routeAction;
};
void parseRouteConfigurationMatch(Ctx& c, const Node& n, const Path& path, EnvoyFilterPatch& patch,
                                  RouteConfigurationMatch& out, std::vector<std::string>& narrowing) {
  if (!expectMap(c, n, path)) return;
  for (const auto& [k, v] : n.entries()) {
    const std::string& field = k.scalar();
    if (field == "portNumber") {
      readPort(c, v, join(path, field), out.port);
    } else if (field == "vhost" && v.isMap()) {
      for (const auto& [vk, vv] : v.entries()) {
        if (vk.scalar() == "name") {
          readString(c, vv, join(path, "vhost.name"), patch.vhostName);
        } else if (vk.scalar() == "route" && vv.isMap()) {
          for (const auto& [rk, rv] : vv.entries()) {
            if (rk.scalar() == "name") {
              readString(c, rv, join(path, "vhost.route.name"), patch.routeName);
            } else if (rk.scalar() == "action") {
              readEnum(c, rv, join(path, "vhost.route.action"), {"ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"},
                       out.routeAction);
            } else {
              narrowing.push_back("routeConfiguration.vhost.route." + rk.scalar());
            }
          }
        } else {
          narrowing.push_back("routeConfiguration.vhost." + vk.scalar());
        }
      }
    } else {
      narrowing.push_back("routeConfiguration." + field);
    }
  }
}

}  // namespace

void parseEnvoyFilterSpec(Ctx& c, const Node& n, const Path& path, EnvoyFilter& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "workloadSelector") {
      parseWorkloadSelector(c, v, p, "labels", out.workloadSelector);
    } else if (key == "priority") {
      readInt(c, v, p, out.priority, kInt32Min, kInt32Max);
    } else if (key == "targetRefs") {
      c.warn(v, p, "not supported: ignored (workloadSelector selects)");
    } else if (key == "configPatches") {
      readMessageList(c, v, p, out.patches, [](Ctx& c, const Node& pn, const Path& pp, EnvoyFilterPatch& patch) {
        patch.line = c.line(pn);
        std::vector<std::string> narrowing;  // match fields Sluice cannot apply
        RouteConfigurationMatch routeMatch;
        const Node* value = nullptr;
        Path valuePath;
        forFields(c, pn, pp, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "applyTo") {
            readEnum(c, v, p,
                     {"INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                      "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER"},
                     patch.applyTo);
          } else if (key == "match") {
            if (!expectMap(c, v, p)) return true;
            forFields(c, v, p, [&](const std::string& k, const Node& mv, const Path& mp) {
              if (k == "context") {
                readEnum(c, mv, mp, {"ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"}, patch.context);
              } else if (k == "listener") {
                if (!expectMap(c, mv, mp)) return true;
                for (const auto& [lk, lv] : mv.entries()) {
                  const std::string& field = lk.scalar();
                  if (field == "portNumber") {
                    readPort(c, lv, join(mp, "portNumber"), patch.portNumber);
                  } else if (field == "filterChain" && lv.isMap()) {
                    // Naming the HTTP connection manager (and its router)
                    // is what every HTTP_FILTER patch does; anything else
                    // narrows it in a way Sluice cannot follow.
                    for (const auto& [fk, fv] : lv.entries()) {
                      if (fk.scalar() != "filter") narrowing.push_back("listener.filterChain." + fk.scalar());
                    }
                  } else {
                    narrowing.push_back("listener." + field);
                  }
                }
              } else if (k == "proxy") {
                narrowing.push_back("proxy");
              } else if (k == "routeConfiguration") {
                parseRouteConfigurationMatch(c, mv, mp, patch, routeMatch, narrowing);
              } else if (k != "cluster") {
                return false;
              }
              return true;
            });
          } else if (key == "patch") {
            if (!expectMap(c, v, p)) return true;
            forFields(c, v, p, [&](const std::string& k, const Node& pv, const Path& ppath) {
              if (k == "operation") {
                readEnum(c, pv, ppath,
                         {"INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"},
                         patch.operation);
              } else if (k == "value") {
                value = &pv;
                valuePath = ppath;
              } else if (k != "filterClass") {
                return false;
              }
              return true;
            });
          } else {
            return false;
          }
          return true;
        });
        // Istio reads a listener match for listener patches and a route
        // configuration match for route configuration ones; for a virtual
        // host, the match's route part says nothing.
        const bool routePatch = patch.applyTo == "VIRTUAL_HOST" || patch.applyTo == "HTTP_ROUTE";
        if (routePatch) patch.portNumber = routeMatch.port;
        if (patch.applyTo == "VIRTUAL_HOST") patch.routeName.clear();
        if (patch.applyTo == "HTTP_ROUTE" && !routeMatch.routeAction.empty() && routeMatch.routeAction != "ANY")
          narrowing.push_back("routeConfiguration.vhost.route.action " + routeMatch.routeAction);
        std::string name;
        const bool insert = patch.operation == "INSERT_BEFORE" || patch.operation == "INSERT_AFTER" ||
                            patch.operation == "INSERT_FIRST" || patch.operation == "ADD";
        bool rateLimit = false;
        if (patch.applyTo == "HTTP_FILTER" && insert && value) {
          rateLimit = parseHttpFilterValue(c, *value, valuePath, name, patch);
        } else if ((patch.applyTo == "VIRTUAL_HOST" || patch.applyTo == "HTTP_ROUTE") && patch.operation == "MERGE" &&
                   value) {
          rateLimit = parseRateLimitsMerge(c, *value, valuePath, patch.applyTo == "HTTP_ROUTE", patch);
          name = "rate limit settings";
        }
        const bool applied = patch.localRateLimit || patch.globalRateLimit || patch.mergesRateLimits;
        if (rateLimit && applied && narrowing.empty()) return;
        patch.localRateLimit.reset();
        patch.globalRateLimit.reset();
        patch.mergesRateLimits = false;
        patch.rateLimits.clear();
        patch.unsupported = patch.applyTo.empty() ? "a patch without applyTo" : patch.applyTo;
        if (!patch.operation.empty()) patch.unsupported += " " + patch.operation;
        if (!name.empty()) patch.unsupported += " " + name;
        if (rateLimit) {
          patch.unsupported += narrowing.empty() ? " with settings not supported yet (see the warnings above)"
                                                 : " matched by " + narrowing.front();
        }
      });
    } else {
      return false;
    }
    return true;
  });
}

}  // namespace sluice::config::detail
