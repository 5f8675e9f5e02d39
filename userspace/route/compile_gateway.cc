// compile(), continued: Gateway listeners. Each served Gateway's plaintext
// HTTP servers become listeners keyed by (bind, port); the VirtualServices
// bound to the Gateway compile into that listener's virtual hosts, one per
// host both the VirtualService and a server name (as Istio builds a gateway's
// route configuration).
#include <arpa/inet.h>

#include <algorithm>

#include "route/compiler.h"

namespace sluice::route::detail {
namespace {

// `pattern` covers `host`: equal, `*`, or a wildcard whose suffix `host`
// ends with after at least one more label ("*.a.com" covers "b.a.com" and
// "*.b.a.com", not "a.com").
bool covers(std::string_view pattern, std::string_view host) {
  if (pattern == "*" || pattern == host) return true;
  if (!isWildcard(pattern)) return false;
  std::string_view suffix = pattern.substr(1);  // ".a.com"
  return host.size() > suffix.size() && host.ends_with(suffix);
}

// The hosts a VirtualService host and a server host have in common, named
// by the narrower of the two; nullopt when they are disjoint.
std::optional<std::string> intersect(const std::string& vsHost, const std::string& serverHost) {
  if (covers(serverHost, vsHost)) return vsHost;
  if (covers(vsHost, serverHost)) return serverHost;
  return std::nullopt;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// A route that takes every request: no match block, or one that matches
// everything (an Envoy route per match block, as Istio builds them).
bool catchAll(const Route& r) {
  return r.matches.empty() ||
         std::any_of(r.matches.begin(), r.matches.end(), [](const auto& m) { return m->catchAll(); });
}

}  // namespace

void Compiler::buildGateways() {
  for (const config::Gateway& gw : snap_.resources.gateways) {
    if (options_.gatewayLabels && !labelsContain(*options_.gatewayLabels, gw.selector)) continue;
    const std::string gwName = gw.metadata.namespace_ + "/" + gw.metadata.name;
    for (size_t i = 0; i < gw.servers.size(); ++i) addGatewayServer(gw, gwName, gw.servers[i], i);
  }
  for (auto& l : snap_.gatewayListeners) {
    std::stable_sort(l->routes.wildcards.begin(), l->routes.wildcards.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  // Catch-all routes last, so one VirtualService's cannot hide the routes
  // of those merged after it (Istio sorts every gateway virtual host so).
  for (auto& [key, host] : gatewayHosts_) {
    std::stable_partition(host.vh->routes.begin(), host.vh->routes.end(),
                          [](const Route& r) { return !catchAll(r); });
  }
}

void Compiler::addGatewayServer(const config::Gateway& gw, const std::string& gwName,
                                const config::Server& server, size_t index) {
  const std::string proto = upper(server.port.protocol);
  const std::string label = "Gateway " + gwName + " server " +
                            (server.port.name.empty() ? "servers[" + std::to_string(index) + "]" : server.port.name) +
                            " (" + proto + " " + std::to_string(server.port.number) + ")";
  if (proto == "HTTPS" || proto == "TLS") {
    warn(label + ": TLS termination and passthrough are not built yet; not served");
    return;
  }
  if (proto == "GRPC") {
    warn(label + ": gRPC needs HTTP/2, which is not built yet; not served");
    return;
  }
  if (proto != "HTTP" && proto != "HTTP2" && proto != "GRPC-WEB") {
    warn(label + ": " + proto + " gateway servers are not built yet (HTTP only); not served");
    return;
  }
  if (proto == "HTTP2") warn(label + ": served as HTTP/1.1 until HTTP/2 is built");
  in_addr bind{};
  if (!server.bind.empty() && inet_pton(AF_INET, server.bind.c_str(), &bind) != 1) {
    warn(label + ": bind " + server.bind + " is not an IPv4 address; not served");
    return;
  }
  // Keyed by the address actually bound: a server naming the daemon's
  // --gateway-bind address shares the listener of servers naming none.
  if (server.bind.empty()) bind.s_addr = options_.gatewayBindBe;
  const uint64_t key = GatewayListener::makeKey(bind.s_addr, server.port.number);
  GatewayListener* l = nullptr;
  for (auto& existing : snap_.gatewayListeners) {
    if (existing->key == key) l = existing.get();
  }
  if (!l) {
    auto made = std::make_unique<GatewayListener>();
    made->key = key;
    made->bindBe = bind.s_addr;
    made->port = server.port.number;
    made->routes.port = server.port.number;
    l = made.get();
    snap_.gatewayListeners.push_back(std::move(made));
  }
  l->servers.push_back(label);
  const bool httpsRedirect = server.tls && server.tls->httpsRedirect;
  auto bound = vsByGateway_.find(gwName);
  for (const std::string& entry : server.hosts) {
    // "ns/host": only VirtualServices of namespace ns ("." the Gateway's,
    // "*" any) bind through this entry.
    size_t slash = entry.find('/');
    std::string ns = slash == std::string::npos ? "*" : entry.substr(0, slash);
    std::string dns = lowerCopy(slash == std::string::npos ? entry : entry.substr(slash + 1));
    // Redirected to https whether or not a VirtualService routes the host.
    if (httpsRedirect) gatewayHost(*l, dns).vh->httpsRedirect = true;
    if (bound == vsByGateway_.end()) continue;
    for (const config::VirtualService* vs : bound->second) {
      const std::string& vsNs = vs->metadata.namespace_;
      if (ns != "*" && ns != vsNs && !(ns == "." && vsNs == gw.metadata.namespace_)) continue;
      if (vs->http.empty()) {
        if (!vs->tcp.empty() || !vs->tls.empty()) {
          warn(resourceName("VirtualService", vs->metadata) + ": tcp and tls routes on gateways are not "
               "built yet; ignored for " + gwName);
        }
        continue;
      }
      for (const std::string& raw : vs->hosts) {
        if (auto domain = intersect(lowerCopy(raw), dns)) addGatewayHost(*l, *domain, *vs, gwName, httpsRedirect);
      }
    }
  }
}

Compiler::GatewayHost& Compiler::gatewayHost(GatewayListener& l, const std::string& domain) {
  GatewayHost& host = gatewayHosts_[{l.key, domain}];
  if (!host.vh) {
    auto vh = std::make_unique<VirtualHost>();
    vh->name = domain + ":" + std::to_string(l.port);
    vh->domains = {domain, vh->name};
    host.vh = vh.get();
    snap_.virtualHosts.push_back(std::move(vh));
    if (domain == "*") {
      l.routes.star = host.vh;
    } else if (isWildcard(domain)) {
      l.routes.wildcardIndex.emplace(domain.substr(1), host.vh);
      l.routes.wildcards.emplace_back(domain.substr(1), host.vh);
    } else {
      l.routes.exact.emplace(domain, host.vh);
    }
  }
  return host;
}

void Compiler::addGatewayHost(GatewayListener& l, const std::string& domain, const config::VirtualService& vs,
                              const std::string& gwName, bool httpsRedirect) {
  GatewayHost& host = gatewayHost(l, domain);
  host.vh->httpsRedirect = host.vh->httpsRedirect || httpsRedirect;
  if (std::find(host.from.begin(), host.from.end(), &vs) != host.from.end()) return;
  if (!host.from.empty()) {
    warn(resourceName("VirtualService", vs.metadata) + ": host " + domain + " on " + gwName + " port " +
         std::to_string(l.port) + " is also routed by " + resourceName("VirtualService", host.from[0]->metadata) +
         "; their routes are merged in load order, catch-all routes last");
  }
  host.from.push_back(&vs);
  const size_t first = host.vh->routes.size();
  addRoutes(*host.vh, vs, l.port, gwName);
  // Routes after a catch-all can never match; Istio leaves them out, and
  // so must the merge, which moves catch-alls last.
  auto all = std::find_if(host.vh->routes.begin() + ptrdiff_t(first), host.vh->routes.end(), catchAll);
  if (all != host.vh->routes.end()) host.vh->routes.erase(all + 1, host.vh->routes.end());
}

}  // namespace sluice::route::detail
