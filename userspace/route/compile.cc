// compile(): Istio resources -> Snapshot, the way Istio builds a sidecar's
// outbound routes and clusters (see route/README.md for the rules). HTTP
// routes and their actions are compiled in compile_http.cc.
#include <arpa/inet.h>

#include <algorithm>
#include <unordered_set>

#include "config/kube_registry.h"
#include "core/clock.h"
#include "route/compiler.h"

namespace sluice::route {
namespace detail {

void Compiler::indexServices() {
  for (const config::WorkloadEntry& we : snap_.resources.workloadEntries) {
    workloadsByNs_[we.metadata.namespace_].push_back(&we);
  }
  // Kubernetes Services first: as in istiod, one takes precedence over a
  // ServiceEntry of the same host (no squatting on a Service's name).
  auto index = [&](const config::ServiceEntry& se) {
    if (se.ports.empty()) {
      warn(serviceResourceName(se) + ": no ports; ignored");
      return;
    }
    for (const std::string& raw : se.hosts) {
      std::string host = lowerCopy(raw);
      auto [it, inserted] = services_.try_emplace(host, Service{host, &se});
      if (!inserted) {
        warn(serviceResourceName(se) + ": host " + host + " already defined by " +
             serviceResourceName(*it->second.se) + "; ignored");
        continue;
      }
      serviceOrder_.push_back(&it->second);
    }
  };
  for (const config::ServiceEntry& se : snap_.kubernetesServices) index(se);
  for (const config::ServiceEntry& se : snap_.resources.serviceEntries) index(se);
}

void Compiler::indexDestinationRules() {
  for (const config::DestinationRule& dr : snap_.resources.destinationRules) {
    auto [it, inserted] = drByHost_.try_emplace(lowerCopy(dr.host), &dr);
    if (!inserted) {
      warn(resourceName("DestinationRule", dr.metadata) + ": host " + dr.host + " already has " +
           resourceName("DestinationRule", it->second->metadata) + "; ignored");
    }
  }
}

void Compiler::indexVirtualServices() {
  for (const config::VirtualService& vs : snap_.resources.virtualServices) {
    for (const std::string& gw : vs.gateways) {
      if (gw != "mesh") vsByGateway_[gw].push_back(&vs);
    }
    // A VirtualService bound only to gateways is not part of sidecar routing;
    // one with only tcp/tls routes leaves HTTP traffic to the default route.
    if (!hasMesh(vs.gateways)) continue;
    if (!vs.tcp.empty()) {
      for (const std::string& raw : vs.hosts) tcpVsByHost_.try_emplace(lowerCopy(raw), &vs);
    }
    if (vs.http.empty()) continue;
    for (const std::string& raw : vs.hosts) {
      std::string host = lowerCopy(raw);
      auto [it, inserted] = vsByHost_.try_emplace(host, &vs);
      if (!inserted) {
        if (it->second != &vs) {
          warn(resourceName("VirtualService", vs.metadata) + ": host " + host + " is already routed by " +
               resourceName("VirtualService", it->second->metadata) +
               "; only the first loaded applies to a sidecar");
        }
        continue;
      }
      vsHostOrder_.push_back(host);
    }
  }
}

const config::VirtualService* Compiler::tcpVirtualServiceFor(const std::string& host) const {
  if (auto it = tcpVsByHost_.find(host); it != tcpVsByHost_.end()) return it->second;
  const config::VirtualService* found = nullptr;
  forEachWildcardForm(host, [&](const std::string& wc) {
    auto it = tcpVsByHost_.find(wc);
    if (it == tcpVsByHost_.end()) return false;
    found = it->second;
    return true;
  });
  if (found) return found;
  auto it = tcpVsByHost_.find("*");
  return it == tcpVsByHost_.end() ? nullptr : it->second;
}

// Exact host first, then the longest wildcard covering it, then `*`.
const config::VirtualService* Compiler::virtualServiceFor(const std::string& host) {
  if (auto it = vsByHost_.find(host); it != vsByHost_.end()) return it->second;
  const config::VirtualService* found = nullptr;
  std::string_view h = host;
  if (isWildcard(h)) h.remove_prefix(1);  // "*.a.com" is covered by "*.com"
  forEachWildcardForm(isWildcard(host) ? "x" + std::string(h) : host, [&](const std::string& wc) {
    auto it = vsByHost_.find(wc);
    if (it == vsByHost_.end()) return false;
    found = it->second;
    vsHostsUsed_.insert(wc);
    return true;
  });
  if (found) return found;
  if (auto it = vsByHost_.find("*"); it != vsByHost_.end()) {
    vsHostsUsed_.insert("*");
    return it->second;
  }
  return nullptr;
}

const config::DestinationRule* Compiler::destinationRuleFor(const std::string& host) const {
  if (auto it = drByHost_.find(host); it != drByHost_.end()) return it->second;
  const config::DestinationRule* found = nullptr;
  forEachWildcardForm(host, [&](const std::string& wc) {
    auto it = drByHost_.find(wc);
    if (it == drByHost_.end()) return false;
    found = it->second;
    return true;
  });
  if (found) return found;
  auto it = drByHost_.find("*");
  return it == drByHost_.end() ? nullptr : it->second;
}

void Compiler::addEndpoint(const config::WorkloadEntry& e, const config::ServiceEntry& se,
                           const config::ServicePort& sp, std::vector<Endpoint>& out, bool fromSlice) {
  Endpoint ep;
  if (inet_pton(AF_INET, e.address.c_str(), &ep.sockaddr.sin_addr) != 1) {
    if (badEndpointsWarned_.insert(&e).second) {
      warn(serviceResourceName(se) + ": endpoint address \"" + e.address +
           "\" is not an IPv4 address; skipped (only STATIC IPv4 endpoints are supported)");
    }
    return;
  }
  ep.address = e.address;
  // By the port's name; an unnamed Kubernetes port's endpoints carry "".
  auto it = e.ports.find(sp.name);
  if (fromSlice && it == e.ports.end()) {
    // Its EndpointSlice has no such port (a named targetPort this pod does
    // not declare): as in istiod, no endpoint for it on this port.
    return;
  }
  if ((!sp.name.empty() || fromSlice) && it != e.ports.end()) {
    ep.port = static_cast<uint16_t>(it->second);
  } else {
    ep.port = static_cast<uint16_t>(sp.targetPort ? sp.targetPort : sp.number);
  }
  ep.sockaddr.sin_family = AF_INET;
  ep.sockaddr.sin_port = htons(ep.port);
  ep.labels = e.labels;
  ep.weight = e.weight ? e.weight : 1;
  ep.key = ep.address + ":" + std::to_string(ep.port);
  out.push_back(std::move(ep));
}

const std::vector<Endpoint>& Compiler::serviceEndpoints(const Service& svc, const config::ServicePort& sp) {
  std::string key = svc.host + "|" + std::to_string(sp.number);
  auto [it, inserted] = endpointCache_.try_emplace(key);
  if (!inserted) return it->second;
  const config::ServiceEntry& se = *svc.se;
  // A Kubernetes Service's own endpoints come from its EndpointSlices.
  const bool fromSlices = se.fromKubernetes && se.resolution == "STATIC";
  for (const config::WorkloadEntry& e : se.endpoints) addEndpoint(e, se, sp, it->second, fromSlices);
  if (!se.workloadSelector.empty()) {
    if (auto ws = workloadsByNs_.find(se.metadata.namespace_); ws != workloadsByNs_.end()) {
      for (const config::WorkloadEntry* we : ws->second) {
        if (labelsContain(we->labels, se.workloadSelector)) addEndpoint(*we, se, sp, it->second);
      }
    }
  }
  return it->second;
}

// Istio's order: top-level portLevelSettings replace the top-level policy for
// the port, subset fields override field by field, then the subset's own
// portLevelSettings replace again. Port-level entries do not inherit: what
// they leave out falls back to defaults.
std::optional<config::TrafficPolicy> Compiler::effectivePolicy(const config::DestinationRule* dr,
                                                               const config::Subset* subset,
                                                               uint32_t port) {
  auto applyPortLevel = [port](config::TrafficPolicy& p, const config::TrafficPolicy& from) {
    for (const auto& pls : from.portLevelSettings) {
      if (pls.port && pls.port->number == port) {
        p.loadBalancer = pls.loadBalancer;
        p.connectionPool = pls.connectionPool;
        p.outlierDetection = pls.outlierDetection;
        p.tls = pls.tls;
        break;
      }
    }
    p.portLevelSettings.clear();  // resolved for this cluster's port
  };
  if (!dr) return std::nullopt;
  std::optional<config::TrafficPolicy> out;
  if (dr->trafficPolicy) {
    out = *dr->trafficPolicy;
    applyPortLevel(*out, *dr->trafficPolicy);
  }
  if (subset && subset->trafficPolicy) {
    const config::TrafficPolicy& s = *subset->trafficPolicy;
    if (!out) out.emplace();
    if (s.loadBalancer) out->loadBalancer = s.loadBalancer;
    if (s.connectionPool) out->connectionPool = s.connectionPool;
    if (s.outlierDetection) out->outlierDetection = s.outlierDetection;
    if (s.tls) out->tls = s.tls;
    applyPortLevel(*out, s);
  }
  return out;
}

const Cluster* Compiler::cluster(const config::Destination& d, uint32_t vhostPort,
                                 const std::string& context) {
  std::string host = lowerCopy(d.host);
  auto svcIt = services_.find(host);
  const Service* svc = svcIt == services_.end() ? nullptr : &svcIt->second;
  uint32_t port = vhostPort;
  if (d.port && d.port->number) {
    port = d.port->number;
  } else if (svc && svc->se->ports.size() == 1) {
    port = svc->se->ports[0].number;
  }
  std::string name = clusterName(port, d.subset, host);
  if (auto it = snap_.clusterIndex.find(name); it != snap_.clusterIndex.end()) return it->second;

  auto c = std::make_unique<Cluster>();
  c->name = name;
  c->serviceHost = host;
  c->subset = d.subset;
  c->port = port;
  c->index = snap_.clusters.size();
  const config::ServicePort* sp = nullptr;
  if (svc) {
    for (const auto& p : svc->se->ports) {
      if (p.number == port) sp = &p;
    }
  }
  if (!svc) {
    c->missing = true;
    warn(context + ": destination host " + host + " matches no Service or ServiceEntry; " + name + " has no endpoints");
  } else if (!sp) {
    c->missing = true;
    warn(context + ": " + host + " has no port " + std::to_string(port) + "; " + name + " has no endpoints");
  } else {
    const config::DestinationRule* dr = destinationRuleFor(host);
    const config::Subset* subset = nullptr;
    if (!d.subset.empty()) {
      if (dr) {
        for (const auto& s : dr->subsets) {
          if (s.name == d.subset) subset = &s;
        }
      }
      if (!subset) {
        c->missing = true;
        warn(context + ": subset " + d.subset + " of " + host + " is not defined by a DestinationRule; " +
             name + " has no endpoints");
      }
    }
    if (!c->missing) {
      for (const Endpoint& ep : serviceEndpoints(*svc, *sp)) {
        if (!subset || labelsContain(ep.labels, subset->labels)) c->endpoints.push_back(ep);
      }
      for (const Endpoint& ep : c->endpoints) {
        if (ep.weight != c->endpoints.front().weight) c->unequalWeights = true;
      }
      if (auto p = effectivePolicy(dr, subset, port)) c->policy = std::make_shared<const config::TrafficPolicy>(std::move(*p));
      if (c->policy && c->policy->loadBalancer && c->policy->loadBalancer->simple) {
        using Simple = config::LoadBalancerSettings::Simple;
        switch (*c->policy->loadBalancer->simple) {
          case Simple::RoundRobin: c->lb = LbPolicy::RoundRobin; break;
          case Simple::Random: c->lb = LbPolicy::Random; break;
          case Simple::Passthrough: c->lb = LbPolicy::Passthrough; break;
          default: break;  // LEAST_REQUEST, LEAST_CONN, unset: least request
        }
      }
      if (c->policy && c->policy->loadBalancer && c->policy->loadBalancer->warmupDurationSecs &&
          (c->lb == LbPolicy::RoundRobin || c->lb == LbPolicy::LeastRequest))
        c->warmupNs = uint64_t(std::max<int64_t>(0, c->policy->loadBalancer->warmupDurationSecs->count()));
      if (c->policy && c->policy->connectionPool) {
        const auto& cp = *c->policy->connectionPool;
        auto ns = [](const std::optional<config::Duration>& d) -> uint64_t {
          return d && d->count() > 0 ? uint64_t(d->count()) : 0;
        };
        UpstreamSettings& u = c->upstream;
        if (cp.tcp) {
          u.connectTimeoutNs = ns(cp.tcp->connectTimeout);
          u.idleTimeoutNs = ns(cp.tcp->idleTimeout);
          u.tcpIdleTimeoutNs = ns(cp.tcp->idleTimeout);
          u.maxConnectionDurationNs = ns(cp.tcp->maxConnectionDuration);
          if (cp.tcp->tcpKeepalive) {
            UpstreamSettings::Keepalive k;
            k.probes = cp.tcp->tcpKeepalive->probes.value_or(0);
            k.timeNs = ns(cp.tcp->tcpKeepalive->time);
            k.intervalNs = ns(cp.tcp->tcpKeepalive->interval);
            u.keepalive = k;
          }
        }
        if (cp.http && ns(cp.http->idleTimeout)) u.idleTimeoutNs = ns(cp.http->idleTimeout);
        if (cp.http && cp.http->maxConcurrentStreams && *cp.http->maxConcurrentStreams > 0)
          u.maxConcurrentStreams = uint32_t(*cp.http->maxConcurrentStreams);
        if (cp.http && cp.http->http2KeepAlive && ns(cp.http->http2KeepAlive->interval)) {
          u.h2PingIntervalNs = ns(cp.http->http2KeepAlive->interval);
          // No timeout given: 5 s, so an unanswered PING still ends the connection.
          u.h2PingTimeoutNs = ns(cp.http->http2KeepAlive->timeout);
          if (!u.h2PingTimeoutNs) u.h2PingTimeoutNs = 5'000'000'000ull;
        }
      }
      upstreamProtocol(*c, *sp, context);
      if (c->policy && c->policy->tls) clientTls(*c, *c->policy->tls);
      if (c->policy && c->policy->loadBalancer && c->policy->loadBalancer->consistentHash) {
        const auto& ch = *c->policy->loadBalancer->consistentHash;
        HashPolicy h;
        if (!ch.httpHeaderName.empty()) {
          h.kind = HashPolicy::Kind::Header;
          h.name = lowerCopy(ch.httpHeaderName);
        } else if (ch.httpCookie) {
          h.kind = HashPolicy::Kind::Cookie;
          h.name = ch.httpCookie->name;
          h.cookiePath = ch.httpCookie->path;
          h.cookieTtl = ch.httpCookie->ttl;
        } else if (ch.useSourceIp) {
          h.kind = HashPolicy::Kind::SourceIp;
        } else {
          h.kind = HashPolicy::Kind::QueryParam;
          h.name = ch.httpQueryParameterName;
        }
        if (ch.ringHashMinimumRingSize) h.ringSize = *ch.ringHashMinimumRingSize;
        else if (ch.minimumRingSize) h.ringSize = ch.minimumRingSize;
        if (ch.maglevTableSize) h.maglevSize = *ch.maglevTableSize;
        h.ringSize = std::clamp<uint64_t>(h.ringSize, 1, 1u << 23);
        h.maglevSize = std::clamp<uint64_t>(h.maglevSize, 2, 5'000'011);
        c->lb = ch.maglev ? LbPolicy::Maglev : LbPolicy::RingHash;
        c->hash = h;
      }
    }
  }
  const Cluster* out = c.get();
  snap_.clusterIndex.emplace(name, out);
  snap_.clusters.push_back(std::move(c));
  return out;
}

const Cluster* Compiler::serviceCluster(const std::string& host, uint32_t port, const std::string& context) {
  config::Destination d;
  d.host = host;
  d.port = config::PortSelector{port};
  return cluster(d, port, context);
}

VirtualHost* Compiler::newVirtualHost(const std::string& host, uint32_t port) {
  auto vh = std::make_unique<VirtualHost>();
  vh->name = host + ":" + std::to_string(port);
  VirtualHost* out = vh.get();
  snap_.virtualHosts.push_back(std::move(vh));
  snap_.routeConfigs[port].port = port;
  return out;
}

void Compiler::addDomains(const std::string& host, const std::vector<std::string>& vips, uint32_t port,
                          VirtualHost& vh) {
  std::string suffix = ":" + std::to_string(port);
  auto both = [&](const std::string& f) {
    vh.domains.push_back(f);
    vh.domains.push_back(f + suffix);
  };
  both(host);
  if (host == "*") {
    RouteConfig& rc = snap_.routeConfigs[port];
    if (!rc.star) rc.star = &vh;
    return;
  }
  if (isWildcard(host)) {
    RouteConfig& rc = snap_.routeConfigs[port];
    if (rc.wildcardIndex.try_emplace(host.substr(1), &vh).second) {
      rc.wildcards.emplace_back(host.substr(1), &vh);
    }
    return;
  }
  domains_.push_back(DomainEntry{port, host, &vh, &host, true});
  for (const std::string& vip : vips) {
    if (vip.find('/') != std::string::npos) continue;  // a CIDR range is not a Host value
    std::string v = lowerCopy(vip);
    both(v);
    domains_.push_back(DomainEntry{port, v, &vh, &host, true});
  }
  // name.ns.svc.cluster.local also answers to name, name.ns and name.ns.svc.
  constexpr std::string_view kSvc = ".svc.cluster.local";
  if (host.size() > kSvc.size() && host.ends_with(kSvc)) {
    std::string_view nameNs = std::string_view(host).substr(0, host.size() - kSvc.size());
    size_t dot = nameNs.find('.');
    if (dot != std::string_view::npos && dot > 0 && nameNs.find('.', dot + 1) == std::string_view::npos) {
      for (std::string alias : {std::string(nameNs.substr(0, dot)), std::string(nameNs),
                                std::string(nameNs) + ".svc"}) {
        both(alias);
        domains_.push_back(DomainEntry{port, std::move(alias), &vh, &host, false});
      }
    }
  }
}

// Only single IPv4 addresses: a CIDR range names no one socket address, and
// IPv6 capture (connect6) is not built yet.
void Compiler::addCaptureVips(const std::string& host, const std::vector<std::string>& addresses,
                              uint32_t port, const TcpService* tcp) {
  for (const std::string& a : addresses) {
    in_addr addr{};
    if (a.find('/') != std::string::npos || inet_pton(AF_INET, a.c_str(), &addr) != 1) continue;
    Snapshot::Vip v{addr.s_addr, static_cast<uint16_t>(port), host, tcp != nullptr};
    auto& vips = snap_.captureVips;
    if (std::find(vips.begin(), vips.end(), v) != vips.end()) continue;
    vips.push_back(v);
    if (tcp) snap_.tcpByVip.emplace((uint64_t(v.addrBe) << 16) | v.port, tcp);
  }
}

// tcp[] rules of the service's VirtualService that can match on this port,
// else one rule to the whole service, as Istio's default TCP route.
const TcpService* Compiler::addTcpService(const Service& svc, uint32_t port,
                                          const config::VirtualService* vs) {
  auto ts = std::make_unique<TcpService>();
  ts->host = svc.host;
  ts->port = port;
  if (vs) {
    std::string resource = resourceName("VirtualService", vs->metadata);
    if (!vs->tls.empty()) warn(resource + ": tls routes (SNI) are not supported yet; ignored");
    for (size_t i = 0; i < vs->tcp.size(); ++i) {
      const config::TCPRoute& tcp = vs->tcp[i];
      std::string path = "spec.tcp[" + std::to_string(i) + "]";
      TcpRoute r;
      for (const config::L4MatchAttributes& m : tcp.match) {
        if (m.port && *m.port != port) continue;
        bool meshOk = m.gateways.empty() ||
                      std::find(m.gateways.begin(), m.gateways.end(), "mesh") != m.gateways.end();
        if (!meshOk) continue;
        if (!m.sourceLabels.empty() || !m.sourceNamespace.empty()) {
          // The node proxy does not know the client workload's labels yet.
          warn(resource + ": " + path + ": sourceLabels/sourceNamespace matches are not "
               "supported yet; that match block never matches");
          continue;
        }
        TcpRoute::Match cm;
        cm.port = m.port;
        for (const std::string& cidr : m.destinationSubnets) {
          std::string ip = cidr.substr(0, cidr.find('/'));
          size_t slash = cidr.find('/');
          int bits = slash == std::string::npos ? 32 : std::atoi(cidr.c_str() + slash + 1);
          in_addr a{};
          if (inet_pton(AF_INET, ip.c_str(), &a) != 1 || bits < 0 || bits > 32) continue;  // IPv6
          uint32_t mask = bits == 0 ? 0 : htonl(~uint32_t(0) << (32 - bits));
          cm.subnets.emplace_back(a.s_addr & mask, mask);
        }
        r.matches.push_back(std::move(cm));
      }
      if (!tcp.match.empty() && r.matches.empty()) continue;  // nothing can match here
      for (size_t k = 0; k < tcp.route.size(); ++k) {
        const config::RouteDestination& d = tcp.route[k];
        TcpRoute::Dest dest;
        dest.cluster = cluster(d.destination, port,
                               resource + ": " + path + ".route[" + std::to_string(k) + "]");
        dest.weight = tcp.route.size() == 1 ? 100u : static_cast<uint32_t>(std::max(0, d.weight));
        r.totalWeight += dest.weight;
        r.clusters.push_back(dest);
      }
      if (r.totalWeight == 0) warn(resource + ": " + path + ": every destination has weight 0");
      ts->routes.push_back(std::move(r));
    }
  }
  if (ts->routes.empty() || !ts->routes.back().matches.empty()) {
    TcpRoute r;
    r.clusters.push_back({serviceCluster(svc.host, port, svc.host), 100});
    r.totalWeight = 100;
    ts->routes.push_back(std::move(r));
  }
  snap_.tcpServices.push_back(std::move(ts));
  return snap_.tcpServices.back().get();
}

void Compiler::buildServiceHosts() {
  for (const Service* svc : serviceOrder_) {
    const config::VirtualService* vs = virtualServiceFor(svc->host);
    if (vs) vsHostsUsed_.insert(svc->host);
    for (const config::ServicePort& sp : svc->se->ports) {
      // Every port gets its service-wide cluster (TCP proxying needs it too).
      serviceCluster(svc->host, sp.number, serviceResourceName(*svc->se));
      if (!isHttpProtocol(sp.protocol)) {
        addCaptureVips(svc->host, svc->se->addresses, sp.number,
                       addTcpService(*svc, sp.number, tcpVirtualServiceFor(svc->host)));
        continue;
      }
      VirtualHost* vh = newVirtualHost(svc->host, sp.number);
      addDomains(svc->host, svc->se->addresses, sp.number, *vh);
      addCaptureVips(svc->host, svc->se->addresses, sp.number);
      if (vs) {
        addRoutes(*vh, *vs, sp.number);
      } else {
        addDefaultRoute(*vh, svc->host, sp.number);
      }
    }
  }
}

// A VirtualService host that names no ServiceEntry still gets a virtual host,
// on port 80 and the ports of the services it routes to, so it is reachable.
void Compiler::buildVirtualServiceOnlyHosts() {
  for (const std::string& host : vsHostOrder_) {
    if (vsHostsUsed_.contains(host) || services_.contains(host)) continue;
    const config::VirtualService* vs = vsByHost_.at(host);
    std::vector<uint32_t> ports{80};
    auto addPort = [&](uint32_t p) {
      if (std::find(ports.begin(), ports.end(), p) == ports.end()) ports.push_back(p);
    };
    for (const config::HTTPRoute& http : vs->http) {
      for (const config::HTTPRouteDestination& d : http.route) {
        if (d.destination.port && d.destination.port->number) {
          addPort(d.destination.port->number);
        } else if (auto it = services_.find(lowerCopy(d.destination.host)); it != services_.end()) {
          for (const auto& sp : it->second.se->ports) {
            if (isHttpProtocol(sp.protocol)) addPort(sp.number);
          }
        }
      }
    }
    for (uint32_t port : ports) {
      VirtualHost* vh = newVirtualHost(host, port);
      addDomains(host, {}, port, *vh);
      addRoutes(*vh, *vs, port);
    }
  }
}

// Real names and VIPs claim a Host form before short aliases do, so
// `reviews.default` never hides a service actually called that; among equals
// the first loaded wins, on every port alike.
void Compiler::publishDomains() {
  std::unordered_map<std::string_view, const std::string*> owner;
  owner.reserve(domains_.size());
  for (const DomainEntry& d : domains_) {
    if (d.primary) owner.try_emplace(d.form, d.owner);
  }
  for (const DomainEntry& d : domains_) {
    if (!d.primary) owner.try_emplace(d.form, d.owner);
  }
  for (const DomainEntry& d : domains_) {
    if (*owner[d.form] != *d.owner) continue;
    snap_.routeConfigs[d.port].exact.try_emplace(d.form, d.vh);
    std::vector<uint32_t>& ports = snap_.servicePorts[d.form];
    if (std::find(ports.begin(), ports.end(), d.port) == ports.end()) ports.push_back(d.port);
  }
  for (auto& [port, rc] : snap_.routeConfigs) {
    std::stable_sort(rc.wildcards.begin(), rc.wildcards.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
}

std::vector<config::ConfigError> Compiler::run() {
  // Sized up front: rehashing tables of tens of thousands of strings is a
  // large share of compile time at 10k services.
  const config::Resources& res = snap_.resources;
  snap_.kubernetesServices = config::kubernetesServices(res, snap_.warnings);
  const size_t services = res.serviceEntries.size() + snap_.kubernetesServices.size();
  services_.reserve(services);
  endpointCache_.reserve(services);
  drByHost_.reserve(res.destinationRules.size());
  vsByHost_.reserve(res.virtualServices.size());
  snap_.clusterIndex.reserve(2 * services + 2 * res.virtualServices.size());
  domains_.reserve(5 * services);
  indexServices();
  indexDestinationRules();
  indexVirtualServices();
  buildServiceHosts();
  buildVirtualServiceOnlyHosts();
  publishDomains();
  buildGateways();
  std::vector<uint32_t> gatewayPorts, outboundPorts;
  for (const auto& l : snap_.gatewayListeners) {
    if (!l->tcp() && std::find(gatewayPorts.begin(), gatewayPorts.end(), l->port) == gatewayPorts.end())
      gatewayPorts.push_back(l->port);
  }
  for (const auto& [port, rc] : snap_.routeConfigs) outboundPorts.push_back(port);
  snap_.localRateLimits = compileLocalRateLimits(res.envoyFilters, options_.gatewayLabels, gatewayPorts, outboundPorts,
                                                 core::SteadyClock().nowNs(), snap_.warnings);
  snap_.rateLimitPolicies = compileRateLimitPolicies(res.envoyFilters, options_.gatewayLabels, snap_.warnings);
  snap_.globalRateLimits = compileGlobalRateLimits(
      res.envoyFilters, res.rateLimitDomains, snap_.rateLimitPolicies, options_.gatewayLabels,
      [&](std::string_view name) { return snap_.findCluster(name); }, snap_.warnings);
  // A patch both kinds read (a route's local limit and its rate_limits)
  // would say the same thing twice.
  std::unordered_set<std::string> seen;
  std::vector<std::string> unique;
  for (std::string& w : snap_.warnings) {
    if (seen.insert(w).second) unique.push_back(std::move(w));
  }
  snap_.warnings = std::move(unique);
  return std::move(errors_);
}

}  // namespace detail

std::expected<std::shared_ptr<const Snapshot>, std::vector<config::ConfigError>> compile(
    config::Resources resources, uint64_t version, const CompileOptions& options) {
  auto snap = std::make_shared<Snapshot>();
  // Routes point into the resources, so they move in first and never move again.
  snap->resources = std::move(resources);
  snap->version = version;
  std::vector<config::ConfigError> errors = detail::Compiler(*snap, options).run();
  if (!errors.empty()) return std::unexpected(std::move(errors));
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

}  // namespace sluice::route
