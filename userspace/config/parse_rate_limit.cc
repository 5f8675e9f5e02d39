// Global rate limiting as Envoy and envoyproxy/ratelimit configure it: the
// envoy.filters.http.ratelimit filter's typed_config, the `rate_limits`
// actions a VIRTUAL_HOST or HTTP_ROUTE patch merges in, and the rate limit
// service's own {domain, descriptors} file.
#include <algorithm>
#include <cctype>
#include <set>

#include <re2/re2.h>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Path = std::string;

std::string lowerName(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  return s;
}

// envoy.config.core.v3.GrpcService, as rate_limit_service.grpc_service.
void parseGrpcService(Ctx& c, const Node& n, const Path& path, GlobalRateLimitConfig& out, bool& unsupported) {
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "envoy_grpc") {
      forProtoFields(c, v, p, [&](const std::string& k, const Node& ev, const Path& ep) {
        if (k == "cluster_name") readString(c, ev, ep, out.serviceCluster);
        else if (k == "authority") { std::string ignored; readString(c, ev, ep, ignored); }
        else if (k == "retry_policy" || k == "max_receive_message_length" || k == "skip_envoy_headers") c.warn(ev, ep, "not supported: ignored");
        else return false;
        return true;
      });
    } else if (key == "google_grpc") {
      c.warn(v, p, "not supported: name the service with envoy_grpc");
      unsupported = true;
    } else if (key == "timeout" || key == "initial_metadata" || key == "retry_policy") {
      c.warn(v, p, "not supported: ignored");
    } else {
      return false;
    }
    return true;
  });
}

void parseHeaderCond(Ctx& c, const Node& n, const Path& path, RateLimitActionConfig::HeaderCond& out) {
  using Op = RateLimitActionConfig::HeaderCond::Op;
  int ops = 0;
  auto readValue = [&](const Node& v, const Path& p, Op op) {
    ++ops;
    out.op = op;
    readString(c, v, p, out.value);
  };
  auto readRegex = [&](const Node& v, const Path& p) {
    // RegexMatcher {google_re2: {}, regex}.
    ++ops;
    out.op = Op::Regex;
    forProtoFields(c, v, p, [&](const std::string& k, const Node& rv, const Path& rp) {
      if (k == "regex") readString(c, rv, rp, out.value);
      else if (k != "google_re2") return false;
      return true;
    });
    auto re = std::make_shared<re2::RE2>(out.value, re2::RE2::Quiet);
    if (!re->ok()) c.error(v, p, "invalid regex: " + re->error());
    else out.regex = std::move(re);
  };
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "name") {
      if (readString(c, v, p, out.name)) out.name = lowerName(out.name);
    } else if (key == "exact_match") {
      readValue(v, p, Op::Exact);
    } else if (key == "prefix_match") {
      readValue(v, p, Op::Prefix);
    } else if (key == "suffix_match") {
      readValue(v, p, Op::Suffix);
    } else if (key == "contains_match") {
      readValue(v, p, Op::Contains);
    } else if (key == "safe_regex_match") {
      readRegex(v, p);
    } else if (key == "present_match") {
      ++ops;
      out.op = Op::Present;
      readBool(c, v, p, out.present);
    } else if (key == "string_match") {
      // StringMatcher {exact|prefix|suffix|contains|safe_regex, ignore_case}.
      ++ops;
      forProtoFields(c, v, p, [&](const std::string& k, const Node& sv, const Path& sp) {
        if (k == "exact") out.op = Op::Exact, readString(c, sv, sp, out.value);
        else if (k == "prefix") out.op = Op::Prefix, readString(c, sv, sp, out.value);
        else if (k == "suffix") out.op = Op::Suffix, readString(c, sv, sp, out.value);
        else if (k == "contains") out.op = Op::Contains, readString(c, sv, sp, out.value);
        else if (k == "safe_regex") --ops, readRegex(sv, sp);
        else if (k == "ignore_case") readBool(c, sv, sp, out.ignoreCase);
        else return false;
        return true;
      });
    } else if (key == "invert_match") {
      readBool(c, v, p, out.invert);
    } else if (key == "treat_missing_header_as_empty") {
      c.warn(v, p, "not supported: ignored");
    } else {
      return false;
    }
    return true;
  });
  if (out.name.empty()) c.error(n, join(path, "name"), "is required");
  if (ops > 1) c.error(n, path, "at most one of exact_match, prefix_match, suffix_match, contains_match, safe_regex_match, present_match, string_match");
  if (out.ignoreCase) out.value = lowerName(out.value);
}

// One action; false when it is one Sluice does not build (reported).
bool parseAction(Ctx& c, const Node& n, const Path& path, RateLimitActionConfig& out) {
  using Kind = RateLimitActionConfig::Kind;
  int kinds = 0;
  bool known = true;
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    ++kinds;
    if (key == "request_headers") {
      out.kind = Kind::RequestHeaders;
      forProtoFields(c, v, p, [&](const std::string& k, const Node& av, const Path& ap) {
        if (k == "header_name") {
          if (readString(c, av, ap, out.headerName)) out.headerName = lowerName(out.headerName);
        } else if (k == "descriptor_key") {
          readString(c, av, ap, out.descriptorKey);
        } else if (k == "skip_if_absent") {
          readBool(c, av, ap, out.skipIfAbsent);
        } else {
          return false;
        }
        return true;
      });
      if (out.headerName.empty()) c.error(v, join(p, "header_name"), "is required");
      if (out.descriptorKey.empty()) c.error(v, join(p, "descriptor_key"), "is required");
    } else if (key == "remote_address") {
      out.kind = Kind::RemoteAddress;
      out.descriptorKey = "remote_address";
      forProtoFields(c, v, p, [](const std::string&, const Node&, const Path&) { return false; });
    } else if (key == "destination_cluster") {
      out.kind = Kind::DestinationCluster;
      out.descriptorKey = "destination_cluster";
      forProtoFields(c, v, p, [](const std::string&, const Node&, const Path&) { return false; });
    } else if (key == "generic_key") {
      out.kind = Kind::GenericKey;
      out.descriptorKey = "generic_key";
      forProtoFields(c, v, p, [&](const std::string& k, const Node& av, const Path& ap) {
        if (k == "descriptor_value") readString(c, av, ap, out.descriptorValue);
        else if (k == "descriptor_key") readString(c, av, ap, out.descriptorKey);
        else return false;
        return true;
      });
      if (out.descriptorValue.empty()) c.error(v, join(p, "descriptor_value"), "is required");
    } else if (key == "header_value_match") {
      out.kind = Kind::HeaderValueMatch;
      out.descriptorKey = "header_match";
      forProtoFields(c, v, p, [&](const std::string& k, const Node& av, const Path& ap) {
        if (k == "descriptor_value") readString(c, av, ap, out.descriptorValue);
        else if (k == "descriptor_key") readString(c, av, ap, out.descriptorKey);
        else if (k == "expect_match") readBool(c, av, ap, out.expectMatch);
        else if (k == "headers") readMessageList(c, av, ap, out.headers, parseHeaderCond);
        else return false;
        return true;
      });
      if (out.descriptorValue.empty()) c.error(v, join(p, "descriptor_value"), "is required");
      if (out.headers.empty()) c.error(v, join(p, "headers"), "at least one header is required");
    } else if (key == "source_cluster" || key == "dynamic_metadata" || key == "metadata" || key == "extension" ||
               key == "masked_remote_address" || key == "query_parameter_value_match" ||
               key == "query_parameters") {
      c.warn(v, p, "this action is not supported yet: its rate_limits entry is left out");
      known = false;
    } else {
      return false;
    }
    return true;
  });
  if (kinds != 1) c.error(n, path, "exactly one action kind is required");
  return known;
}

bool readUnit(std::string unit, uint32_t& seconds) {
  unit = lowerName(std::move(unit));
  if (unit == "second") seconds = 1;
  else if (unit == "minute") seconds = 60;
  else if (unit == "hour") seconds = 3600;
  else if (unit == "day") seconds = 86400;
  else if (unit == "week") seconds = 7 * 86400;
  else if (unit == "month") seconds = 30 * 86400;  // the service's divider
  else if (unit == "year") seconds = 365 * 86400;
  else return false;
  return true;
}

void parseDescriptor(Ctx& c, const Node& n, const Path& path, RateLimitDescriptorConfig& out);

void parseDescriptors(Ctx& c, const Node& n, const Path& path, std::vector<RateLimitDescriptorConfig>& out) {
  readMessageList(c, n, path, out, parseDescriptor);
  // One entry per composite key (key, or key_value) on each level.
  std::set<std::string> seen;
  for (size_t i = 0; i < out.size(); ++i) {
    std::string composite = out[i].key + (out[i].value.empty() ? "" : "_" + out[i].value);
    if (!out[i].key.empty() && !seen.insert(composite).second)
      c.error(n, index(path, i), "duplicate descriptor composite key '" + composite + "'");
  }
}

void parseDescriptor(Ctx& c, const Node& n, const Path& path, RateLimitDescriptorConfig& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "key") {
      readString(c, v, p, out.key);
    } else if (key == "value") {
      readString(c, v, p, out.value);
    } else if (key == "rate_limit") {
      readMessage(c, v, p, out.rateLimit, [](Ctx& c, const Node& rn, const Path& rp, RateLimitDescriptorConfig::Limit& l) {
        std::string unit;
        bool haveUnit = false;
        forFields(c, rn, rp, [&](const std::string& k, const Node& lv, const Path& lp) {
          if (k == "unit") haveUnit = readString(c, lv, lp, unit);
          else if (k == "requests_per_unit") readInt(c, lv, lp, l.requestsPerUnit);
          else if (k == "unlimited") readBool(c, lv, lp, l.unlimited);
          else if (k == "name") readString(c, lv, lp, l.name);
          else if (k == "replaces") c.warn(lv, lp, "not supported yet: ignored");
          else return false;
          return true;
        });
        const bool validUnit = haveUnit && readUnit(unit, l.unitSeconds);
        if (l.unlimited) {
          if (validUnit) c.error(rn, join(rp, "unit"), "should not be set when unlimited");
          l.unitSeconds = 0;
        } else if (!validUnit) {
          c.error(rn, join(rp, "unit"), "invalid rate limit unit '" + unit + "' (second, minute, hour, day, week, month or year)");
        }
      });
    } else if (key == "descriptors") {
      parseDescriptors(c, v, p, out.descriptors);
    } else if (key == "shadow_mode") {
      readBool(c, v, p, out.shadowMode);
    } else if (key == "detailed_metric") {
      bool ignored = false;
      readBool(c, v, p, ignored);
    } else {
      return false;
    }
    return true;
  });
  if (out.key.empty()) c.error(n, join(path, "key"), "descriptor has empty key");
}

}  // namespace

void parseGlobalRateLimit(Ctx& c, const Node& n, const Path& path, GlobalRateLimitConfig& out, bool& unsupported) {
  forProtoFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "@type") {
      // The type the caller already checked.
    } else if (key == "domain") {
      readString(c, v, p, out.domain);
    } else if (key == "failure_mode_deny") {
      readBool(c, v, p, out.failureModeDeny);
    } else if (key == "timeout") {
      std::optional<Duration> d;
      if (readDuration(c, v, p, d, false) && d) out.timeout = *d;
    } else if (key == "rate_limit_service") {
      forProtoFields(c, v, p, [&](const std::string& k, const Node& sv, const Path& sp) {
        if (k == "grpc_service") {
          parseGrpcService(c, sv, sp, out, unsupported);
        } else if (k == "transport_api_version") {
          std::string version;
          readEnum(c, sv, sp, {"AUTO", "V2", "V3"}, version);
          if (version == "V2") c.error(sv, sp, "the v2 rate limit API is gone from Envoy: use V3");
        } else {
          return false;
        }
        return true;
      });
    } else if (key == "rate_limited_status") {
      parseHttpStatus(c, v, p, out.rateLimitedStatus);
      if (out.rateLimitedStatus < 400) out.rateLimitedStatus = 429;  // Envoy's rule
    } else if (key == "status_on_error") {
      parseHttpStatus(c, v, p, out.statusOnError);
    } else if (key == "disable_x_envoy_ratelimited_header") {
      bool disable = false;
      if (readBool(c, v, p, disable)) out.xEnvoyRateLimitedHeader = !disable;
    } else if (key == "stat_prefix") {
      readString(c, v, p, out.statPrefix);
    } else if (key == "stage") {
      uint32_t stage = 0;
      if (readInt(c, v, p, stage, 0, 10) && stage != 0) {
        c.warn(v, p, "stages other than 0 are not supported: this filter is not applied");
        unsupported = true;
      }
    } else if (key == "request_type") {
      std::string type;
      readEnum(c, v, p, {"internal", "external", "both"}, type);
      if (type != "both" && !type.empty()) c.warn(v, p, "sluiced does not tell internal from external requests: both are limited");
    } else if (key == "enable_x_ratelimit_headers" || key == "rate_limited_as_resource_exhausted" ||
               key == "response_headers_to_add") {
      c.warn(v, p, "not supported yet: ignored");
    } else if (key == "filter_enabled" || key == "filter_enforced" || key == "failure_mode_deny_percent" ||
               key == "rate_limits") {
      c.warn(v, p, "not supported yet: this filter is not applied");
      unsupported = true;
    } else {
      return false;
    }
    return true;
  });
  if (out.domain.empty()) c.error(n, join(path, "domain"), "is required");
}

void parseRateLimitPolicies(Ctx& c, const Node& n, const Path& path, std::vector<RateLimitPolicyConfig>& out) {
  forList(c, n, path, [&](const Node& e, const Path& p) {
    if (!expectMap(c, e, p)) return;
    RateLimitPolicyConfig policy;
    bool keep = true;
    bool haveActions = false;
    forProtoFields(c, e, p, [&](const std::string& key, const Node& v, const Path& vp) {
      if (key == "actions") {
        haveActions = true;
        forList(c, v, vp, [&](const Node& an, const Path& ap) {
          if (!expectMap(c, an, ap)) return;
          keep = parseAction(c, an, ap, policy.actions.emplace_back()) && keep;
        });
      } else if (key == "stage") {
        uint32_t stage = 0;
        if (readInt(c, v, vp, stage, 0, 10) && stage != 0) {
          c.warn(v, vp, "stages other than 0 are not supported: this entry is left out");
          keep = false;
        }
      } else if (key == "disable_key") {
        std::string ignored;
        readString(c, v, vp, ignored);  // no runtime here
      } else if (key == "limit" || key == "hits_addend" || key == "apply_on_stream_done") {
        c.warn(v, vp, "not supported yet: this entry is left out");
        keep = false;
      } else {
        return false;
      }
      return true;
    });
    if (!haveActions || policy.actions.empty()) c.error(e, join(p, "actions"), "at least one action is required");
    if (keep) out.push_back(std::move(policy));
  });
}

void parseRateLimitDomain(Ctx& c, const Node& n, const Path& path, RateLimitDomainConfig& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "domain") readString(c, v, p, out.domain);
    else if (key == "descriptors") parseDescriptors(c, v, p, out.descriptors);
    else return false;
    return true;
  });
  if (out.domain.empty()) c.error(n, join(path, "domain"), "config file cannot have empty domain");
}

}  // namespace sluice::config::detail
