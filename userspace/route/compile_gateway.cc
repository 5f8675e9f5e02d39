// compile(), continued: Gateway listeners. Each served Gateway's HTTP and
// HTTPS servers become listeners keyed by (bind, port); the VirtualServices
// bound to the Gateway compile into virtual hosts, one per host both the
// VirtualService and a server name (as Istio builds a gateway's route
// configuration): one table for a port's plaintext servers, one per HTTPS
// server (its filter chain, chosen by SNI, with its certificate).
#include <arpa/inet.h>

#include <algorithm>

#include "route/compiler.h"
#include "tls/credential_store.h"

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
// A Gateway server host, "[ns/]dnsName": the namespace part ("*" when
// absent) and the name, lower case.
struct ServerHost {
  std::string ns;
  std::string dns;
  explicit ServerHost(const std::string& entry) {
    size_t slash = entry.find('/');
    ns = slash == std::string::npos ? "*" : entry.substr(0, slash);
    dns = lowerCopy(slash == std::string::npos ? entry : entry.substr(slash + 1));
  }
  // A VirtualService of namespace `vsNs` binds through this host ("*" any,
  // "." the Gateway's own).
  bool admits(const std::string& vsNs, const std::string& gwNs) const {
    return ns == "*" || ns == vsNs || (ns == "." && vsNs == gwNs);
  }
};

// Istio's TCP-family protocols: served by a gateway as plain L4.
bool isTcpFamily(std::string_view proto) {
  return proto == "TCP" || proto == "MONGO" || proto == "MYSQL" || proto == "REDIS";
}

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
  auto finish = [](RouteConfig& rc) {
    std::stable_sort(rc.wildcards.begin(), rc.wildcards.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  };
  for (auto& l : snap_.gatewayListeners) {
    finish(l->routes);
    for (auto& t : l->tlsServers) finish(t->routes);
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
  const std::string mode = server.tls ? (server.tls->mode.empty() ? "PASSTHROUGH" : server.tls->mode) : "";
  if (proto == "HTTPS" || proto == "TLS") {
    if (mode == "AUTO_PASSTHROUGH" || mode == "ISTIO_MUTUAL") {
      warn(label + ": TLS mode " + mode + " is not supported yet; not served");
      return;
    }
  } else if (proto != "HTTP" && proto != "HTTP2" && proto != "GRPC" && proto != "GRPC-WEB" && !isTcpFamily(proto)) {
    warn(label + ": " + proto + " gateway servers are not built yet; not served");
    return;
  }
  // HTTP, HTTP2, GRPC and GRPC-WEB servers are one kind of listener: every
  // HTTP listener speaks HTTP/1.1 and HTTP/2 (prior knowledge or Upgrade).
  in_addr bind{};
  if (!server.bind.empty() && inet_pton(AF_INET, server.bind.c_str(), &bind) != 1) {
    warn(label + ": bind " + server.bind + " is not an IPv4 address; not served");
    return;
  }
  // Keyed by the address actually bound: a server naming the daemon's
  // --gateway-bind address shares the listener of servers naming none.
  if (server.bind.empty()) bind.s_addr = options_.gatewayBindBe;
  const uint64_t key = GatewayListener::makeKey(bind.s_addr, server.port.number);
  GatewayListener* existing = nullptr;
  for (auto& l : snap_.gatewayListeners) {
    if (l->key == key) existing = l.get();
  }
  const bool https = proto == "HTTPS" || proto == "TLS";
  const bool tcp = isTcpFamily(proto);
  if (existing && (existing->tls() != https || existing->tcp() || tcp)) {
    // Istio merges servers on one port only when both are plaintext HTTP
    // or both speak TLS (told apart by SNI); the later one is skipped.
    warn(label + ": conflicts with " + existing->servers.front() + " on the same port; not served");
    return;
  }
  if (tcp) {
    TcpRoute route;
    if (!tcpRouteFor(route, gw, gwName, server, label)) return;
    GatewayListener& l = gatewayListener(bind.s_addr, server.port.number);
    l.servers.push_back(label);
    l.tcpRoute = std::move(route);
    return;
  }
  if (https) {
    std::unique_ptr<GatewayTlsServer> t = makeTlsServer(existing, server, label, proto == "HTTPS");
    if (!t) return;
    if (proto == "TLS" && !t->passthrough) {
      // Terminated, then L4: served only with a tcp route to go to.
      TcpRoute route;
      if (!tcpRouteFor(route, gw, gwName, server, label)) return;
      t->tcpRoute = std::move(route);
    }
    GatewayListener& l = gatewayListener(bind.s_addr, server.port.number);
    l.servers.push_back(label);
    l.tlsServers.push_back(std::move(t));
    if (l.tlsServers.back()->passthrough) {
      bindSniRoutes(*l.tlsServers.back(), gw, gwName, server);
    } else if (!l.tlsServers.back()->tcpRoute) {
      bindGatewayHosts(l.tlsServers.back()->routes, gw, gwName, server, false);
    }
    return;
  }
  GatewayListener& l = gatewayListener(bind.s_addr, server.port.number);
  l.servers.push_back(label);
  bindGatewayHosts(l.routes, gw, gwName, server, server.tls && server.tls->httpsRedirect);
}

GatewayListener& Compiler::gatewayListener(uint32_t bindBe, uint32_t port) {
  const uint64_t key = GatewayListener::makeKey(bindBe, port);
  for (auto& existing : snap_.gatewayListeners) {
    if (existing->key == key) return *existing;
  }
  auto made = std::make_unique<GatewayListener>();
  made->key = key;
  made->bindBe = bindBe;
  made->port = port;
  made->routes.port = port;
  snap_.gatewayListeners.push_back(std::move(made));
  return *snap_.gatewayListeners.back();
}

std::unique_ptr<GatewayTlsServer> Compiler::makeTlsServer(const GatewayListener* l, const config::Server& server,
                                                          const std::string& label, bool http) {
  const config::ServerTLSSettings& s = *server.tls;
  const bool passthrough = s.mode.empty() || s.mode == "PASSTHROUGH";
  tls::ServerSpec spec;
  spec.mode = s.mode == "MUTUAL"            ? tls::ServerSpec::Mode::kMutual
              : s.mode == "OPTIONAL_MUTUAL" ? tls::ServerSpec::Mode::kOptionalMutual
                                            : tls::ServerSpec::Mode::kSimple;
  // A credential wins over file paths, as in Istio.
  if (!s.credentialName.empty()) {
    spec.credentialName = s.credentialName;
  } else if (!s.credentialNames.empty()) {
    spec.credentialName = s.credentialNames[0];
    if (s.credentialNames.size() > 1) warn(label + ": only the first of credentialNames is served");
  } else {
    spec.certFile = s.serverCertificate;
    spec.keyFile = s.privateKey;
    spec.caFile = s.caCertificates;
  }
  spec.subjectAltNames = s.subjectAltNames;
  // HTTPS servers speak both HTTP versions, HTTP/2 preferred (as Istio's
  // gateways); a TLS server relays bytes and names no protocol.
  spec.alpn = http ? std::vector<std::string>{"h2", "http/1.1"} : std::vector<std::string>{};
  spec.minVersion = tls::versionFromName(s.minProtocolVersion, TLS1_2_VERSION);
  spec.maxVersion = tls::versionFromName(s.maxProtocolVersion, TLS1_3_VERSION);
  if (!passthrough && spec.minVersion > spec.maxVersion) {
    warn(label + ": minProtocolVersion " + s.minProtocolVersion + " is above maxProtocolVersion " +
         s.maxProtocolVersion + "; not served");
    return nullptr;
  }
  // As Istio: unknown or repeated suites are ignored with a warning.
  std::vector<std::string> ignored;
  for (const std::string& c : s.cipherSuites) {
    if (tls::checkCipherSuite(c) &&
        std::find(spec.cipherSuites.begin(), spec.cipherSuites.end(), c) == spec.cipherSuites.end()) {
      spec.cipherSuites.push_back(c);
    } else {
      ignored.push_back(c);
    }
  }
  if (!ignored.empty()) {
    std::string list;
    for (const auto& c : ignored) list += (list.empty() ? "" : ", ") + c;
    warn(label + ": ignoring invalid or duplicate cipher suites: " + list);
  }
  if (!passthrough && !s.cipherSuites.empty() && spec.cipherSuites.empty()) {
    warn(label + ": none of its cipherSuites is known; not served");
    return nullptr;
  }

  auto t = std::make_unique<GatewayTlsServer>();
  t->label = label;
  t->passthrough = passthrough;
  t->routes.port = server.port.number;
  bool any = false;
  for (const std::string& entry : server.hosts) {
    const std::string dns = ServerHost(entry).dns;
    if (dns == "*") any = true;
    if (std::find(t->serverNames.begin(), t->serverNames.end(), dns) == t->serverNames.end())
      t->serverNames.push_back(dns);
  }
  if (any) t->serverNames.clear();
  // One SNI name, one server: a later server repeating a name is skipped
  // (Istio: "duplicate host names").
  static const std::vector<std::unique_ptr<GatewayTlsServer>> kNone;
  for (const auto& other : l ? l->tlsServers : kNone) {
    const bool clash = (any && other->serverNames.empty()) ||
                       std::any_of(t->serverNames.begin(), t->serverNames.end(), [&](const std::string& n) {
                         return std::find(other->serverNames.begin(), other->serverNames.end(), n) !=
                                other->serverNames.end();
                       });
    if (clash) {
      warn(label + ": a host it names is already served by " + other->label + " on the same port; not served");
      return nullptr;
    }
  }
  if (options_.credentials && !passthrough) {
    t->credentials = options_.credentials->get(spec);
    if (std::string e = t->credentials->error(); !e.empty()) {
      warn(label + ": " + e + "; not served until its certificate loads");
    }
  }
  return t;
}

void Compiler::bindGatewayHosts(RouteConfig& rc, const config::Gateway& gw, const std::string& gwName,
                                const config::Server& server, bool httpsRedirect) {
  auto bound = vsByGateway_.find(gwName);
  for (const std::string& entry : server.hosts) {
    // "ns/host": only VirtualServices of namespace ns ("." the Gateway's,
    // "*" any) bind through this entry.
    const ServerHost host(entry);
    const std::string& dns = host.dns;
    // Redirected to https whether or not a VirtualService routes the host.
    if (httpsRedirect) gatewayHost(rc, dns).vh->httpsRedirect = true;
    if (bound == vsByGateway_.end()) continue;
    for (const config::VirtualService* vs : bound->second) {
      if (!host.admits(vs->metadata.namespace_, gw.metadata.namespace_)) continue;
      if (vs->http.empty()) continue;  // tls or tcp routes only: for TLS and TCP servers
      for (const std::string& raw : vs->hosts) {
        if (auto domain = intersect(lowerCopy(raw), dns)) addGatewayHost(rc, *domain, *vs, gwName, httpsRedirect);
      }
    }
  }
}

// The first tcp route of the VirtualServices bound to the Gateway (by a
// host the server names, `ns/` rules as for HTTP) whose match fits the
// server's port and gateway; false (warned) when there is none.
bool Compiler::tcpRouteFor(TcpRoute& out, const config::Gateway& gw, const std::string& gwName,
                           const config::Server& server, const std::string& label) {
  auto bound = vsByGateway_.find(gwName);
  if (bound != vsByGateway_.end()) {
    for (const config::VirtualService* vs : bound->second) {
      const std::string& vsNs = vs->metadata.namespace_;
      bool hostOk = false;
      for (const std::string& entry : server.hosts) {
        const ServerHost host(entry);
        if (!host.admits(vsNs, gw.metadata.namespace_)) continue;
        for (const std::string& h : vs->hosts) hostOk = hostOk || intersect(lowerCopy(h), host.dns).has_value();
      }
      if (!hostOk) continue;
      const std::string resource = resourceName("VirtualService", vs->metadata);
      for (size_t i = 0; i < vs->tcp.size(); ++i) {
        const config::TCPRoute& tr = vs->tcp[i];
        bool fits = tr.match.empty();
        for (const config::L4MatchAttributes& m : tr.match) {
          if (m.port && *m.port != server.port.number) continue;
          if (!m.gateways.empty() && std::find(m.gateways.begin(), m.gateways.end(), gwName) == m.gateways.end())
            continue;
          if (!m.sourceLabels.empty() || !m.sourceNamespace.empty()) continue;
          fits = true;
        }
        if (!fits) continue;
        const std::string path = resource + ": spec.tcp[" + std::to_string(i) + "]";
        for (size_t k = 0; k < tr.route.size(); ++k) {
          const config::RouteDestination& d = tr.route[k];
          TcpRoute::Dest dest;
          dest.cluster = cluster(d.destination, server.port.number, path + ".route[" + std::to_string(k) + "]");
          dest.weight = tr.route.size() == 1 ? 100u : static_cast<uint32_t>(std::max(0, d.weight));
          out.totalWeight += dest.weight;
          out.clusters.push_back(dest);
        }
        if (out.totalWeight == 0) warn(path + ": every destination has weight 0");
        return true;
      }
    }
  }
  warn(label + ": no VirtualService tcp route is bound to it; not served");
  return false;
}

void Compiler::bindSniRoutes(GatewayTlsServer& t, const config::Gateway& gw, const std::string& gwName,
                             const config::Server& server) {
  static const std::vector<const config::VirtualService*> kNone;
  auto bound = vsByGateway_.find(gwName);
  for (const config::VirtualService* vs : bound == vsByGateway_.end() ? kNone : bound->second) {
    const std::string resource = resourceName("VirtualService", vs->metadata);
    const std::string& vsNs = vs->metadata.namespace_;
    for (size_t i = 0; i < vs->tls.size(); ++i) {
      const config::TLSRoute& tr = vs->tls[i];
      const std::string path = resource + ": spec.tls[" + std::to_string(i) + "]";
      GatewayTlsServer::SniRoute sr;
      for (const config::TLSMatchAttributes& m : tr.match) {
        if (m.port && *m.port != server.port.number) continue;
        if (!m.gateways.empty() && std::find(m.gateways.begin(), m.gateways.end(), gwName) == m.gateways.end())
          continue;
        if (!m.sourceLabels.empty() || !m.sourceNamespace.empty()) {
          warn(path + ": sourceLabels/sourceNamespace matches are not supported yet; that match block never "
               "matches");
          continue;
        }
        if (!m.destinationSubnets.empty()) warn(path + ": destinationSubnets do not apply on a gateway; ignored");
        // The SNI names both this match and a server host (whose `ns/`
        // part lets the VirtualService's namespace bind) name.
        for (const std::string& raw : m.sniHosts) {
          for (const std::string& entry : server.hosts) {
            const ServerHost host(entry);
            if (!host.admits(vsNs, gw.metadata.namespace_)) continue;
            if (auto name = intersect(lowerCopy(raw), host.dns)) {
              if (std::find(sr.sniHosts.begin(), sr.sniHosts.end(), *name) == sr.sniHosts.end())
                sr.sniHosts.push_back(*name);
            }
          }
        }
      }
      if (sr.sniHosts.empty()) continue;  // nothing this server can take
      for (size_t k = 0; k < tr.route.size(); ++k) {
        const config::RouteDestination& d = tr.route[k];
        TcpRoute::Dest dest;
        dest.cluster = cluster(d.destination, server.port.number, path + ".route[" + std::to_string(k) + "]");
        dest.weight = tr.route.size() == 1 ? 100u : static_cast<uint32_t>(std::max(0, d.weight));
        sr.route.totalWeight += dest.weight;
        sr.route.clusters.push_back(dest);
      }
      if (sr.route.totalWeight == 0) warn(path + ": every destination has weight 0");
      t.sniRoutes.push_back(std::move(sr));
    }
  }
  if (t.sniRoutes.empty()) warn(t.label + ": PASSTHROUGH, but no VirtualService tls route names its hosts");
}

Compiler::GatewayHost& Compiler::gatewayHost(RouteConfig& rc, const std::string& domain) {
  GatewayHost& host = gatewayHosts_[{&rc, domain}];
  if (!host.vh) {
    auto vh = std::make_unique<VirtualHost>();
    vh->name = domain + ":" + std::to_string(rc.port);
    vh->domains = {domain, vh->name};
    host.vh = vh.get();
    snap_.virtualHosts.push_back(std::move(vh));
    if (domain == "*") {
      rc.star = host.vh;
    } else if (isWildcard(domain)) {
      rc.wildcardIndex.emplace(domain.substr(1), host.vh);
      rc.wildcards.emplace_back(domain.substr(1), host.vh);
    } else {
      rc.exact.emplace(domain, host.vh);
    }
  }
  return host;
}

void Compiler::addGatewayHost(RouteConfig& rc, const std::string& domain, const config::VirtualService& vs,
                              const std::string& gwName, bool httpsRedirect) {
  GatewayHost& host = gatewayHost(rc, domain);
  host.vh->httpsRedirect = host.vh->httpsRedirect || httpsRedirect;
  if (std::find(host.from.begin(), host.from.end(), &vs) != host.from.end()) return;
  if (!host.from.empty()) {
    warn(resourceName("VirtualService", vs.metadata) + ": host " + domain + " on " + gwName + " port " +
         std::to_string(rc.port) + " is also routed by " + resourceName("VirtualService", host.from[0]->metadata) +
         "; their routes are merged in load order, catch-all routes last");
  }
  host.from.push_back(&vs);
  const size_t first = host.vh->routes.size();
  addRoutes(*host.vh, vs, rc.port, gwName);
  // Routes after a catch-all can never match; Istio leaves them out, and
  // so must the merge, which moves catch-alls last.
  auto all = std::find_if(host.vh->routes.begin() + ptrdiff_t(first), host.vh->routes.end(), catchAll);
  if (all != host.vh->routes.end()) host.vh->routes.erase(all + 1, host.vh->routes.end());
}

}  // namespace sluice::route::detail
