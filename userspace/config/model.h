// Typed model of the Istio networking API kinds Sluice reads.
//
// Field names follow istio/api (networking/v1alpha3/*.proto) so a reader can
// go from YAML to struct without a lookup table. Optional scalars are
// std::optional where "absent" and "zero" mean different things to Istio
// (mirrorPercentage, retries, timeout, ...). Everything here is plain data:
// the loader (loader.h) fills it and validates it; route/ compiles it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace re2 {
class RE2;
}

namespace sluice::config {

using Duration = std::chrono::nanoseconds;

// Where a value came from, for error messages and /config_dump.
struct SourceRef {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown
};

struct ObjectMeta {
  std::string name;
  std::string namespace_ = "default";
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
};

// StringMatch: exactly one of exact/prefix/regex, or none (a presence match
// when used for headers/queryParams).
struct StringMatch {
  enum class Kind { Exact, Prefix, Regex, Present };
  Kind kind = Kind::Present;
  std::string value;
  std::shared_ptr<const re2::RE2> regex;  // compiled when kind == Regex
};

struct Percent {
  double value = 0;  // 0..100
};

struct PortSelector {
  uint32_t number = 0;
};

struct Destination {
  std::string host;  // expanded to FQDN by the loader
  std::string subset;
  std::optional<PortSelector> port;
};

struct HeaderOperations {
  std::map<std::string, std::string> set;
  std::map<std::string, std::string> add;
  std::vector<std::string> remove;
};

struct Headers {
  std::optional<HeaderOperations> request;
  std::optional<HeaderOperations> response;
};

struct HTTPMatchRequest {
  std::string name;
  std::optional<StringMatch> uri;
  std::optional<StringMatch> scheme;
  std::optional<StringMatch> method;
  std::optional<StringMatch> authority;
  std::map<std::string, StringMatch> headers;         // keys lower-cased
  std::map<std::string, StringMatch> withoutHeaders;  // keys lower-cased
  std::map<std::string, StringMatch> queryParams;
  std::optional<uint32_t> port;
  std::map<std::string, std::string> sourceLabels;
  std::vector<std::string> gateways;
  std::string sourceNamespace;
  std::optional<StringMatch> statPrefix;  // unused; kept for completeness
  bool ignoreUriCase = false;
};

struct HTTPRouteDestination {
  Destination destination;
  int32_t weight = 0;
  bool weightSet = false;
  std::optional<Headers> headers;
};

struct HTTPRedirect {
  std::string uri;
  std::string authority;
  std::optional<uint32_t> port;
  std::string derivePort;  // "", FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT
  std::string scheme;
  uint32_t redirectCode = 301;
};

struct HTTPDirectResponse {
  uint32_t status = 0;
  std::optional<std::string> body;  // string or decoded bytes
};

struct RegexRewrite {
  std::string match;
  std::string rewrite;
  std::shared_ptr<const re2::RE2> regex;
};

struct HTTPRewrite {
  std::string uri;
  std::string authority;
  std::optional<RegexRewrite> uriRegexRewrite;
};

struct HTTPRetry {
  int32_t attempts = 0;
  std::optional<Duration> perTryTimeout;
  std::string retryOn;  // comma-separated, as written
  bool retryRemoteLocalities = false;
  std::optional<bool> retryIgnorePreviousHosts;
  std::optional<Duration> backoff;
};

struct HTTPFaultInjection {
  struct Delay {
    std::optional<Duration> fixedDelay;
    std::optional<Percent> percentage;
    std::optional<int32_t> percent;  // deprecated integer form
  };
  struct Abort {
    uint32_t httpStatus = 0;
    std::string grpcStatus;
    std::optional<Percent> percentage;
  };
  std::optional<Delay> delay;
  std::optional<Abort> abort;
};

struct HTTPMirrorPolicy {
  Destination destination;
  std::optional<Percent> percentage;
};

struct CorsPolicy {
  std::vector<StringMatch> allowOrigins;
  std::vector<std::string> allowMethods;
  std::vector<std::string> allowHeaders;
  std::vector<std::string> exposeHeaders;
  std::optional<Duration> maxAge;
  std::optional<bool> allowCredentials;
  std::string unmatchedPreflights;  // "", FORWARD, IGNORE
};

struct Delegate {
  std::string name;
  std::string namespace_;
};

struct HTTPRoute {
  std::string name;
  std::vector<HTTPMatchRequest> match;
  std::vector<HTTPRouteDestination> route;
  std::optional<HTTPRedirect> redirect;
  std::optional<HTTPDirectResponse> directResponse;
  std::optional<Delegate> delegate;
  std::optional<HTTPRewrite> rewrite;
  std::optional<Duration> timeout;
  std::optional<HTTPRetry> retries;
  std::optional<HTTPFaultInjection> fault;
  std::optional<Destination> mirror;
  std::optional<Percent> mirrorPercentage;
  std::optional<int32_t> mirrorPercent;  // deprecated integer form
  std::vector<HTTPMirrorPolicy> mirrors;
  std::optional<CorsPolicy> corsPolicy;
  std::optional<Headers> headers;
  SourceRef source;  // the line of this http[] entry
};

struct L4MatchAttributes {
  std::vector<std::string> destinationSubnets;
  std::optional<uint32_t> port;
  std::map<std::string, std::string> sourceLabels;
  std::vector<std::string> gateways;
  std::string sourceNamespace;
};

struct RouteDestination {
  Destination destination;
  int32_t weight = 0;
};

struct TCPRoute {
  std::vector<L4MatchAttributes> match;
  std::vector<RouteDestination> route;
};

struct TLSMatchAttributes {
  std::vector<std::string> sniHosts;
  std::vector<std::string> destinationSubnets;
  std::optional<uint32_t> port;
  std::map<std::string, std::string> sourceLabels;
  std::vector<std::string> gateways;
  std::string sourceNamespace;
};

struct TLSRoute {
  std::vector<TLSMatchAttributes> match;
  std::vector<RouteDestination> route;
};

struct VirtualService {
  ObjectMeta metadata;
  std::vector<std::string> hosts;     // expanded (FQDN) where short
  std::vector<std::string> gateways;  // as written, namespace-qualified by loader
  std::vector<HTTPRoute> http;
  std::vector<TLSRoute> tls;
  std::vector<TCPRoute> tcp;
  std::vector<std::string> exportTo;
  SourceRef source;
};

// --- DestinationRule

struct LoadBalancerSettings {
  enum class Simple { Unspecified, LeastRequest, RoundRobin, Random, Passthrough, LeastConn };
  struct ConsistentHash {
    struct HttpCookie {
      std::string name;
      std::string path;
      std::optional<Duration> ttl;
    };
    std::string httpHeaderName;
    std::optional<HttpCookie> httpCookie;
    bool useSourceIp = false;
    std::string httpQueryParameterName;
    std::optional<uint64_t> ringHashMinimumRingSize;  // ringHash.minimumRingSize
    std::optional<uint64_t> maglevTableSize;          // maglev.tableSize
    bool maglev = false;
    uint64_t minimumRingSize = 0;  // deprecated top-level field
  };
  struct LocalityLbSetting {
    bool enabled = true;
    std::optional<bool> enabledSet;
  };
  std::optional<Simple> simple;
  std::optional<ConsistentHash> consistentHash;
  std::optional<LocalityLbSetting> localityLbSetting;
  std::optional<Duration> warmupDurationSecs;
};

struct ConnectionPoolSettings {
  struct TCP {
    std::optional<int32_t> maxConnections;
    std::optional<Duration> connectTimeout;
    struct Keepalive {
      std::optional<uint32_t> probes;
      std::optional<Duration> time;
      std::optional<Duration> interval;
    };
    std::optional<Keepalive> tcpKeepalive;
    std::optional<Duration> maxConnectionDuration;
    std::optional<Duration> idleTimeout;
  };
  struct HTTP {
    std::optional<int32_t> http1MaxPendingRequests;
    std::optional<int32_t> http2MaxRequests;
    std::optional<int32_t> maxRequestsPerConnection;
    std::optional<int32_t> maxRetries;
    std::optional<Duration> idleTimeout;
    std::string h2UpgradePolicy;
    bool useClientProtocol = false;
    std::optional<int32_t> maxConcurrentStreams;
    // PINGs on HTTP/2 connections to the upstream: one every `interval`,
    // the connection closed when its ACK is not back within `timeout`.
    struct Http2KeepAlive {
      std::optional<Duration> interval;
      std::optional<Duration> timeout;
    };
    std::optional<Http2KeepAlive> http2KeepAlive;
  };
  std::optional<TCP> tcp;
  std::optional<HTTP> http;
};

struct OutlierDetection {
  std::optional<bool> splitExternalLocalOriginErrors;
  std::optional<uint32_t> consecutiveLocalOriginFailures;
  std::optional<uint32_t> consecutiveGatewayErrors;
  std::optional<uint32_t> consecutive5xxErrors;
  std::optional<Duration> interval;
  std::optional<Duration> baseEjectionTime;
  std::optional<int32_t> maxEjectionPercent;
  std::optional<int32_t> minHealthPercent;
};

struct ClientTLSSettings {
  std::string mode;  // DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL
  std::string clientCertificate;
  std::string privateKey;
  std::string caCertificates;
  std::string credentialName;
  std::vector<std::string> subjectAltNames;
  std::string sni;
  std::optional<bool> insecureSkipVerify;
};

struct TrafficPolicy {
  struct PortTrafficPolicy {
    std::optional<PortSelector> port;
    std::optional<LoadBalancerSettings> loadBalancer;
    std::optional<ConnectionPoolSettings> connectionPool;
    std::optional<OutlierDetection> outlierDetection;
    std::optional<ClientTLSSettings> tls;
  };
  std::optional<LoadBalancerSettings> loadBalancer;
  std::optional<ConnectionPoolSettings> connectionPool;
  std::optional<OutlierDetection> outlierDetection;
  std::optional<ClientTLSSettings> tls;
  std::vector<PortTrafficPolicy> portLevelSettings;
};

struct Subset {
  std::string name;
  std::map<std::string, std::string> labels;
  std::optional<TrafficPolicy> trafficPolicy;
};

struct DestinationRule {
  ObjectMeta metadata;
  std::string host;  // expanded
  std::optional<TrafficPolicy> trafficPolicy;
  std::vector<Subset> subsets;
  std::vector<std::string> exportTo;
  std::map<std::string, std::string> workloadSelector;
  SourceRef source;
};

// --- Gateway

struct ServerTLSSettings {
  bool httpsRedirect = false;
  std::string mode;  // PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL
  std::string serverCertificate;
  std::string privateKey;
  std::string caCertificates;
  std::string credentialName;
  std::vector<std::string> credentialNames;
  std::vector<std::string> subjectAltNames;
  std::string minProtocolVersion;
  std::string maxProtocolVersion;
  std::vector<std::string> cipherSuites;
};

struct Server {
  struct Port {
    uint32_t number = 0;
    std::string protocol;  // HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO
    std::string name;
    uint32_t targetPort = 0;
  };
  Port port;
  std::string bind;
  std::vector<std::string> hosts;
  std::optional<ServerTLSSettings> tls;
  std::string defaultEndpoint;
  std::string name;
};

struct Gateway {
  ObjectMeta metadata;
  std::vector<Server> servers;
  std::map<std::string, std::string> selector;
  SourceRef source;
};

// --- ServiceEntry / WorkloadEntry

struct ServicePort {
  uint32_t number = 0;
  std::string protocol;
  std::string name;
  uint32_t targetPort = 0;
};

struct WorkloadEntry {
  ObjectMeta metadata;
  std::string address;
  std::map<std::string, uint32_t> ports;  // port name -> number
  std::map<std::string, std::string> labels;
  std::string network;
  std::string locality;
  uint32_t weight = 0;
  std::string serviceAccount;
  SourceRef source;
};

struct ServiceEntry {
  ObjectMeta metadata;
  std::vector<std::string> hosts;
  std::vector<std::string> addresses;
  std::vector<ServicePort> ports;
  std::string location;    // MESH_EXTERNAL, MESH_INTERNAL
  std::string resolution;  // NONE, STATIC, DNS, DNS_ROUND_ROBIN
  std::vector<WorkloadEntry> endpoints;  // inline endpoints (metadata unused)
  std::map<std::string, std::string> workloadSelector;
  std::vector<std::string> exportTo;
  std::vector<std::string> subjectAltNames;
  SourceRef source;
  // Built by the Kubernetes registry from a Service (kube_registry.h), not
  // written as a ServiceEntry: it takes precedence over ServiceEntries of
  // the same host, as in istiod.
  bool fromKubernetes = false;
};

// envoy.filters.http.local_ratelimit (LocalRateLimit v3), as an EnvoyFilter
// inserts it into the HTTP filter chain.
struct LocalRateLimitConfig {
  std::string statPrefix;
  // No token_bucket: the filter is in the chain, and limits where a route's
  // or virtual host's typed_per_filter_config (or a descriptor) says so.
  bool hasBucket = false;
  uint32_t maxTokens = 0;
  uint32_t tokensPerFill = 1;
  Duration fillInterval{};
  // `descriptors`: a bucket of its own for the requests whose descriptors
  // (from the route's rate_limits actions) include these entries exactly.
  struct Descriptor {
    std::vector<std::pair<std::string, std::string>> entries;
    uint32_t maxTokens = 0;
    uint32_t tokensPerFill = 1;
    Duration fillInterval{};
  };
  std::vector<Descriptor> descriptors;
  // always_consume_default_token_bucket (Envoy's default: true): the
  // default bucket is taken from even when a descriptor's was.
  bool alwaysConsumeDefault = true;
  // filter_enabled / filter_enforced default values, in parts per million
  // of requests (Envoy's default when unset: none).
  uint32_t enabledPpm = 0;
  uint32_t enforcedPpm = 0;
  uint32_t status = 429;  // status.code (below 400: 429, as Envoy)
  struct HeaderToAdd {
    std::string name;  // lower case
    std::string value;
    // APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD,
    // OVERWRITE_IF_EXISTS.
    std::string appendAction = "APPEND_IF_EXISTS_OR_ADD";
    bool keepEmptyValue = false;  // else an empty value is not sent
  };
  std::vector<HeaderToAdd> responseHeaders;
};

// envoy.filters.http.ratelimit (RateLimit v3): global limits, decided by
// the descriptors a request's rate_limits actions build.
struct GlobalRateLimitConfig {
  std::string domain;
  bool failureModeDeny = false;
  Duration timeout = std::chrono::milliseconds(20);  // Envoy's default
  uint32_t rateLimitedStatus = 429;  // rate_limited_status.code (below 400: 429)
  uint32_t statusOnError = 500;      // status_on_error.code, with failure_mode_deny
  bool xEnvoyRateLimitedHeader = true;  // !disable_x_envoy_ratelimited_header
  std::string serviceCluster;  // rate_limit_service.grpc_service.envoy_grpc.cluster_name
  std::string statPrefix;
};

// One action of a route or virtual host `rate_limits` entry: each appends
// one (key, value) entry to the request's descriptor, or (when it cannot)
// no descriptor is made for its entry.
struct RateLimitActionConfig {
  enum class Kind { RequestHeaders, RemoteAddress, GenericKey, HeaderValueMatch, DestinationCluster };
  Kind kind = Kind::GenericKey;
  std::string headerName;     // request_headers (lower case)
  std::string descriptorKey;  // the entry's key (each kind has Envoy's default)
  std::string descriptorValue;  // generic_key, header_value_match
  bool skipIfAbsent = false;  // request_headers
  bool expectMatch = true;    // header_value_match
  // header_value_match's `headers` (Envoy HeaderMatcher): all must hold.
  struct HeaderCond {
    enum class Op { Exact, Prefix, Suffix, Contains, Regex, Present };
    std::string name;  // lower case
    Op op = Op::Present;
    std::string value;
    std::shared_ptr<const re2::RE2> regex;
    bool ignoreCase = false;
    bool present = true;  // present_match: false matches an absent header
    bool invert = false;
  };
  std::vector<HeaderCond> headers;
};

struct RateLimitPolicyConfig {
  std::vector<RateLimitActionConfig> actions;
};

// One configPatches entry. Sluice enforces the HTTP local rate limit and
// the global rate limit inserted as HTTP_FILTERs, and the rate_limits a
// VIRTUAL_HOST or HTTP_ROUTE patch merges in; every other patch is kept
// only to be reported (`unsupported` says what it patches) and is ignored.
struct EnvoyFilterPatch {
  std::string applyTo;
  std::string context = "ANY";  // ANY, GATEWAY, SIDECAR_INBOUND, SIDECAR_OUTBOUND
  // The port it applies to: match.listener.portNumber for a listener
  // patch (HTTP_FILTER), match.routeConfiguration.portNumber for a route
  // configuration one (VIRTUAL_HOST, HTTP_ROUTE), as Istio reads them.
  std::optional<uint32_t> portNumber;
  // match.routeConfiguration: the virtual host's name ("" or unset: any)
  // and, for HTTP_ROUTE, the route's name.
  std::string vhostName;
  std::string routeName;
  // The HTTP filter's name in the chain (an HTTP_FILTER insert's `name`),
  // or the typed_per_filter_config key a route patch configures.
  std::string filterName;
  std::string operation;
  std::optional<LocalRateLimitConfig> localRateLimit;
  std::optional<GlobalRateLimitConfig> globalRateLimit;
  std::vector<RateLimitPolicyConfig> rateLimits;  // VIRTUAL_HOST / HTTP_ROUTE merges
  bool mergesRateLimits = false;
  std::string unsupported;
  int line = 0;
};

struct EnvoyFilter {
  ObjectMeta metadata;
  std::map<std::string, std::string> workloadSelector;
  int32_t priority = 0;
  std::vector<EnvoyFilterPatch> patches;
  SourceRef source;
};

// A rate limit configuration in envoyproxy/ratelimit's format: a domain
// and its descriptor tree. Read from a ConfigMap's data (the seed's
// `ratelimit-config`, key config.yaml) or a plain YAML file.
struct RateLimitDescriptorConfig {
  std::string key;
  std::string value;  // empty: any value of `key`; a trailing '*': a prefix
  struct Limit {
    uint32_t requestsPerUnit = 0;
    // second 1, minute 60, hour 3600, day 86400, week, month (30 days),
    // year (365 days): the service's window lengths; 0 when unlimited.
    uint32_t unitSeconds = 0;
    bool unlimited = false;
    std::string name;
  };
  std::optional<Limit> rateLimit;
  bool shadowMode = false;
  std::vector<RateLimitDescriptorConfig> descriptors;
};

struct RateLimitDomainConfig {
  std::string domain;
  std::vector<RateLimitDescriptorConfig> descriptors;
  SourceRef source;
};

// --- Kubernetes core objects (kube_objects.cc), trimmed to what the service
// registry needs (kube_registry.h builds services from them as istiod does).
// Fields kubectl prints that Sluice does not use are skipped, not refused.

struct KubeServicePort {
  std::string name;
  std::string protocol = "TCP";  // TCP, UDP, SCTP
  std::optional<std::string> appProtocol;
  uint32_t port = 0;
  // targetPort: a number, or the name of a container port (resolved per
  // pod by the EndpointSlice controller; the slice carries the number).
  uint32_t targetPortNumber = 0;
  std::string targetPortName;
};

struct KubeService {
  ObjectMeta metadata;
  std::string type = "ClusterIP";  // ClusterIP, NodePort, LoadBalancer, ExternalName
  // spec.clusterIPs (or spec.clusterIP): "None" makes the service headless.
  std::vector<std::string> clusterIPs;
  bool headless = false;
  std::string externalName;
  std::vector<KubeServicePort> ports;
  std::map<std::string, std::string> selector;
  bool publishNotReadyAddresses = false;
  SourceRef source;
};

struct EndpointSlice {
  ObjectMeta metadata;
  std::string serviceName;  // label kubernetes.io/service-name
  std::string addressType;  // IPv4, IPv6, FQDN
  struct Port {
    std::string name;  // the Service port's name ("" for an unnamed port)
    uint32_t port = 0;
    std::string protocol = "TCP";
  };
  std::vector<Port> ports;
  struct Endpoint {
    std::vector<std::string> addresses;
    // conditions; an absent `ready` means ready, as the API says.
    bool ready = true;
    bool terminating = false;
    // targetRef of kind Pod: whose labels the endpoint carries.
    std::string podName, podNamespace;
    std::string nodeName;
  };
  std::vector<Endpoint> endpoints;
  SourceRef source;
};

struct Pod {
  ObjectMeta metadata;
  std::string nodeName;
  std::vector<std::string> podIPs;  // status.podIPs (or status.podIP)
  std::string phase;
  SourceRef source;
};

// Every resource of one consistent configuration.
struct Resources {
  std::vector<VirtualService> virtualServices;
  std::vector<DestinationRule> destinationRules;
  std::vector<Gateway> gateways;
  std::vector<ServiceEntry> serviceEntries;
  std::vector<WorkloadEntry> workloadEntries;
  std::vector<EnvoyFilter> envoyFilters;
  std::vector<RateLimitDomainConfig> rateLimitDomains;
  std::vector<KubeService> kubeServices;
  std::vector<EndpointSlice> endpointSlices;
  std::vector<Pod> pods;
  std::vector<std::string> files;  // every file read, sorted
};

}  // namespace sluice::config
