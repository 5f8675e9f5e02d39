// Request-path lookups over a compiled Snapshot. compile() lives in
// compile.cc.
#include <algorithm>

#include "route/match.h"
#include "route/table.h"

namespace sluice::route {

namespace {

// Lower-cases `host` into a per-thread buffer (capacity is kept, so no
// allocation after warm-up) and drops a trailing root dot.
const std::string& normalizedHost(std::string_view host) {
  thread_local std::string buf;
  buf.assign(host.data(), host.size());
  for (char& c : buf) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (!buf.empty() && buf.back() == '.') buf.pop_back();
  return buf;
}

}  // namespace

bool Route::matches_request(const RequestView& req, const CompiledMatch** matched) const {
  if (matched) *matched = nullptr;
  if (matches.empty()) return true;
  for (const auto& m : matches) {
    if (m->matches(req)) {
      if (matched) *matched = m.get();
      return true;
    }
  }
  return false;
}

const WeightedCluster* Route::pick(uint64_t random) const {
  if (totalWeight == 0) return nullptr;
  // Multiply-shift maps the 64-bit value onto [0, totalWeight) without the
  // bias of `%` and without a division.
  uint64_t r = static_cast<uint64_t>((static_cast<unsigned __int128>(random) * totalWeight) >> 64);
  for (const WeightedCluster& wc : clusters) {
    if (r < wc.weight) return &wc;
    r -= wc.weight;
  }
  return nullptr;  // unreachable while totalWeight is the sum of weights
}

bool TcpRoute::matchesConnection(uint32_t dstAddrBe, uint32_t port) const {
  if (matches.empty()) return true;
  for (const Match& m : matches) {
    if (m.port && *m.port != port) continue;
    if (m.subnets.empty()) return true;
    for (auto [net, mask] : m.subnets) {
      if ((dstAddrBe & mask) == net) return true;
    }
  }
  return false;
}

const TcpRoute::Dest* TcpRoute::pick(uint64_t random) const {
  if (totalWeight == 0) return nullptr;
  uint64_t r = static_cast<uint64_t>((static_cast<unsigned __int128>(random) * totalWeight) >> 64);
  for (const Dest& d : clusters) {
    if (r < d.weight) return &d;
    r -= d.weight;
  }
  return nullptr;
}

const TcpRoute* TcpService::match(uint32_t dstAddrBe) const {
  for (const TcpRoute& r : routes) {
    if (r.matchesConnection(dstAddrBe, port)) return &r;
  }
  return nullptr;
}

const Route* VirtualHost::match(const RequestView& req, const CompiledMatch** matched) const {
  for (const Route& r : routes) {
    if (r.matches_request(req, matched)) return &r;
  }
  return nullptr;
}

const VirtualHost* RouteConfig::find(std::string_view host) const {
  const std::string& h = normalizedHost(host);
  if (auto it = exact.find(h); it != exact.end()) return it->second;
  if (!wildcardIndex.empty()) {
    // Leftmost dot first = longest suffix first. "*.example.com" needs at
    // least one label before ".example.com", which a dot at index 0 lacks.
    for (size_t dot = h.find('.', 1); dot != std::string::npos; dot = h.find('.', dot + 1)) {
      // unordered_map<std::string> has no heterogeneous find here; the
      // suffix copy is small and stays in SSO for most names.
      if (auto it = wildcardIndex.find(h.substr(dot)); it != wildcardIndex.end()) return it->second;
    }
  }
  return star;
}

// As Envoy ranks filter chains by server name (Istio makes one per tls
// route match): an exact name, else the longest wildcard, else "*"; among
// equals, the first route.
const TcpRoute* GatewayTlsServer::routeFor(std::string_view sni) const {
  const TcpRoute* best = nullptr;
  size_t bestRank = 0;  // 0 none, 1 "*", 2 + suffix length: a wildcard, SIZE_MAX: exact
  for (const SniRoute& r : sniRoutes) {
    for (const std::string& h : r.sniHosts) {
      size_t rank = 0;
      if (h == sni) {
        rank = SIZE_MAX;
      } else if (h == "*") {
        rank = 1;
      } else if (h.size() > 2 && h[0] == '*' && sni.size() > h.size() - 1 &&
                 sni.ends_with(std::string_view(h).substr(1))) {
        rank = 2 + h.size();
      }
      if (rank > bestRank) {
        best = &r.route;
        bestRank = rank;
      }
    }
  }
  return best;
}

const GatewayTlsServer* GatewayListener::selectServer(std::string_view sni) const {
  const GatewayTlsServer* best = nullptr;
  size_t bestLen = 0;  // the matched wildcard's suffix length
  const GatewayTlsServer* any = nullptr;
  for (const auto& t : tlsServers) {
    if (t->serverNames.empty()) {
      if (!any) any = t.get();
      continue;
    }
    if (sni.empty()) continue;
    for (const std::string& name : t->serverNames) {
      if (name == sni) return t.get();
      // "*.a.com" covers "b.a.com" and "c.b.a.com", not "a.com".
      if (name.size() > 1 && name[0] == '*') {
        std::string_view suffix = std::string_view(name).substr(1);
        if (sni.size() > suffix.size() && sni.ends_with(suffix) && suffix.size() > bestLen) {
          best = t.get();
          bestLen = suffix.size();
        }
      }
    }
  }
  return best ? best : any;
}

const VirtualHost* Snapshot::findVirtualHost(uint32_t port, std::string_view hostNoPort,
                                             uint32_t* resolvedPort) const {
  auto lookup = [&](uint32_t p) -> const VirtualHost* {
    auto it = routeConfigs.find(p);
    if (it == routeConfigs.end()) return nullptr;
    const VirtualHost* vh = it->second.find(hostNoPort);
    if (vh && resolvedPort) *resolvedPort = p;
    return vh;
  };
  if (port != 0) return lookup(port);

  // Port unknown: the service's only port, else port 80 if it has one.
  auto choose = [](const std::vector<uint32_t>& ports) -> uint32_t {
    if (ports.size() == 1) return ports[0];
    return std::find(ports.begin(), ports.end(), 80u) != ports.end() ? 80u : 0u;
  };
  if (auto it = servicePorts.find(normalizedHost(hostNoPort)); it != servicePorts.end()) {
    uint32_t p = choose(it->second);
    return p ? lookup(p) : nullptr;
  }
  // Not a known name: a wildcard or `*` virtual host may still take it. The
  // number of distinct ports is small, so scanning the route configs is cheap.
  std::vector<uint32_t> candidates;
  for (const auto& [p, rc] : routeConfigs) {
    if (rc.find(hostNoPort)) candidates.push_back(p);
  }
  uint32_t p = choose(candidates);
  return p ? lookup(p) : nullptr;
}

const Cluster* Snapshot::findCluster(std::string_view name) const {
  auto it = clusterIndex.find(std::string(name));
  return it == clusterIndex.end() ? nullptr : it->second;
}

Redirect Redirect::compile(const config::HTTPRedirect& spec) {
  Redirect r;
  r.uri = spec.uri;
  r.authority = spec.authority;
  r.port = spec.port;
  if (spec.derivePort == "FROM_PROTOCOL_DEFAULT") r.derivePort = DerivePort::FromProtocolDefault;
  if (spec.derivePort == "FROM_REQUEST_PORT") r.derivePort = DerivePort::FromRequestPort;
  r.scheme = spec.scheme;
  r.code = spec.redirectCode;
  return r;
}

}  // namespace sluice::route
