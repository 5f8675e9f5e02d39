#include "route/rate_limit.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "route/compiler.h"

namespace sluice::route {

LocalRateLimitState::LocalRateLimitState(const config::LocalRateLimitConfig& c, uint64_t startNs) {
  if (c.hasBucket)
    bucket = std::make_unique<TokenBucket>(c.maxTokens, c.tokensPerFill, uint64_t(c.fillInterval.count()), startNs);
  for (const auto& d : c.descriptors) {
    descriptorBuckets.push_back(
        std::make_unique<TokenBucket>(d.maxTokens, d.tokensPerFill, uint64_t(d.fillInterval.count()), startNs));
    descriptorOrder.push_back(uint32_t(descriptorOrder.size()));
  }
  // Tokens per second, compared without division: a/b < c/d.
  std::stable_sort(descriptorOrder.begin(), descriptorOrder.end(), [&](uint32_t x, uint32_t y) {
    const auto& a = c.descriptors[x];
    const auto& b = c.descriptors[y];
    return __uint128_t(a.tokensPerFill) * uint64_t(b.fillInterval.count()) <
           __uint128_t(b.tokensPerFill) * uint64_t(a.fillInterval.count());
  });
}

bool LocalRateLimitState::take(const config::LocalRateLimitConfig& c, const std::vector<Descriptor>& descriptors,
                               uint64_t nowNs) {
  bool matched = false;
  for (uint32_t i : descriptorOrder) {
    const auto& want = c.descriptors[i].entries;
    const bool hit = std::any_of(descriptors.begin(), descriptors.end(), [&](const Descriptor& d) {
      return d.size() == want.size() &&
             std::equal(d.begin(), d.end(), want.begin(), [](const DescriptorEntry& e, const auto& w) {
               return e.key == w.first && e.value == w.second;
             });
    });
    if (!hit) continue;
    matched = true;
    if (!descriptorBuckets[i]->take(nowNs)) return false;
  }
  if (bucket && (!matched || c.alwaysConsumeDefault)) return bucket->take(nowNs);
  return true;
}

bool LocalRateLimit::sameBucket(const LocalRateLimit& o) const {
  auto sameDescriptors = [](const config::LocalRateLimitConfig& a, const config::LocalRateLimitConfig& b) {
    if (a.descriptors.size() != b.descriptors.size()) return false;
    for (size_t i = 0; i < a.descriptors.size(); ++i) {
      const auto &x = a.descriptors[i], &y = b.descriptors[i];
      if (x.entries != y.entries || x.maxTokens != y.maxTokens || x.tokensPerFill != y.tokensPerFill ||
          x.fillInterval != y.fillInterval)
        return false;
    }
    return true;
  };
  return origin == o.origin && perRoute == o.perRoute && httpRoute == o.httpRoute && vhostName == o.vhostName &&
         routeName == o.routeName && filterName == o.filterName && config.statPrefix == o.config.statPrefix &&
         config.hasBucket == o.config.hasBucket &&
         config.maxTokens == o.config.maxTokens && config.tokensPerFill == o.config.tokensPerFill &&
         config.fillInterval == o.config.fillInterval && sameDescriptors(config, o.config);
}

const LocalRateLimit& effectiveLocalRateLimit(const LocalRateLimit& limit,
                                              const std::vector<std::shared_ptr<LocalRateLimit>>& all,
                                              bool onGateway, uint32_t port, std::string_view vhost,
                                              std::string_view route) {
  if (!limit.hasPerRoute) return limit;
  const LocalRateLimit* best = nullptr;
  for (const auto& l : all) {
    if (!l->perRoute || l->filterName != limit.filterName || !l->covers(vhost, route) || !l->stateFor(onGateway, port))
      continue;
    // A route's beats a virtual host's; among equals, the one applied last.
    if (!best || l->httpRoute || !best->httpRoute) best = l.get();
  }
  return best ? *best : limit;
}

bool TokenBucket::take(uint64_t nowNs) {
  // Credit the intervals that passed. One thread wins each advance of
  // fills_ and adds exactly those intervals' tokens; the others go on.
  const uint64_t due = nowNs > startNs_ ? (nowNs - startNs_) / intervalNs_ : 0;
  uint64_t done = fills_.load(std::memory_order_acquire);
  while (due > done) {
    if (fills_.compare_exchange_weak(done, due, std::memory_order_acq_rel)) {
      const uint64_t intervals = due - done;
      // Saturates: more intervals than it takes to fill it fill it.
      const uint64_t add = intervals >= (max_ + perFill_ - 1) / perFill_ ? max_ : intervals * perFill_;
      uint64_t t = tokens_.load(std::memory_order_relaxed);
      while (!tokens_.compare_exchange_weak(t, std::min(max_, t + add), std::memory_order_acq_rel)) {
      }
      break;
    }
  }
  uint64_t t = tokens_.load(std::memory_order_relaxed);
  while (t > 0) {
    if (tokens_.compare_exchange_weak(t, t - 1, std::memory_order_acq_rel)) return true;
  }
  return false;
}

namespace {

// The answer's fields, as Envoy's response_headers_to_add would leave them
// on its local reply (which carries no field of these names to start with).
void buildResponseHeaders(LocalRateLimit& l) {
  l.responseHeaders.add("x-envoy-ratelimited", "true");
  for (const auto& h : l.config.responseHeaders) {
    const std::string_view name = h.name, value = h.value;
    if (value.empty() && !h.keepEmptyValue) continue;
    if (h.appendAction == "APPEND_IF_EXISTS_OR_ADD") {
      l.responseHeaders.add(name, value);
    } else if (h.appendAction == "ADD_IF_ABSENT") {
      if (!l.responseHeaders.has(name)) l.responseHeaders.add(name, value);
    } else if (h.appendAction == "OVERWRITE_IF_EXISTS_OR_ADD") {
      l.responseHeaders.set(name, value);
    } else if (l.responseHeaders.has(name)) {  // OVERWRITE_IF_EXISTS
      l.responseHeaders.set(name, value);
    }
  }
}

}  // namespace

std::optional<PatchScope> patchScope(const config::EnvoyFilter& f, const config::EnvoyFilterPatch& p,
                                     const std::optional<std::map<std::string, std::string>>& gatewayLabels,
                                     const std::string& where, std::vector<std::string>& warnings) {
  if (p.context == "SIDECAR_INBOUND") {
    warnings.push_back(where + ": SIDECAR_INBOUND: sluiced has no inbound listener: ignored");
    return std::nullopt;
  }
  PatchScope scope;
  scope.port = p.portNumber.value_or(0);
  const bool any = p.context == "ANY";
  scope.gateway = any || p.context == "GATEWAY";
  scope.outbound = any || p.context == "SIDECAR_OUTBOUND";
  if (!f.workloadSelector.empty()) {
    // The gateway workload's labels are known (--gateway-labels) or it is
    // every gateway; an application pod's are not, so a selector cannot
    // narrow the outbound listener.
    if (scope.gateway && gatewayLabels && !detail::labelsContain(*gatewayLabels, f.workloadSelector))
      scope.gateway = false;
    if (scope.outbound) {
      scope.outbound = false;
      warnings.push_back(where +
                         ": a workloadSelector cannot select outbound traffic on a node proxy: it applies to Gateway "
                         "listeners only");
    }
  }
  if (!scope.gateway && !scope.outbound) return std::nullopt;
  return scope;
}

std::vector<const config::EnvoyFilter*> envoyFiltersInOrder(const std::vector<config::EnvoyFilter>& filters) {
  std::vector<const config::EnvoyFilter*> ordered;
  for (const auto& f : filters) ordered.push_back(&f);
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const config::EnvoyFilter* a, const config::EnvoyFilter* b) { return a->priority < b->priority; });
  return ordered;
}

std::string patchWhere(const config::EnvoyFilter& f, const config::EnvoyFilterPatch& p) {
  return fmt::format("EnvoyFilter {}/{} ({}:{})", f.metadata.namespace_, f.metadata.name, f.source.file, p.line);
}

std::vector<std::shared_ptr<LocalRateLimit>> compileLocalRateLimits(
    const std::vector<config::EnvoyFilter>& filters,
    const std::optional<std::map<std::string, std::string>>& gatewayLabels, const std::vector<uint32_t>& gatewayPorts,
    const std::vector<uint32_t>& outboundPorts, uint64_t nowNs, std::vector<std::string>& warnings) {
  std::vector<std::shared_ptr<LocalRateLimit>> out;
  for (const config::EnvoyFilter* f : envoyFiltersInOrder(filters)) {
    for (size_t i = 0; i < f->patches.size(); ++i) {
      const config::EnvoyFilterPatch& p = f->patches[i];
      const std::string where = patchWhere(*f, p);
      if (!p.localRateLimit) {
        // A global filter or rate_limits alone: global_rate_limit.h's.
        if (!p.globalRateLimit && !p.mergesRateLimits)
          warnings.push_back(fmt::format("{}: {} is not supported by sluice: ignored", where, p.unsupported));
        continue;
      }
      const std::optional<PatchScope> scope = patchScope(*f, p, gatewayLabels, where, warnings);
      if (!scope) continue;
      auto l = std::make_shared<LocalRateLimit>();
      l->origin = fmt::format("{}/{}#{}", f->metadata.namespace_, f->metadata.name, i);
      l->config = *p.localRateLimit;
      l->port = scope->port;
      l->gateway = scope->gateway;
      l->outbound = scope->outbound;
      l->perRoute = p.applyTo != "HTTP_FILTER";
      l->httpRoute = p.applyTo == "HTTP_ROUTE";
      l->vhostName = p.vhostName;
      l->routeName = p.routeName;
      l->filterName = p.filterName;
      if (!l->perRoute && p.operation != "INSERT_BEFORE")
        warnings.push_back(where + ": " + p.operation + ": the local rate limit runs just before the router");
      auto addStates = [&](bool onGateway, const std::vector<uint32_t>& ports) {
        for (uint32_t port : ports) {
          if (l->port && l->port != port) continue;
          l->states.emplace(LocalRateLimit::listenerKey(onGateway, port),
                            std::make_shared<LocalRateLimitState>(l->config, nowNs));
        }
      };
      if (l->gateway) addStates(true, gatewayPorts);
      if (l->outbound) addStates(false, outboundPorts);
      if (l->states.empty()) continue;  // no listener it applies to
      buildResponseHeaders(*l);
      out.push_back(std::move(l));
    }
  }
  // Which per-route limits can replace which listener filter's settings
  // (same filter name, a listener in common); a filter with no bucket of
  // its own limits only there, and a per-route limit no filter takes
  // limits nothing.
  auto shareListener = [](const LocalRateLimit& a, const LocalRateLimit& b) {
    for (const auto& [key, state] : a.states) {
      if (b.states.count(key)) return true;
    }
    return false;
  };
  for (const auto& r : out) {
    if (!r->perRoute) continue;
    bool taken = false;
    for (const auto& l : out) {
      if (l->perRoute || l->filterName != r->filterName || !shareListener(*l, *r)) continue;
      l->hasPerRoute = true;
      taken = true;
    }
    if (!taken)
      warnings.push_back(fmt::format("EnvoyFilter {}: per-route local rate limit \"{}\" configures filter \"{}\", "
                                     "which no listener it reaches has: it limits nothing",
                                     r->origin, r->config.statPrefix, r->filterName));
  }
  for (const auto& l : out) {
    if (l->perRoute || l->config.hasBucket || !l->config.descriptors.empty()) continue;
    if (!l->hasPerRoute)
      warnings.push_back(fmt::format("EnvoyFilter {}: local rate limit \"{}\" has no token_bucket and no per-route "
                                     "limit reaches its listeners: it limits nothing",
                                     l->origin, l->config.statPrefix));
  }
  return out;
}

void inheritRateLimitState(const std::vector<std::shared_ptr<LocalRateLimit>>& next,
                           const std::vector<std::shared_ptr<LocalRateLimit>>& prev) {
  for (const auto& n : next) {
    for (const auto& p : prev) {
      if (!n->sameBucket(*p)) continue;
      for (auto& [key, state] : n->states) {
        if (auto it = p->states.find(key); it != p->states.end()) state = it->second;
      }
      break;
    }
  }
}

namespace {

// Limits that share a stat_prefix share their counters, as in Envoy.
std::map<std::string, std::array<uint64_t, 4>> countersByPrefix(
    const std::vector<std::shared_ptr<LocalRateLimit>>& limits) {
  std::map<std::string, std::array<uint64_t, 4>> out;
  for (const auto& l : limits) {
    auto& c = out[l->config.statPrefix];
    for (const auto& [key, state] : l->states) {
      const LocalRateLimitState& s = *state;
      c[0] += s.enabled.load(std::memory_order_relaxed);
      c[1] += s.enforced.load(std::memory_order_relaxed);
      c[2] += s.ok.load(std::memory_order_relaxed);
      c[3] += s.rateLimited.load(std::memory_order_relaxed);
    }
  }
  return out;
}

constexpr const char* kCounterNames[4] = {"enabled", "enforced", "ok", "rate_limited"};

std::string labelValue(std::string_view v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

}  // namespace

std::string renderRateLimitText(const std::vector<std::shared_ptr<LocalRateLimit>>& limits) {
  std::string out;
  for (const auto& [prefix, c] : countersByPrefix(limits)) {
    for (size_t i = 0; i < 4; ++i) out += fmt::format("{}.http_local_rate_limit.{}: {}\n", prefix, kCounterNames[i], c[i]);
  }
  return out;
}

std::string renderRateLimitPrometheus(const std::vector<std::shared_ptr<LocalRateLimit>>& limits) {
  if (limits.empty()) return {};
  const auto counters = countersByPrefix(limits);
  std::string out;
  for (size_t i = 0; i < 4; ++i) {
    out += fmt::format("# TYPE envoy_http_local_rate_limit_{} counter\n", kCounterNames[i]);
    for (const auto& [prefix, c] : counters) {
      out += fmt::format("envoy_http_local_rate_limit_{}{{envoy_local_http_ratelimit_prefix=\"{}\"}} {}\n",
                         kCounterNames[i], labelValue(prefix), c[i]);
    }
  }
  return out;
}

}  // namespace sluice::route
