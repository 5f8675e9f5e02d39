// Compiled routing state: what a worker consults for every request.
//
// compile() turns validated Istio resources into an immutable Snapshot:
// per destination port, a hash of host -> virtual host (exact names and every
// alias form of a service), a list of wildcard suffixes (longest first) and a
// `*` fallback; per virtual host, the HTTP routes in order with their matchers
// compiled; per route, the weighted clusters; per cluster, its endpoints and
// load-balancing policy. Workers share one Snapshot read-only and swap to a
// new one between requests.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/loader.h"
#include "config/model.h"
#include "http/header_map.h"
#include "http/parser.h"
#include "route/cors.h"
#include "route/fault.h"
#include "route/global_rate_limit.h"
#include "route/header_ops.h"
#include "route/rate_limit.h"
#include "route/retry.h"

namespace sluice::tls {
template <class Spec, class Ctx>
class Credentials;
struct ServerSpec;
struct ClientSpec;
class ServerContext;
class ClientContext;
using ServerCredentials = Credentials<ServerSpec, ServerContext>;
using ClientCredentials = Credentials<ClientSpec, ClientContext>;
class CredentialStore;
}  // namespace sluice::tls

namespace sluice::route {

struct Endpoint {
  std::string address;  // IPv4 literal as configured
  uint16_t port = 0;
  sockaddr_in sockaddr{};  // ready for connect()
  std::map<std::string, std::string> labels;
  uint32_t weight = 1;
  std::string key;  // "address:port", stable across snapshots (pool key)
};

// Passthrough: to the address the client dialled (known with eBPF capture);
// without one, the cluster's endpoints by least request.
enum class LbPolicy { LeastRequest, RoundRobin, Random, RingHash, Maglev, Passthrough };

// DestinationRule consistentHash: what a request is hashed on, and the table.
struct HashPolicy {
  enum class Kind { Header, Cookie, SourceIp, QueryParam };
  Kind kind = Kind::Header;
  std::string name;  // header (lower case), cookie or query parameter name
  std::string cookiePath;
  std::optional<config::Duration> cookieTtl;  // a generated cookie's Max-Age
  uint64_t ringSize = 1024;                   // ringHash.minimumRingSize
  uint64_t maglevSize = 65537;                // maglev.tableSize (prime)
};

// DestinationRule connectionPool settings for the cluster's upstream
// connections; 0 / nullopt: the daemon's defaults.
struct UpstreamSettings {
  uint64_t connectTimeoutNs = 0;          // tcp.connectTimeout
  uint64_t idleTimeoutNs = 0;             // http.idleTimeout (else tcp.idleTimeout)
  uint64_t maxConnectionDurationNs = 0;   // tcp.maxConnectionDuration
  uint64_t tcpIdleTimeoutNs = 0;          // tcp.idleTimeout: TCP-route connections
  struct Keepalive {
    uint32_t probes = 0;        // 0: the kernel's default
    uint64_t timeNs = 0;        // idle before the first probe
    uint64_t intervalNs = 0;    // between probes
  };
  std::optional<Keepalive> keepalive;     // tcp.tcpKeepalive
  // trafficPolicy.tls SIMPLE or MUTUAL: connections speak TLS (the live
  // client context; null only when compiled without a credential store,
  // and then connections fail rather than go out in plaintext).
  bool tls = false;
  std::shared_ptr<tls::ClientCredentials> tlsCredentials;
  // The HTTP version requests go out in: the port's protocol (HTTP2, GRPC)
  // or the DestinationRule's h2UpgradePolicy UPGRADE make it HTTP/2,
  // useClientProtocol makes it the client's.
  enum class Protocol : uint8_t { Http1, Http2, ClientProtocol };
  Protocol protocol = Protocol::Http1;
  uint32_t maxConcurrentStreams = 0;  // http.maxConcurrentStreams; 0: the server's SETTINGS
  // http.http2KeepAlive: a PING every interval on each HTTP/2 connection,
  // which closes when the ACK is not back within the timeout. 0: no PINGs.
  uint64_t h2PingIntervalNs = 0;
  uint64_t h2PingTimeoutNs = 0;
};

struct Cluster {
  std::string name;         // outbound|9080|v1|reviews.default.svc.cluster.local
  std::string serviceHost;  // reviews.default.svc.cluster.local
  std::string subset;       // "" for the whole service
  uint32_t port = 0;
  std::vector<Endpoint> endpoints;
  LbPolicy lb = LbPolicy::LeastRequest;
  std::optional<HashPolicy> hash;  // with lb RingHash or Maglev
  // loadBalancer.warmupDurationSecs (ROUND_ROBIN, LEAST_REQUEST): an endpoint
  // added to the cluster gets a share growing linearly from 10% to all of it
  // over this long. 0: none.
  uint64_t warmupNs = 0;
  UpstreamSettings upstream;
  // Effective policy after subset/port-level inheritance; null when the
  // DestinationRule sets none. Boxed: most clusters have none, and inline
  // it took ~0.9 KB in every one of them.
  std::shared_ptr<const config::TrafficPolicy> policy;
  size_t index = 0;  // dense index into Snapshot::clusters, for per-worker state
  // Endpoints differ in weight: balancers use their weighted forms. Set by
  // compile(); whoever builds a Cluster by hand sets it too.
  bool unequalWeights = false;
  bool missing = false;  // referenced but not resolvable (unknown subset/service)
};

// What matchers look at. Views into the request head.
struct RequestView {
  std::string_view method;
  std::string_view path;       // path + query, origin form ("/a/b?x=1")
  std::string_view authority;  // Host / :authority as sent (may include :port)
  std::string_view scheme = "http";
  uint32_t port = 0;           // destination port the request was routed by
  const http::HeaderMap* headers = nullptr;
};

struct WeightedCluster {
  const Cluster* cluster = nullptr;
  uint32_t weight = 0;
  const config::HTTPRouteDestination* spec = nullptr;
  // The destination's `headers`, then the route's, merged once; null when
  // there is nothing to do.
  std::shared_ptr<const HeaderMutation> requestHeaders;
  std::shared_ptr<const HeaderMutation> responseHeaders;
};

class CompiledMatch;  // one HTTPMatchRequest, compiled (route/match.h)

// HTTPRoute.redirect, compiled: what the Location header is built from.
struct Redirect {
  enum class DerivePort { None, FromProtocolDefault, FromRequestPort };
  std::string uri;        // empty: the request's path
  std::string authority;  // empty: the request's host
  std::optional<uint32_t> port;
  DerivePort derivePort = DerivePort::None;
  std::string scheme;     // empty: http
  uint32_t code = 301;
  static Redirect compile(const config::HTTPRedirect& spec);
};

// HTTPRoute.directResponse, compiled.
struct DirectResponse {
  uint32_t status = 0;
  std::string body;
};

struct Route {
  std::string name;                          // http[].name or "<vs>.<index>"
  std::vector<std::shared_ptr<const CompiledMatch>> matches;  // empty = match all
  std::vector<WeightedCluster> clusters;     // empty for redirect/directResponse
  uint64_t totalWeight = 0;
  const config::HTTPRoute* spec = nullptr;   // its source, for the admin views only
  const config::VirtualService* virtualService = nullptr;
  std::optional<config::Duration> timeout;
  // VirtualService annotation sluice.io/sticky-weighted-split: "true": the
  // weighted choice uses the request's consistent-hash key, not chance.
  bool stickySplit = false;
  // The HTTPRoute's actions, compiled.
  std::optional<PathRewrite> rewrite;
  RetryPolicy retry = RetryPolicy::istioDefault();
  std::optional<FaultPolicy> fault;
  std::optional<CorsPolicy> cors;
  struct Mirror {
    const Cluster* cluster = nullptr;
    uint32_t ppm = 1'000'000;  // chance in millionths
  };
  std::vector<Mirror> mirrors;
  // The route answers itself: no destination is asked.
  std::optional<Redirect> redirect;
  std::optional<DirectResponse> directResponse;
  // Route-level response headers, for answers made without a destination
  // (directResponse, redirect); null when none.
  std::shared_ptr<const HeaderMutation> localResponseHeaders;

  // `matched`, when given, receives the block that matched (null when the
  // route has none): a uri rewrite replaces what that block's uri matched.
  bool matches_request(const RequestView& req, const CompiledMatch** matched = nullptr) const;
  // `random` is any uniformly distributed 64-bit value.
  const WeightedCluster* pick(uint64_t random) const;
};

struct VirtualHost {
  std::string name;  // "reviews.default.svc.cluster.local:9080"
  std::vector<std::string> domains;
  std::vector<Route> routes;
  // A Gateway server with tls.httpsRedirect: every request is answered with
  // a 301 to the same URL over https.
  bool httpsRedirect = false;
  // First route whose match blocks accept the request, or nullptr.
  const Route* match(const RequestView& req, const CompiledMatch** matched = nullptr) const;
};

// A VirtualService tcp[] rule compiled for one TCP service port (TCP Traffic
// Shifting): the L4 match, then a weighted choice of clusters made once per
// connection.
struct TcpRoute {
  struct Match {
    std::optional<uint32_t> port;  // destination port
    // destinationSubnets as (network, mask), both network byte order; empty
    // = any destination address.
    std::vector<std::pair<uint32_t, uint32_t>> subnets;
  };
  std::vector<Match> matches;  // ORed; empty = match all
  struct Dest {
    const Cluster* cluster = nullptr;
    uint32_t weight = 0;
  };
  std::vector<Dest> clusters;
  uint64_t totalWeight = 0;

  bool matchesConnection(uint32_t dstAddrBe, uint32_t port) const;
  // `random` is any uniformly distributed 64-bit value; nullptr when every
  // weight is 0.
  const Dest* pick(uint64_t random) const;
};

// A non-HTTP service port (TCP, MYSQL, MONGO, TLS, ...): proxied at L4.
struct TcpService {
  std::string host;  // FQDN
  uint32_t port = 0;
  std::vector<TcpRoute> routes;  // first match wins
  const TcpRoute* match(uint32_t dstAddrBe) const;
};

struct RouteConfig {  // one per destination port, as Istio builds for a sidecar
  uint32_t port = 0;
  std::unordered_map<std::string, const VirtualHost*> exact;  // lower-case host forms
  std::vector<std::pair<std::string, const VirtualHost*>> wildcards;  // ".example.com", longest first
  const VirtualHost* star = nullptr;
  // ".example.com" -> virtual host: find() hashes each dot-suffix of the host
  // (longest first), so wildcard lookup costs O(labels), not O(wildcards).
  std::unordered_map<std::string, const VirtualHost*> wildcardIndex;
  const VirtualHost* find(std::string_view host) const;  // host without port, any case
};

// One HTTPS server of a Gateway listener (an Envoy filter chain): the SNI
// names it answers, its certificate, and its own virtual hosts (compiled
// from the VirtualServices bound to its Gateway, as Istio gives each HTTPS
// server its own route configuration).
struct GatewayTlsServer {
  std::string label;                     // as GatewayListener::servers
  std::vector<std::string> serverNames;  // exact or "*.suffix"; empty: any name, or none
  // The live certificate (rotated in place); null when compiled without a
  // credential store (sluicectl).
  std::shared_ptr<tls::ServerCredentials> credentials;
  RouteConfig routes;
  // PASSTHROUGH: nothing is terminated. The connection, ClientHello and
  // all, goes to the first of these whose sniHosts cover its SNI (the
  // `tls` routes of the VirtualServices bound to the Gateway), then bytes
  // are relayed as for a TCP route.
  bool passthrough = false;
  struct SniRoute {
    std::vector<std::string> sniHosts;  // lower case; exact, "*.suffix" or "*"
    TcpRoute route;
  };
  std::vector<SniRoute> sniRoutes;
  const TcpRoute* routeFor(std::string_view sni) const;
  // A TLS-protocol server that terminates: after the handshake the
  // plaintext goes at L4 to this route (its bound VirtualServices' tcp
  // route); unset for HTTPS servers, whose plaintext is HTTP.
  std::optional<TcpRoute> tcpRoute;
};

// A listener the configuration asks for beside the outbound one: the
// servers of the served Gateways that share one bind address and port,
// either plaintext HTTP (HTTP, HTTP2 as HTTP/1.1, GRPC-WEB; one route table
// for all) or HTTPS (TLS terminated, one route table per server, the
// server chosen by SNI). The daemon opens it at port +
// --gateway-port-offset, on bindBe.
struct GatewayListener {
  // Identity across snapshots: (address bound, network order) << 16 | port.
  uint64_t key = 0;
  uint32_t bindBe = 0;  // the server's `bind`, else CompileOptions::gatewayBindBe
  uint32_t port = 0;                 // Server.port.number
  std::vector<std::string> servers;  // "istio-system/main-gateway: http (HTTP 80)"
  RouteConfig routes;                // plaintext servers
  std::vector<std::unique_ptr<GatewayTlsServer>> tlsServers;  // HTTPS servers, in load order
  bool tls() const { return !tlsServers.empty(); }
  // TCP servers: every connection goes at L4 to this route.
  std::optional<TcpRoute> tcpRoute;
  bool tcp() const { return tcpRoute.has_value(); }
  // The server a ClientHello naming `sni` (lower case, may be empty) gets:
  // an exact name, else the longest wildcard covering it, else a server
  // for any name (Envoy's filter chain match). Null: none.
  const GatewayTlsServer* selectServer(std::string_view sni) const;
  static uint64_t makeKey(uint32_t bindBe, uint32_t port) { return (uint64_t(bindBe) << 16) | port; }
};

// What compile() needs to know of the daemon.
struct CompileOptions {
  // --gateway-labels: the labels this proxy's gateway workload has; a
  // Gateway is served when its selector matches them. Unset: every Gateway
  // is served (a node proxy is every gateway of its node).
  std::optional<std::map<std::string, std::string>> gatewayLabels;
  // --gateway-bind (network order): where servers without `bind` listen.
  uint32_t gatewayBindBe = 0;
  // Loads HTTPS servers' certificates (and keeps them rotated). Null: the
  // servers are compiled without credentials (sluicectl) and cannot serve.
  tls::CredentialStore* credentials = nullptr;
};

class Snapshot {
 public:
  config::Resources resources;
  // The services config::kubernetesServices built from the Kubernetes
  // Services, EndpointSlices and Pods in `resources`.
  std::vector<config::ServiceEntry> kubernetesServices;
  std::vector<std::unique_ptr<VirtualHost>> virtualHosts;
  std::vector<std::unique_ptr<Cluster>> clusters;
  std::unordered_map<uint32_t, RouteConfig> routeConfigs;  // by port
  std::unordered_map<std::string, std::vector<uint32_t>> servicePorts;  // host form -> ports
  // IPv4 ServiceEntry addresses x ports, in first-seen order without
  // duplicates: what the kernel may capture and hand to the engine.
  // Two services claiming one VIP:port: the first keeps it.
  struct Vip {
    uint32_t addrBe = 0;  // network byte order
    uint16_t port = 0;    // host byte order
    std::string host;     // the service's FQDN, for metrics
    bool tcp = false;     // an L4 port: Snapshot::findTcp() has its routes
    bool operator==(const Vip& o) const { return addrBe == o.addrBe && port == o.port; }
  };
  std::vector<Vip> captureVips;
  std::vector<std::string> warnings;  // e.g. a route to an unknown subset
  uint64_t version = 0;
  std::unordered_map<std::string, const Cluster*> clusterIndex;  // by Cluster::name
  // Specs of the routes compile() makes up (the default route of a service
  // without a VirtualService), so Route::spec and WeightedCluster::spec are
  // never null.
  std::vector<std::unique_ptr<config::HTTPRoute>> syntheticRoutes;

  // Picks the virtual host for a request: port from the original destination
  // or the Host/URI port (0 = unknown: the service's only port is used).
  const VirtualHost* findVirtualHost(uint32_t port, std::string_view hostNoPort,
                                     uint32_t* resolvedPort = nullptr) const;
  const Cluster* findCluster(std::string_view name) const;

  // EnvoyFilter local rate limits, in the order they apply (rate_limit.h).
  std::vector<std::shared_ptr<LocalRateLimit>> localRateLimits;
  // EnvoyFilter global rate limits, in the order they apply
  // (global_rate_limit.h), and the rate_limits both kinds build
  // descriptors from.
  std::vector<std::shared_ptr<const GlobalRateLimit>> globalRateLimits;
  RateLimitPolicies rateLimitPolicies;

  // Gateway listeners, in the order their first server was loaded.
  std::vector<std::unique_ptr<GatewayListener>> gatewayListeners;
  const GatewayListener* findGatewayListener(uint64_t key) const {
    for (const auto& l : gatewayListeners) {
      if (l->key == key) return l.get();
    }
    return nullptr;
  }

  std::vector<std::unique_ptr<TcpService>> tcpServices;
  // (VIP network order << 16 | port host order) -> its L4 service.
  std::unordered_map<uint64_t, const TcpService*> tcpByVip;
  // The L4 service a captured connection to addrBe:port belongs to, or
  // nullptr (then it is HTTP).
  const TcpService* findTcp(uint32_t addrBe, uint16_t port) const {
    auto it = tcpByVip.find((uint64_t(addrBe) << 16) | port);
    return it == tcpByVip.end() ? nullptr : it->second;
  }
};

std::expected<std::shared_ptr<const Snapshot>, std::vector<config::ConfigError>> compile(
    config::Resources resources, uint64_t version, const CompileOptions& options = {});

}  // namespace sluice::route
