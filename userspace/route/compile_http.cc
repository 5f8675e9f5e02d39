// compile(), continued: a VirtualService's HTTP routes (delegates merged)
// and each route's actions – rewrite, header operations, retries, fault,
// CORS, mirrors.
#include <algorithm>

#include "route/compiler.h"
#include "route/delegate.h"

namespace sluice::route::detail {

// The routes a VirtualService's http[] stands for: its own, with each
// delegating route replaced by the delegate's routes merged with it (kept in
// the snapshot so Route::spec stays valid).
std::vector<Compiler::RouteSource> Compiler::routeSources(const config::VirtualService& vs,
                                                          const std::string& resource) {
  std::vector<RouteSource> out;
  for (size_t i = 0; i < vs.http.size(); ++i) {
    const config::HTTPRoute& http = vs.http[i];
    std::string path = "spec.http[" + std::to_string(i) + "]";
    if (!http.delegate) {
      out.push_back({&http, path, std::to_string(i)});
      continue;
    }
    auto cached = delegateCache_.find(&http);
    if (cached == delegateCache_.end()) {
      std::vector<const config::HTTPRoute*> merged;
      std::string ns = http.delegate->namespace_.empty() ? vs.metadata.namespace_ : http.delegate->namespace_;
      const config::VirtualService* target = nullptr;
      for (const config::VirtualService& d : snap_.resources.virtualServices) {
        if (d.metadata.name == http.delegate->name && d.metadata.namespace_ == ns && d.hosts.empty()) {
          target = &d;
          break;
        }
      }
      if (!target) {
        warn(resource + ": " + path + ": delegate " + ns + "/" + http.delegate->name +
             " is not a loaded delegate VirtualService (one without hosts); route skipped");
      } else {
        std::vector<std::string> warnings;
        for (config::HTTPRoute& r : mergeDelegate(http, *target, warnings)) {
          auto owned = std::make_unique<config::HTTPRoute>(std::move(r));
          merged.push_back(owned.get());
          snap_.syntheticRoutes.push_back(std::move(owned));
        }
        for (std::string& w : warnings) warn(resource + ": " + path + ": " + w);
      }
      cached = delegateCache_.emplace(&http, std::move(merged)).first;
    }
    for (size_t k = 0; k < cached->second.size(); ++k) {
      out.push_back({cached->second[k], path + ".delegate[" + std::to_string(k) + "]",
                     std::to_string(i) + "." + std::to_string(k)});
    }
  }
  return out;
}

// Compiles the actions of `http` into `r`; false (with an error recorded)
// when one of them cannot be built.
bool Compiler::compileActions(Route& r, const config::HTTPRoute& http, const config::VirtualService& vs,
                              const std::string& resource, const std::string& path, uint32_t port) {
  auto fail = [&](const std::string& field, const std::string& msg) {
    errors_.push_back(config::ConfigError{http.source.file.empty() ? vs.source.file : http.source.file,
                                          http.source.line ? http.source.line : vs.source.line, resource,
                                          path + "." + field, msg});
    return false;
  };
  if (http.rewrite) {
    auto rw = PathRewrite::compile(*http.rewrite);
    if (!rw) return fail("rewrite", rw.error());
    r.rewrite = std::move(*rw);
  }
  bool idempotentOnly = false;
  if (auto it = vs.metadata.annotations.find("sluice.io/idempotent-retries-only");
      it != vs.metadata.annotations.end() && it->second == "true")
    idempotentOnly = true;
  auto retry = RetryPolicy::compile(http.retries, idempotentOnly);
  if (!retry) return fail("retries", retry.error());
  r.retry = std::move(*retry);
  // Istio leaves out the previous-hosts retry predicate when the
  // destination hashes: a retry goes back to the host the key maps to.
  if (!(http.retries && http.retries->retryIgnorePreviousHosts)) {
    for (const WeightedCluster& wc : r.clusters) {
      if (wc.cluster && wc.cluster->hash) r.retry.ignorePreviousHosts = false;
    }
  }
  if (http.fault) r.fault = FaultPolicy::compile(*http.fault);
  if (http.corsPolicy) {
    auto cors = CorsPolicy::compile(*http.corsPolicy);
    if (!cors) return fail("corsPolicy", cors.error());
    r.cors = std::move(*cors);
  }
  // mirror: absent percentage mirrors everything, an explicit 0 nothing.
  auto ppmOf = [](const std::optional<config::Percent>& p, std::optional<int32_t> legacy) -> uint32_t {
    if (p) return uint32_t(std::clamp(p->value, 0.0, 100.0) * 10'000.0 + 0.5);
    if (legacy) return uint32_t(std::clamp(*legacy, 0, 100)) * 10'000u;
    return 1'000'000u;
  };
  auto addMirror = [&](const config::Destination& d, uint32_t ppm, const std::string& field) {
    if (ppm == 0) return;
    const Cluster* c = cluster(d, port, resource + ": " + path + "." + field);
    r.mirrors.push_back(Route::Mirror{c, ppm});
  };
  if (http.mirror) addMirror(*http.mirror, ppmOf(http.mirrorPercentage, http.mirrorPercent), "mirror");
  for (size_t m = 0; m < http.mirrors.size(); ++m) {
    addMirror(http.mirrors[m].destination, ppmOf(http.mirrors[m].percentage, std::nullopt),
              "mirrors[" + std::to_string(m) + "]");
  }
  const config::HeaderOperations* routeReq =
      http.headers && http.headers->request ? &*http.headers->request : nullptr;
  const config::HeaderOperations* routeResp =
      http.headers && http.headers->response ? &*http.headers->response : nullptr;
  auto mutation = [&](const config::HeaderOperations* dest, const config::HeaderOperations* route,
                      const std::string& field, std::shared_ptr<const HeaderMutation>& out) {
    const config::HeaderOperations* levels[] = {dest, route};
    auto m = HeaderMutation::compile(levels);
    if (!m) return fail(field, m.error());
    if (!m->empty()) out = std::make_shared<const HeaderMutation>(std::move(*m));
    return true;
  };
  if (!mutation(nullptr, routeResp, "headers.response", r.localResponseHeaders)) return false;
  for (size_t k = 0; k < r.clusters.size(); ++k) {
    WeightedCluster& wc = r.clusters[k];
    const config::HTTPRouteDestination& d = *wc.spec;
    const config::HeaderOperations* destReq = d.headers && d.headers->request ? &*d.headers->request : nullptr;
    const config::HeaderOperations* destResp = d.headers && d.headers->response ? &*d.headers->response : nullptr;
    std::string field = "route[" + std::to_string(k) + "].headers";
    if (!mutation(destReq, routeReq, field + ".request", wc.requestHeaders)) return false;
    if (!mutation(destResp, routeResp, field + ".response", wc.responseHeaders)) return false;
  }
  return true;
}

void Compiler::addRoutes(VirtualHost& vh, const config::VirtualService& vs, uint32_t port,
                         std::string_view gateway) {
  std::string resource = resourceName("VirtualService", vs.metadata);
  for (const RouteSource& src : routeSources(vs, resource)) {
    const config::HTTPRoute& http = *src.spec;
    const std::string& path = src.path;
    Route r;
    r.name = http.name.empty() ? vs.metadata.name + "." + src.index : http.name;
    r.spec = &http;
    r.virtualService = &vs;
    if (http.redirect) r.redirect = Redirect::compile(*http.redirect);
    if (http.directResponse)
      r.directResponse = DirectResponse{http.directResponse->status, http.directResponse->body.value_or("")};
    r.timeout = http.timeout;
    if (auto it = vs.metadata.annotations.find("sluice.io/sticky-weighted-split");
        it != vs.metadata.annotations.end() && it->second == "true")
      r.stickySplit = true;
    bool ok = true;
    for (size_t j = 0; j < http.match.size(); ++j) {
      const config::HTTPMatchRequest* m = &http.match[j];
      if (badMatches_.contains(m)) {
        ok = false;
        continue;
      }
      auto cached = matchCache_.find(m);
      if (cached == matchCache_.end()) {
        auto compiled = CompiledMatch::compile(*m);
        if (!compiled) {
          badMatches_.insert(m);
          errors_.push_back(config::ConfigError{
              http.source.file.empty() ? vs.source.file : http.source.file,
              http.source.line ? http.source.line : vs.source.line, resource,
              path + ".match[" + std::to_string(j) + "]", compiled.error()});
          ok = false;
          continue;
        }
        cached = matchCache_.emplace(m, std::move(*compiled)).first;
      }
      const CompiledMatch& cm = *cached->second;
      // Blocks that cannot match on this port or for this gateway's (or
      // the mesh's) traffic are left out, as Istio leaves them out.
      if (!cm.reachable() || !cm.appliesTo(gateway) || (cm.port() && *cm.port() != port)) continue;
      r.matches.push_back(cached->second);
    }
    if (!ok) continue;
    if (!http.match.empty() && r.matches.empty()) continue;  // nothing left that can match here
    if (!http.redirect && !http.directResponse) {
      for (size_t k = 0; k < http.route.size(); ++k) {
        const config::HTTPRouteDestination& d = http.route[k];
        WeightedCluster wc;
        wc.cluster = cluster(d.destination, port, resource + ": " + path + ".route[" + std::to_string(k) + "]");
        wc.spec = &d;
        // One destination takes all traffic whatever its weight says;
        // among several, weight/sum and zero-weight ones get nothing.
        if (http.route.size() == 1) {
          wc.weight = d.weightSet && d.weight > 0 ? static_cast<uint32_t>(d.weight) : 100;
        } else {
          wc.weight = d.weight > 0 ? static_cast<uint32_t>(d.weight) : 0;
        }
        r.totalWeight += wc.weight;
        r.clusters.push_back(wc);
      }
      if (!r.clusters.empty() && r.totalWeight == 0) {
        warn(resource + ": " + path + ": every destination has weight 0; requests get 503");
      }
    }
    if (!compileActions(r, http, vs, resource, path, port)) continue;
    vh.routes.push_back(std::move(r));
  }
}

void Compiler::addDefaultRoute(VirtualHost& vh, const std::string& host, uint32_t port) {
  auto spec = std::make_unique<config::HTTPRoute>();
  spec->name = "default";
  config::HTTPRouteDestination d;
  d.destination.host = host;
  d.destination.port = config::PortSelector{port};
  spec->route.push_back(std::move(d));
  Route r;
  r.name = "default";
  r.spec = spec.get();
  r.clusters.push_back(WeightedCluster{serviceCluster(host, port, host), 100, &spec->route[0]});
  r.totalWeight = 100;
  vh.routes.push_back(std::move(r));
  snap_.syntheticRoutes.push_back(std::move(spec));
}

}  // namespace sluice::route::detail
