// The compiler behind route::compile() (compile.cc: services, clusters,
// virtual hosts; compile_http.cc: HTTP routes and their actions). Private to
// route/.
#pragma once

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "route/match.h"
#include "route/table.h"

namespace sluice::route::detail {


inline std::string lowerCopy(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

inline bool isWildcard(std::string_view host) { return !host.empty() && host[0] == '*'; }

inline bool hasMesh(const std::vector<std::string>& gateways) {
  return gateways.empty() || std::find(gateways.begin(), gateways.end(), "mesh") != gateways.end();
}

inline bool labelsContain(const std::map<std::string, std::string>& have,
                   const std::map<std::string, std::string>& want) {
  for (const auto& [k, v] : want) {
    auto it = have.find(k);
    if (it == have.end() || it->second != v) return false;
  }
  return true;
}

// Protocols whose traffic a sidecar routes with HTTP route tables; an unset
// protocol is sniffed by Istio and so is HTTP-routable too.
inline bool isHttpProtocol(std::string_view p) {
  std::string l = lowerCopy(p);
  return l.empty() || l == "http" || l == "http2" || l == "grpc" || l == "grpc-web" ||
         l == "http_proxy";
}

inline std::string clusterName(uint32_t port, std::string_view subset, std::string_view host) {
  std::string n = "outbound|";
  n += std::to_string(port);
  n += '|';
  n += subset;
  n += '|';
  n += host;
  return n;
}

// Each dot-suffix of `host` as a wildcard host, longest first:
// "a.b.com" -> "*.b.com", "*.com".
template <class F>
void forEachWildcardForm(std::string_view host, F&& f) {
  for (size_t dot = host.find('.', 1); dot != std::string_view::npos; dot = host.find('.', dot + 1)) {
    std::string wc = "*";
    wc.append(host.substr(dot));
    if (f(wc)) return;
  }
}

struct Service {
  std::string host;  // lower case
  const config::ServiceEntry* se = nullptr;
};

class Compiler {
 public:
  Compiler(Snapshot& snap, const CompileOptions& options) : snap_(snap), options_(options) {}
  std::vector<config::ConfigError> run();

 private:
  struct DomainEntry {
    uint32_t port;
    std::string form;
    const VirtualHost* vh;
    const std::string* owner;  // the host whose virtual host this is (stable storage)
    bool primary;
  };

  void indexServices();
  void indexDestinationRules();
  void indexVirtualServices();
  const config::VirtualService* virtualServiceFor(const std::string& host);
  // The first mesh VirtualService with tcp routes for `host` (exact, then
  // the longest covering wildcard, then `*`), or nullptr.
  const config::VirtualService* tcpVirtualServiceFor(const std::string& host) const;
  const config::DestinationRule* destinationRuleFor(const std::string& host) const;
  const std::vector<Endpoint>& serviceEndpoints(const Service& svc, const config::ServicePort& sp);
  // `fromSlice`: an EndpointSlice endpoint, which serves only the ports its
  // slice lists (by name); others fall back to targetPort, then the number.
  void addEndpoint(const config::WorkloadEntry& e, const config::ServiceEntry& se,
                   const config::ServicePort& sp, std::vector<Endpoint>& out, bool fromSlice = false);
  const Cluster* cluster(const config::Destination& d, uint32_t vhostPort, const std::string& context);
  const Cluster* serviceCluster(const std::string& host, uint32_t port, const std::string& context);
  std::optional<config::TrafficPolicy> effectivePolicy(const config::DestinationRule* dr,
                                                       const config::Subset* subset, uint32_t port);
  VirtualHost* newVirtualHost(const std::string& host, uint32_t port);
  // trafficPolicy.tls for the cluster's connections (compile_tls.cc).
  void clientTls(Cluster& c, const config::ClientTLSSettings& tls);
  // Which HTTP version `c` speaks to its endpoints (port `sp`'s protocol,
  // h2UpgradePolicy, useClientProtocol), as Istio decides it.
  void upstreamProtocol(Cluster& c, const config::ServicePort& sp, const std::string& context);
  // `gateway`: whose traffic the routes serve, "mesh" or "ns/name".
  void addRoutes(VirtualHost& vh, const config::VirtualService& vs, uint32_t port,
                 std::string_view gateway = "mesh");
  struct RouteSource {
    const config::HTTPRoute* spec;
    std::string path;   // "spec.http[2]" or "spec.http[2].delegate[0]"
    std::string index;  // "2" or "2.0": the default route name's suffix
  };
  std::vector<RouteSource> routeSources(const config::VirtualService& vs, const std::string& resource);
  bool compileActions(Route& r, const config::HTTPRoute& http, const config::VirtualService& vs,
                      const std::string& resource, const std::string& path, uint32_t port);
  void addDefaultRoute(VirtualHost& vh, const std::string& host, uint32_t port);
  void addCaptureVips(const std::string& host, const std::vector<std::string>& addresses,
                      uint32_t port, const TcpService* tcp = nullptr);
  const TcpService* addTcpService(const Service& svc, uint32_t port,
                                  const config::VirtualService* vs);
  void addDomains(const std::string& host, const std::vector<std::string>& vips, uint32_t port,
                  VirtualHost& vh);
  void buildServiceHosts();
  void buildVirtualServiceOnlyHosts();
  // Gateway listeners (compile_gateway.cc).
  void buildGateways();
  void addGatewayServer(const config::Gateway& gw, const std::string& gwName, const config::Server& server,
                        size_t index);
  // The listener of (bind, port), made on first use.
  GatewayListener& gatewayListener(uint32_t bindBe, uint32_t port);
  // A terminating HTTPS server's own filter chain, to join `l` (null: a
  // new listener), or null (warned) when it cannot be served. `http`: it
  // serves HTTP (ALPN h2 and http/1.1), not a TCP route.
  std::unique_ptr<GatewayTlsServer> makeTlsServer(const GatewayListener* l, const config::Server& server,
                                                  const std::string& label, bool http);
  bool tcpRouteFor(TcpRoute& out, const config::Gateway& gw, const std::string& gwName,
                   const config::Server& server, const std::string& label);
  // PASSTHROUGH: the bound VirtualServices' tls routes, by SNI.
  void bindSniRoutes(GatewayTlsServer& t, const config::Gateway& gw, const std::string& gwName,
                     const config::Server& server);
  void bindGatewayHosts(RouteConfig& rc, const config::Gateway& gw, const std::string& gwName,
                        const config::Server& server, bool httpsRedirect);
  void addGatewayHost(RouteConfig& rc, const std::string& domain, const config::VirtualService& vs,
                      const std::string& gwName, bool httpsRedirect);
  struct GatewayHost;
  // The route table's virtual host for `domain`, made on first use.
  GatewayHost& gatewayHost(RouteConfig& rc, const std::string& domain);
  void publishDomains();
  // The same VirtualService is compiled once per host and port: say each
  // thing once.
  void warn(std::string msg) {
    if (warned_.insert(msg).second) snap_.warnings.push_back(std::move(msg));
  }

  Snapshot& snap_;
  const CompileOptions& options_;
  std::vector<config::ConfigError> errors_;
  // Gateway "ns/name" -> the VirtualServices bound to it, in load order.
  std::unordered_map<std::string, std::vector<const config::VirtualService*>> vsByGateway_;
  // (route table, domain) -> its virtual host and the VirtualServices
  // already compiled into it.
  struct GatewayHost {
    VirtualHost* vh = nullptr;
    std::vector<const config::VirtualService*> from;
  };
  std::map<std::pair<const RouteConfig*, std::string>, GatewayHost> gatewayHosts_;
  std::unordered_map<std::string, Service> services_;
  std::vector<const Service*> serviceOrder_;
  std::unordered_map<std::string, std::vector<const config::WorkloadEntry*>> workloadsByNs_;
  std::unordered_map<std::string, const config::DestinationRule*> drByHost_;
  std::unordered_map<std::string, const config::VirtualService*> vsByHost_;
  std::unordered_map<std::string, const config::VirtualService*> tcpVsByHost_;
  std::vector<std::string> vsHostOrder_;  // hosts claimed by a VS, in load order
  std::unordered_set<std::string> vsHostsUsed_;
  std::unordered_map<std::string, std::vector<Endpoint>> endpointCache_;  // "host|port"
  std::unordered_set<const config::WorkloadEntry*> badEndpointsWarned_;
  std::unordered_map<const config::HTTPMatchRequest*, std::shared_ptr<const CompiledMatch>> matchCache_;
  std::unordered_set<const config::HTTPMatchRequest*> badMatches_;
  // Delegating route -> the merged routes standing in for it.
  std::unordered_map<const config::HTTPRoute*, std::vector<const config::HTTPRoute*>> delegateCache_;
  std::vector<DomainEntry> domains_;
  std::unordered_set<std::string> warned_;
};

inline std::string resourceName(const char* kind, const config::ObjectMeta& m) {
  return std::string(kind) + " " + m.namespace_ + "/" + m.name;
}
// "ServiceEntry ns/name", or "Service ns/name" for one the Kubernetes
// registry built.
inline std::string serviceResourceName(const config::ServiceEntry& se) {
  return resourceName(se.fromKubernetes ? "Service" : "ServiceEntry", se.metadata);
}

}  // namespace sluice::route::detail
