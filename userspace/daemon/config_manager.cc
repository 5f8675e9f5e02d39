#include "daemon/config_manager.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "config/loader.h"
#include "proxy/request_util.h"
#include "route/match.h"
#include "tls/credential_store.h"

namespace sluice::daemon {

using nlohmann::json;

ConfigManager::ConfigManager(std::string dir, proxy::Engine& engine, tls::CredentialStore* credentials)
    : dir_(std::move(dir)), engine_(engine), credentials_(credentials) {}

namespace {
std::string render(const std::vector<config::ConfigError>& errs) {
  std::string text;
  for (const auto& e : errs) text += e.str() + "\n";
  if (!text.empty()) text.pop_back();
  return text;
}

// The same files serving the same versions of themselves.
bool sameServing(const config::GoodFiles& a, const config::GoodFiles& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first || ia->second != ib->second) return false;
  }
  return true;
}
}  // namespace

bool ConfigManager::reload() {
  std::lock_guard reloading(reloadMu_);
  auto fail = [&](const std::string& text) {
    fprintf(stderr, "sluiced: config rejected, keeping the last good configuration (version %lu):\n%s\n",
            static_cast<unsigned long>(version()), text.c_str());
    std::lock_guard lock(mu_);
    lastError_ = text;
    lastErrorTime_ = proxy::formatLogTime();
    engine_.stats().configReloadFail++;
    return false;
  };
  auto loaded = config::loadDirectoryIsolated(dir_, goodFiles_);
  if (!loaded) return fail(render(loaded.error()));
  const std::string fileErrors = render(loaded->errors);
  auto noteFiles = [&] {
    std::lock_guard lock(mu_);
    heldBack_ = loaded->heldBack;
    leftOut_ = loaded->leftOut;
  };
  // Nothing changed: what serves stays as it is (no new version). With
  // invalid files among them, that is a rejected reload.
  if (loadedOnce() && sameServing(loaded->serving, goodFiles_)) {
    noteFiles();
    if (!fileErrors.empty()) return fail(fileErrors);
    std::lock_guard lock(mu_);
    lastError_.clear();
    return false;
  }
  for (const std::string& w : loaded->report.warnings) fprintf(stderr, "sluiced: config: %s\n", w.c_str());
  uint64_t next;
  {
    std::lock_guard lock(mu_);
    next = version_ + 1;
  }
  auto compiled = route::compile(std::move(loaded->report.resources), next,
                                 {engine_.options().gatewayLabels, engine_.options().gatewayBind.s_addr,
                                  credentials_});
  if (!compiled) {
    std::string text = render(compiled.error());
    if (!fileErrors.empty()) text += "\n" + fileErrors;
    return fail(text);
  }
  for (const std::string& w : (*compiled)->warnings) fprintf(stderr, "sluiced: config: %s\n", w.c_str());
  // Rate limits that did not change keep their buckets and counts.
  if (auto prev = snapshot()) route::inheritRateLimitState((*compiled)->localRateLimits, prev->localRateLimits);
  goodFiles_ = std::move(loaded->serving);
  noteFiles();
  // The engine first (it opens gateway listeners and records their status),
  // so whoever sees the new version sees what serves it.
  engine_.publish(*compiled);
  {
    std::lock_guard lock(mu_);
    snapshot_ = *compiled;
    version_ = next;
    loaded_ = true;
    lastError_ = fileErrors;
    if (!fileErrors.empty()) lastErrorTime_ = proxy::formatLogTime();
    loadedAt_ = proxy::formatLogTime();
  }
  if (!fileErrors.empty()) {
    fprintf(stderr,
            "sluiced: config: invalid files keep their last good version (or stay out); the rest applies:\n%s\n",
            fileErrors.c_str());
  }
  engine_.stats().configReloadOk++;
  std::function<void(const route::Snapshot&)> hook;
  {
    std::lock_guard lock(mu_);
    hook = onPublish_;
  }
  if (hook) hook(**compiled);
  const auto& r = (*compiled)->resources;
  fprintf(stderr,
          "sluiced: config version %lu loaded: %zu VirtualService, %zu DestinationRule, %zu ServiceEntry, "
          "%zu WorkloadEntry, %zu Gateway, %zu Kubernetes Service (%zu EndpointSlice, %zu Pod)\n",
          static_cast<unsigned long>(next), r.virtualServices.size(), r.destinationRules.size(),
          r.serviceEntries.size(), r.workloadEntries.size(), r.gateways.size(), r.kubeServices.size(),
          r.endpointSlices.size(), r.pods.size());
  return true;
}

bool ConfigManager::loadedOnce() const {
  std::lock_guard lock(mu_);
  return loaded_;
}

uint64_t ConfigManager::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

std::string ConfigManager::lastError() const {
  std::lock_guard lock(mu_);
  return lastError_;
}

std::shared_ptr<const route::Snapshot> ConfigManager::snapshot() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

namespace {

const char* lbName(route::LbPolicy p) {
  switch (p) {
    case route::LbPolicy::RoundRobin: return "ROUND_ROBIN";
    case route::LbPolicy::Random: return "RANDOM";
    case route::LbPolicy::LeastRequest: return "LEAST_REQUEST";
    case route::LbPolicy::RingHash: return "RING_HASH";
    case route::LbPolicy::Maglev: return "MAGLEV";
    case route::LbPolicy::Passthrough: return "PASSTHROUGH";
  }
  return "LEAST_REQUEST";
}

json meta(const config::ObjectMeta& m, const config::SourceRef& src) {
  return {{"name", m.name}, {"namespace", m.namespace_}, {"file", src.file}, {"line", src.line}};
}

}  // namespace

// One route table's virtual hosts, sorted by name, with their routes.
static json virtualHostsJson(const route::RouteConfig& rc) {
  std::vector<const route::VirtualHost*> vhs;
  for (const auto& [host, vh] : rc.exact) {
    if (std::find(vhs.begin(), vhs.end(), vh) == vhs.end()) vhs.push_back(vh);
  }
  for (const auto& [suffix, vh] : rc.wildcards) {
    if (std::find(vhs.begin(), vhs.end(), vh) == vhs.end()) vhs.push_back(vh);
  }
  if (rc.star && std::find(vhs.begin(), vhs.end(), rc.star) == vhs.end()) vhs.push_back(rc.star);
  std::sort(vhs.begin(), vhs.end(), [](auto* a, auto* b) { return a->name < b->name; });
  json jv = json::array();
  for (const route::VirtualHost* vh : vhs) {
    json rs = json::array();
    for (const route::Route& r : vh->routes) {
      json cl = json::array();
      for (const auto& wc : r.clusters) cl.push_back({{"cluster", wc.cluster->name}, {"weight", wc.weight}});
      json jr = {{"name", r.name}, {"matches", r.matches.size()}, {"clusters", cl}};
      if (r.timeout) jr["timeout_ms"] = r.timeout->count() / 1'000'000;
      if (r.spec && r.spec->redirect) jr["redirect"] = true;
      if (r.spec && r.spec->directResponse) jr["direct_response"] = r.spec->directResponse->status;
      // The effective retry policy (Istio's default when the route has
      // none), so a user can see what will be retried.
      json retry = {{"num_retries", r.retry.numRetries}, {"retry_on_bits", r.retry.retryOn},
                    {"retriable_status_codes", r.retry.retriableStatusCodes},
                    {"ignore_previous_hosts", r.retry.ignorePreviousHosts}};
      if (r.retry.perTryTimeoutNs) retry["per_try_timeout_ms"] = r.retry.perTryTimeoutNs / 1'000'000;
      if (r.retry.idempotentOnly) retry["idempotent_only"] = true;
      jr["retry_policy"] = retry;
      if (r.fault) jr["fault"] = {{"delay", r.fault->hasDelay()}, {"abort", r.fault->hasAbort()}};
      if (!r.mirrors.empty()) {
        json ms = json::array();
        for (const auto& m : r.mirrors)
          ms.push_back({{"cluster", m.cluster ? m.cluster->name : ""}, {"percent", m.ppm / 10'000.0}});
        jr["mirrors"] = ms;
      }
      if (r.rewrite) jr["rewrite"] = true;
      if (r.cors) jr["cors"] = true;
      rs.push_back(jr);
    }
    json jvh = {{"name", vh->name}, {"domains", vh->domains}, {"routes", rs}};
    if (vh->httpsRedirect) jvh["https_redirect"] = true;
    jv.push_back(std::move(jvh));
  }
  return jv;
}

// One HTTPS server: its SNI names, routes and certificate as loaded now
// (subject, SANs, validity; never key material).
static json tcpRouteJson(const route::TcpRoute& r) {
  json cl = json::array();
  for (const auto& d : r.clusters) cl.push_back({{"cluster", d.cluster ? d.cluster->name : ""}, {"weight", d.weight}});
  return cl;
}

static json tlsServerJson(const route::GatewayTlsServer& t) {
  json j = {{"server", t.label}, {"server_names", t.serverNames}};
  if (t.passthrough) {
    j["passthrough"] = true;
    json routes = json::array();
    for (const auto& r : t.sniRoutes) routes.push_back({{"sni_hosts", r.sniHosts}, {"clusters", tcpRouteJson(r.route)}});
    j["sni_routes"] = std::move(routes);
    return j;
  }
  if (t.tcpRoute) {
    j["tcp_route"] = tcpRouteJson(*t.tcpRoute);
  } else {
    j["virtual_hosts"] = virtualHostsJson(t.routes);
  }
  if (!t.credentials) {
    j["certificate_error"] = "no credential store";
    return j;
  }
  const tls::Files files = t.credentials->files();
  j["certificate_file"] = files.cert;
  if (!files.ca.empty()) j["ca_file"] = files.ca;
  if (auto ctx = t.credentials->current()) {
    const tls::CertificateInfo& info = ctx->info();
    j["certificate"] = {{"subject", info.subject},     {"subject_alt_names", info.subjectAltNames},
                        {"not_before", info.notBefore}, {"not_after", info.notAfter},
                        {"serial", info.serial}};
  }
  if (std::string e = t.credentials->error(); !e.empty()) j["certificate_error"] = e;
  return j;
}

std::string ConfigManager::dumpJson() const {
  std::lock_guard lock(mu_);
  json j;
  j["version"] = version_;
  j["last_error"] = lastError_;
  j["last_error_time"] = lastErrorTime_;
  j["loaded_at"] = loadedAt_;
  // Files with errors: "last_good" (that version serves) or "none".
  json rejected = json::array();
  for (const auto& f : heldBack_) rejected.push_back({{"file", f}, {"serving", "last_good"}});
  for (const auto& f : leftOut_) rejected.push_back({{"file", f}, {"serving", "none"}});
  j["rejected_files"] = rejected;
  if (!snapshot_) {
    j["resources"] = json::object();
    return j.dump(2);
  }
  const route::Snapshot& s = *snapshot_;
  json res;
  res["files"] = s.resources.files;
  for (const auto& vs : s.resources.virtualServices) {
    json v = meta(vs.metadata, vs.source);
    v["hosts"] = vs.hosts;
    v["gateways"] = vs.gateways;
    v["http_routes"] = vs.http.size();
    res["virtual_services"].push_back(v);
  }
  for (const auto& dr : s.resources.destinationRules) {
    json v = meta(dr.metadata, dr.source);
    v["host"] = dr.host;
    json subsets = json::array();
    for (const auto& sub : dr.subsets) subsets.push_back({{"name", sub.name}, {"labels", sub.labels}});
    v["subsets"] = subsets;
    res["destination_rules"].push_back(v);
  }
  auto service = [&](const config::ServiceEntry& se) {
    json v = meta(se.metadata, se.source);
    v["hosts"] = se.hosts;
    v["addresses"] = se.addresses;
    json ports = json::array();
    for (const auto& p : se.ports) ports.push_back({{"number", p.number}, {"protocol", p.protocol}, {"name", p.name}});
    v["ports"] = ports;
    return v;
  };
  for (const auto& se : s.resources.serviceEntries) res["service_entries"].push_back(service(se));
  // Services the Kubernetes registry built (Service + EndpointSlices + Pods).
  res["kubernetes_services"] = json::array();
  for (const auto& se : s.kubernetesServices) {
    json v = service(se);
    json endpoints = json::array();
    for (const auto& e : se.endpoints)
      endpoints.push_back({{"address", e.address}, {"ports", e.ports}, {"labels", e.labels}});
    v["endpoints"] = endpoints;
    res["kubernetes_services"].push_back(v);
  }
  for (const auto& we : s.resources.workloadEntries) {
    json v = meta(we.metadata, we.source);
    v["address"] = we.address;
    v["labels"] = we.labels;
    res["workload_entries"].push_back(v);
  }
  for (const auto& gw : s.resources.gateways) res["gateways"].push_back(meta(gw.metadata, gw.source));
  for (const auto& ef : s.resources.envoyFilters) res["envoy_filters"].push_back(meta(ef.metadata, ef.source));
  for (const auto& rl : s.resources.rateLimitDomains)
    res["rate_limit_domains"].push_back({{"domain", rl.domain}, {"file", rl.source.file}, {"line", rl.source.line}});
  j["resources"] = res;

  json routes = json::array();
  std::vector<uint32_t> ports;
  for (const auto& [port, rc] : s.routeConfigs) ports.push_back(port);
  std::sort(ports.begin(), ports.end());
  for (uint32_t port : ports) {
    routes.push_back({{"port", port}, {"virtual_hosts", virtualHostsJson(s.routeConfigs.at(port))}});
  }
  json listeners = json::array();
  auto status = engine_.gatewayListenerStatus();
  for (const auto& l : s.gatewayListeners) {
    json jl = {{"port", l->port}, {"servers", l->servers}};
    if (l->tcp()) {
      jl["tcp_route"] = tcpRouteJson(*l->tcpRoute);
    } else if (!l->tls()) {
      jl["virtual_hosts"] = virtualHostsJson(l->routes);
    }
    for (const auto& t : l->tlsServers) jl["tls_servers"].push_back(tlsServerJson(*t));
    if (auto it = status.find(l->key); it != status.end()) {
      jl["address"] = it->second.address;
      jl["listening"] = it->second.error.empty();
      if (!it->second.error.empty()) jl["error"] = it->second.error;
    }
    listeners.push_back(std::move(jl));
  }
  j["gateway_listeners"] = listeners;
  j["routes"] = routes;
  j["warnings"] = s.warnings;
  return j.dump(2);
}

std::string ConfigManager::clustersJson() const {
  proxy::Published pub = engine_.published();
  const auto& snap = pub.snapshot;
  const auto& healthTable = pub.health;
  auto active = engine_.activeRequests();
  json out = json::array();
  if (snap) {
    for (const auto& c : snap->clusters) {
      const upstream::ClusterHealth* health =
          healthTable && c->index < healthTable->size() ? (*healthTable)[c->index].get() : nullptr;
      json eps = json::array();
      for (size_t i = 0; i < c->endpoints.size(); ++i) {
        const auto& ep = c->endpoints[i];
        auto it = active.find(ep.key);
        auto v = health ? health->view(i) : upstream::ClusterHealth::EndpointView{};
        eps.push_back({{"address", ep.key},
                       {"labels", ep.labels},
                       {"weight", ep.weight},
                       {"health", v.ejected ? "EJECTED" : "HEALTHY"},
                       {"ejected", v.ejected},
                       {"ejections", v.ejections},
                       {"active_requests", it == active.end() ? 0 : it->second}});
      }
      json cluster = {{"name", c->name}, {"service", c->serviceHost}, {"subset", c->subset}, {"port", c->port},
                      {"lb_policy", lbName(c->lb)}, {"missing", c->missing}, {"endpoints", eps}};
      if (c->upstream.tls) {
        // Upstream TLS as it is now: SNI, the files, the client
        // certificate presented (never key material), or why it fails.
        json t = {{"enabled", true}};
        if (const auto& cred = c->upstream.tlsCredentials) {
          const tls::ClientSpec& spec = cred->spec();
          const tls::Files files = cred->files();
          t["mode"] = spec.mutual ? "MUTUAL" : "SIMPLE";
          t["sni"] = spec.sni;
          t["subject_alt_names"] = spec.subjectAltNames;
          t["insecure_skip_verify"] = spec.insecureSkipVerify;
          t["ca_file"] = files.ca.empty() ? std::string("(system roots)") : files.ca;
          if (auto ctx = cred->current(); ctx && spec.mutual) {
            t["client_certificate"] = {{"subject", ctx->info().subject}, {"not_after", ctx->info().notAfter}};
          }
          if (std::string e = cred->error(); !e.empty()) t["error"] = e;
        }
        cluster["tls"] = std::move(t);
      }
      if (health) {
        cluster["outlier_detection"] = {{"ejected_now", health->ejectedNow()},
                                        {"ejections_total", health->ejectionsTotal()},
                                        {"panic", health->panic()}};
      }
      out.push_back(std::move(cluster));
    }
  }
  return json{{"clusters", out}}.dump(2);
}

void ConfigManager::setOnPublish(std::function<void(const route::Snapshot&)> fn) {
  std::lock_guard lock(mu_);
  onPublish_ = std::move(fn);
}

}  // namespace sluice::daemon
