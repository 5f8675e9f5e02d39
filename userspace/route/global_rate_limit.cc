#include "route/global_rate_limit.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include <algorithm>

#include "http/parser.h"
#include "route/rate_limit.h"

namespace sluice::route {

namespace {

using Action = config::RateLimitActionConfig;
using Cond = Action::HeaderCond;

std::string_view header(const RateLimitRequest& req, std::string_view name) {
  if (name.starts_with(':')) {
    if (name == ":path") return req.path;
    if (name == ":method") return req.method;
    if (name == ":authority") return req.authority;
    if (name == ":scheme") return req.scheme;
    return {};
  }
  return req.headers ? req.headers->get(name) : std::string_view{};
}

bool present(const RateLimitRequest& req, std::string_view name) {
  if (name.starts_with(':')) return !header(req, name).empty();
  return req.headers && req.headers->has(name);
}

// Every value of header `name`, joined with ',' as Envoy matches a header
// sent more than once.
std::string_view joinedValue(const RateLimitRequest& req, std::string_view name, std::string& storage) {
  if (name.starts_with(':') || !req.headers) return header(req, name);
  std::string_view first;
  int seen = 0;
  for (const http::HeaderMap::Field& f : *req.headers) {
    if (!http::iequals(f.name, name)) continue;
    if (seen++ == 0) {
      first = f.value;
      continue;
    }
    if (seen == 2) storage.assign(first);
    storage.append(",").append(f.value);
  }
  return seen > 1 ? std::string_view(storage) : first;
}

// Envoy's HeaderMatcher on a request (HeaderUtility::matchHeaders).
bool condHolds(const Cond& c, const RateLimitRequest& req) {
  if (!present(req, c.name)) {
    // Absent: only a presence match can hold, and invert_match does not
    // turn "absent" into a match of a value.
    const bool presence = c.op == Cond::Op::Present;
    return c.invert ? (presence && c.present) : (presence && !c.present);
  }
  std::string storage;
  const std::string_view raw = joinedValue(req, c.name, storage);
  std::string_view v = raw;
  std::string lowered;
  if (c.ignoreCase) {
    lowered.assign(v);
    for (char& ch : lowered) ch = (ch >= 'A' && ch <= 'Z') ? char(ch + 32) : ch;
    v = lowered;
  }
  bool matched = false;
  switch (c.op) {
    case Cond::Op::Present: matched = c.present; break;
    case Cond::Op::Exact: matched = c.value.empty() || v == c.value; break;
    case Cond::Op::Prefix: matched = v.starts_with(c.value); break;
    case Cond::Op::Suffix: matched = v.ends_with(c.value); break;
    case Cond::Op::Contains: matched = v.find(c.value) != std::string_view::npos; break;
    // ignore_case does not apply to a regex (Envoy's StringMatcher).
    case Cond::Op::Regex: matched = c.regex && RE2::FullMatch(re2::StringPiece(raw.data(), raw.size()), *c.regex); break;
  }
  return matched != c.invert;
}

}  // namespace

void RateLimitPolicy::build(const RateLimitRequest& req, std::vector<Descriptor>& out) const {
  Descriptor d;
  d.reserve(actions.size());
  for (const Action& a : actions) {
    switch (a.kind) {
      case Action::Kind::RequestHeaders: {
        if (!present(req, a.headerName)) {
          if (a.skipIfAbsent) continue;
          return;
        }
        d.push_back({a.descriptorKey, std::string(header(req, a.headerName))});
        break;
      }
      case Action::Kind::RemoteAddress:
        if (req.remoteAddress.empty()) return;
        d.push_back({a.descriptorKey, std::string(req.remoteAddress)});
        break;
      case Action::Kind::GenericKey:
        d.push_back({a.descriptorKey, a.descriptorValue});
        break;
      case Action::Kind::HeaderValueMatch: {
        const bool all = std::all_of(a.headers.begin(), a.headers.end(), [&](const Cond& c) { return condHolds(c, req); });
        if (all != a.expectMatch) return;
        d.push_back({a.descriptorKey, a.descriptorValue});
        break;
      }
      case Action::Kind::DestinationCluster:
        if (req.destinationCluster.empty()) return;
        d.push_back({a.descriptorKey, std::string(req.destinationCluster)});
        break;
    }
  }
  if (!d.empty()) out.push_back(std::move(d));
}

RateLimitDomain::RateLimitDomain(const config::RateLimitDomainConfig& c) : name_(c.domain) {
  load(root_, c.descriptors, c.domain + ".");
}

void RateLimitDomain::load(Node& into, const std::vector<config::RateLimitDescriptorConfig>& list,
                           const std::string& parent) {
  for (const auto& d : list) {
    const std::string key = d.value.empty() ? d.key : d.key + "_" + d.value;
    Node& n = into.children[key];
    if (d.rateLimit) {
      RateLimitRule r;
      r.requestsPerUnit = d.rateLimit->requestsPerUnit;
      r.unitSeconds = d.rateLimit->unitSeconds;
      r.unlimited = d.rateLimit->unlimited;
      r.shadowMode = d.shadowMode;
      r.fullKey = parent + key;
      n.rule = std::move(r);
    }
    if (key.ends_with('*')) into.wildcards.push_back(key);
    load(n, d.descriptors, parent + key + ".");
  }
}

const RateLimitRule* RateLimitDomain::find(const Descriptor& d) const {
  const Node* level = &root_;
  const RateLimitRule* rule = nullptr;
  std::string key;
  for (size_t i = 0; i < d.size(); ++i) {
    key.assign(d[i].key).append("_").append(d[i].value);
    const Node* next = nullptr;
    if (auto it = level->children.find(key); it != level->children.end()) next = &it->second;
    if (!next) {
      for (const std::string& w : level->wildcards) {
        if (std::string_view(key).starts_with(std::string_view(w).substr(0, w.size() - 1))) {
          next = &level->children.find(w)->second;
          break;
        }
      }
    }
    if (!next) {
      if (auto it = level->children.find(d[i].key); it != level->children.end()) next = &it->second;
    }
    if (next && next->rule && i + 1 == d.size()) rule = &*next->rule;
    if (!next || next->children.empty()) break;
    level = next;
  }
  return rule;
}

std::string rateLimitCacheKey(std::string_view domain, const Descriptor& d, uint32_t unitSeconds, uint64_t nowSec) {
  std::string key;
  size_t size = domain.size() + 24;
  for (const auto& e : d) size += e.key.size() + e.value.size() + 2;
  key.reserve(size);
  key.append(domain).push_back('_');
  for (const auto& e : d) {
    key.append(e.key).push_back('_');
    key.append(e.value).push_back('_');
  }
  const uint64_t unit = std::max<uint32_t>(1, unitSeconds);
  fmt::format_to(std::back_inserter(key), "{}", nowSec / unit * unit);
  return key;
}

void RateLimitPolicies::descriptors(bool onGateway, uint32_t listenerPort, std::string_view vhostName,
                                    std::string_view routeName, const RateLimitRequest& req,
                                    std::vector<Descriptor>& out) const {
  auto covers = [&](const Scoped& p) {
    return (onGateway ? p.gateway : p.outbound) && (!p.port || p.port == listenerPort) &&
           (p.vhostName.empty() || p.vhostName == vhostName) && (p.routeName.empty() || p.routeName == routeName);
  };
  bool routeHas = false;
  for (const Scoped& p : list) routeHas = routeHas || (p.routeLevel && covers(p));
  for (const Scoped& p : list) {
    if (p.routeLevel == routeHas && covers(p)) p.policy.build(req, out);
  }
}

bool RateLimitPolicies::reaches(bool gateway, bool outbound) const {
  for (const Scoped& p : list) {
    if ((p.gateway && gateway) || (p.outbound && outbound)) return true;
  }
  return false;
}

RateLimitPolicies compileRateLimitPolicies(const std::vector<config::EnvoyFilter>& filters,
                                           const std::optional<std::map<std::string, std::string>>& gatewayLabels,
                                           std::vector<std::string>& warnings) {
  RateLimitPolicies out;
  for (const config::EnvoyFilter* f : envoyFiltersInOrder(filters)) {
    for (const config::EnvoyFilterPatch& p : f->patches) {
      if (!p.mergesRateLimits) continue;
      const std::optional<PatchScope> scope = patchScope(*f, p, gatewayLabels, patchWhere(*f, p), warnings);
      if (!scope) continue;
      for (const auto& rl : p.rateLimits) {
        RateLimitPolicies::Scoped sp;
        sp.gateway = scope->gateway;
        sp.outbound = scope->outbound;
        sp.port = scope->port;
        sp.vhostName = p.vhostName;
        sp.routeName = p.routeName;
        sp.routeLevel = p.applyTo == "HTTP_ROUTE";
        sp.policy.actions = rl.actions;
        out.list.push_back(std::move(sp));
      }
    }
  }
  return out;
}

std::vector<std::shared_ptr<const GlobalRateLimit>> compileGlobalRateLimits(
    const std::vector<config::EnvoyFilter>& filters, const std::vector<config::RateLimitDomainConfig>& domains,
    const RateLimitPolicies& policies, const std::optional<std::map<std::string, std::string>>& gatewayLabels,
    const std::function<const Cluster*(std::string_view)>& findCluster, std::vector<std::string>& warnings) {
  std::vector<std::shared_ptr<const GlobalRateLimit>> out;
  for (const config::EnvoyFilter* f : envoyFiltersInOrder(filters)) {
    for (size_t i = 0; i < f->patches.size(); ++i) {
      const config::EnvoyFilterPatch& p = f->patches[i];
      if (!p.globalRateLimit) continue;
      const std::string where = patchWhere(*f, p);
      const std::optional<PatchScope> scope = patchScope(*f, p, gatewayLabels, where, warnings);
      if (!scope) continue;
      GlobalRateLimit l;
      l.origin = fmt::format("{}/{}#{}", f->metadata.namespace_, f->metadata.name, i);
      l.config = *p.globalRateLimit;
      l.gateway = scope->gateway;
      l.outbound = scope->outbound;
      l.port = scope->port;
      if (p.operation != "INSERT_BEFORE")
        warnings.push_back(where + ": " + p.operation + ": the rate limit runs just before the router");
      for (const auto& d : domains) {
        if (d.domain == l.config.domain) l.domain = std::make_shared<RateLimitDomain>(d);
      }
      if (!l.domain) {
        warnings.push_back(where + ": no rate limit configuration for domain \"" + l.config.domain +
                           "\" (a ConfigMap or file with `domain: " + l.config.domain + "`): " +
                           (l.config.serviceCluster.empty()
                                ? "nothing is limited"
                                : "only its rate_limit_service can decide (sluiced without --redis)"));
      }
      if (!l.config.serviceCluster.empty()) {
        l.service = findCluster(l.config.serviceCluster);
        if (!l.service)
          warnings.push_back(where + ": rate_limit_service cluster \"" + l.config.serviceCluster +
                             "\" is no cluster of this configuration: only --redis can decide its limits");
      }
      if (!policies.reaches(l.gateway, l.outbound))
        warnings.push_back(where + ": no rate_limits actions reach its listeners: nothing is limited");
      if (l.config.xEnvoyRateLimitedHeader) l.limitedHeaders.add("x-envoy-ratelimited", "true");
      out.push_back(std::make_shared<const GlobalRateLimit>(std::move(l)));
    }
  }
  return out;
}

}  // namespace sluice::route
