// The examples of /work/shared/seed/istio-traffic-management.txt, with their
// indentation restored, must load cleanly. Fragments that are only an `http:`
// list in the article are wrapped in a minimal VirtualService. The article has
// no ServiceEntry/WorkloadEntry; those examples follow Istio's documentation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/loader.h"
#include "test_util.h"

namespace sluice::config {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;

LoadReport mustLoad(std::string_view yaml) {
  auto l = testing::load(yaml, "seed.yaml");
  EXPECT_TRUE(l.errors.empty()) << testing::joinLines(l.errors) << "---\n" << yaml;
  return l.report;
}

std::string wrapHttp(std::string_view httpList, std::string_view hosts = "[example]") {
  return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: fragment}\nspec:\n  hosts: " +
         std::string(hosts) + "\n" + std::string(testing::trimFirstNewline(httpList));
}

TEST(SeedExamples, BasicRouting) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews # Kubernetes service name
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
)");
  ASSERT_EQ(r.resources.virtualServices.size(), 1u);
  EXPECT_EQ(r.resources.virtualServices[0].http[0].route[0].destination.subset, "v2");
}

TEST(SeedExamples, HeaderBasedRouting) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  # Internal testers get v3
  - match:
    - headers:
        x-user-group:
          exact: internal-testers
    route:
    - destination:
        host: reviews
        subset: v3
  # Beta users get v2
  - match:
    - headers:
        x-user-group:
          exact: beta
    - headers:
        cookie:
          regex: ".*beta=true.*"
    route:
    - destination:
        host: reviews
        subset: v2
  # Everyone else gets v1
  - route:
    - destination:
        host: reviews
        subset: v1
)");
  const auto& http = r.resources.virtualServices.at(0).http;
  ASSERT_EQ(http.size(), 3u);
  EXPECT_EQ(http[1].match.size(), 2u);
  EXPECT_NE(http[1].match[1].headers.at("cookie").regex, nullptr);
}

TEST(SeedExamples, UriMatching) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-gateway
spec:
  hosts:
  - api.example.com
  gateways:
  - api-gateway
  http:
  # API v2 gets the new service
  - match:
    - uri:
        prefix: /api/v2/users
    route:
    - destination:
        host: users-service-v2
        port:
          number: 8080
    timeout: 10s
  # API v1 goes to legacy
  - match:
    - uri:
        prefix: /api/v1
    route:
    - destination:
        host: legacy-api
        port:
          number: 8080
    timeout: 30s # Legacy is slower
  # Health checks
  - match:
    - uri:
        regex: "^/health(z)?$"
    route:
    - destination:
        host: health-checker
  # Static assets with longer timeout
  - match:
    - uri:
        prefix: /static
    route:
    - destination:
        host: cdn-service
      headers:
        response:
          set:
            cache-control: "public, max-age=86400"
  # Default catch-all
  - route:
    - destination:
        host: frontend-service
        port:
          number: 3000
)");
  const auto& vs = r.resources.virtualServices.at(0);
  EXPECT_THAT(vs.gateways, ElementsAre("default/api-gateway"));
  EXPECT_EQ(*vs.http[1].timeout, 30s);
  EXPECT_EQ(vs.http[3].route[0].headers->response->set.at("cache-control"), "public, max-age=86400");
  EXPECT_EQ(vs.http[4].route[0].destination.port->number, 3000u);
}

TEST(SeedExamples, RewriteAndHeaderManipulationFragments) {
  auto r = mustLoad(wrapHttp(R"(
  http:
  - match:
    - uri:
        prefix: /api/v2/catalog
    rewrite:
      uri: /catalog
    route:
    - destination:
        host: catalog-service
        port:
          number: 8080
  # Rewrite authority (Host header) for cross-cluster routing
  - match:
    - uri:
        prefix: /external-api
    rewrite:
      uri: /api
      authority: external-service.partner.com
    route:
    - destination:
        host: external-service
)"));
  EXPECT_EQ(r.resources.virtualServices.at(0).http[1].rewrite->authority, "external-service.partner.com");

  auto h = mustLoad(wrapHttp(R"(
  http:
  - route:
    - destination:
        host: backend-service
    headers:
      request:
        set:
          x-forwarded-client-cert: "%DOWNSTREAM_PEER_CERT_V_START%"
          x-request-start: "%START_TIME(%s.%3f)%"
        add:
          x-custom-trace: "mesh-routed"
        remove:
        - x-internal-debug
      response:
        set:
          strict-transport-security: "max-age=31536000; includeSubDomains"
          x-content-type-options: "nosniff"
        remove:
        - server
        - x-powered-by
)"));
  const auto& headers = *h.resources.virtualServices.at(0).http[0].headers;
  EXPECT_EQ(headers.request->add.at("x-custom-trace"), "mesh-routed");
  EXPECT_THAT(headers.response->remove, ElementsAre("server", "x-powered-by"));
}

TEST(SeedExamples, DestinationRules) {
  auto subsets = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      connectionPool:
        tcp:
          maxConnections: 100
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      connectionPool:
        tcp:
          maxConnections: 50 # New version gets lower limits initially
  - name: v3
    labels:
      version: v3
)");
  EXPECT_EQ(subsets.resources.destinationRules.at(0).subsets.size(), 3u);
  EXPECT_EQ(*subsets.resources.destinationRules[0].subsets[1].trafficPolicy->connectionPool->tcp->maxConnections, 50);

  auto lb = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST # Default for the service
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN # Override for this subset
)");
  EXPECT_EQ(lb.resources.destinationRules.at(0).trafficPolicy->loadBalancer->simple,
            LoadBalancerSettings::Simple::LeastRequest);

  auto hash = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: user-service
spec:
  host: user-service
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user-id
        # Or use one of these alternatives:
        # httpCookie:
        #   name: session-id
        #   ttl: 3600s
        # useSourceIp: true
        # httpQueryParameterName: user_id
    connectionPool:
      http:
        http2MaxRequests: 1000
)");
  EXPECT_EQ(hash.resources.destinationRules.at(0).trafficPolicy->loadBalancer->consistentHash->httpHeaderName,
            "x-user-id");

  auto pool = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100 # Max TCP connections
        connectTimeout: 30ms # TCP connect timeout
        tcpKeepalive:
          time: 7200s # Keepalive interval
          interval: 75s # Keepalive probe interval
      http:
        h2UpgradePolicy: DEFAULT # Upgrade HTTP/1.1 to HTTP/2 when possible
        http1MaxPendingRequests: 100 # Max pending HTTP/1.1 requests
        http2MaxRequests: 1000 # Max active HTTP/2 requests
        maxRequestsPerConnection: 10 # Reuse connections up to 10 requests
        maxRetries: 3 # Max concurrent retries
        idleTimeout: 300s # Close idle connections after 5 minutes
)");
  const auto& cp = *pool.resources.destinationRules.at(0).trafficPolicy->connectionPool;
  EXPECT_EQ(*cp.tcp->connectTimeout, 30ms);
  EXPECT_EQ(*cp.tcp->tcpKeepalive->time, 7200s);
  EXPECT_EQ(*cp.http->idleTimeout, 300s);

  auto breaker = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 100ms
      http:
        http1MaxPendingRequests: 50
        http2MaxRequests: 100
        maxRequestsPerConnection: 10
        maxRetries: 3
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 30
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 5
)");
  const auto& od = *breaker.resources.destinationRules.at(0).trafficPolicy->outlierDetection;
  EXPECT_EQ(*od.consecutive5xxErrors, 5u);
  EXPECT_EQ(*od.maxEjectionPercent, 50);
  EXPECT_EQ(*od.consecutiveLocalOriginFailures, 5u);

  auto canary = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 50
        http2MaxRequests: 100
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
)");
  EXPECT_EQ(canary.resources.destinationRules.at(0).subsets.size(), 2u);
}

TEST(SeedExamples, Gateway) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: production-gateway
spec:
  selector:
    istio: ingress
  servers:
  # HTTPS with TLS termination
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: production-tls # Secret in the gateway namespace
    hosts:
    - "app.example.com"
    - "api.example.com"
  # HTTP with redirect to HTTPS
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "app.example.com"
    - "api.example.com"
    tls:
      httpsRedirect: true
  # Mutual TLS for partner APIs
  - port:
      number: 443
      name: https-mtls
      protocol: HTTPS
    tls:
      mode: MUTUAL
      credentialName: partner-mtls-cert
    hosts:
    - "partner-api.example.com"
)");
  const auto& gw = r.resources.gateways.at(0);
  ASSERT_EQ(gw.servers.size(), 3u);
  EXPECT_EQ(gw.servers[2].tls->mode, "MUTUAL");
  EXPECT_TRUE(gw.servers[1].tls->httpsRedirect);
}

TEST(SeedExamples, CanaryMirrorFaultsRetries) {
  auto weighted = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
)");
  const auto& route = weighted.resources.virtualServices.at(0).http[0].route;
  EXPECT_EQ(route[0].weight, 90);
  EXPECT_EQ(route[1].weight, 10);

  auto start = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 100
    - destination:
        host: reviews
        subset: v2
      weight: 0
)");
  EXPECT_EQ(start.resources.virtualServices.at(0).http[0].route[1].weight, 0);

  auto mirror = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
    mirror:
      host: reviews
      subset: v2
    mirrorPercentage:
      value: 100.0
)");
  EXPECT_EQ(mirror.resources.virtualServices.at(0).http[0].mirrorPercentage->value, 100.0);

  auto delay = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 50.0
        fixedDelay: 3s
    route:
    - destination:
        host: ratings
        subset: v1
)");
  EXPECT_EQ(*delay.resources.virtualServices.at(0).http[0].fault->delay->fixedDelay, 3s);

  auto abort = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      abort:
        percentage:
          value: 10.0
        httpStatus: 503
    route:
    - destination:
        host: ratings
        subset: v1
)");
  EXPECT_EQ(abort.resources.virtualServices.at(0).http[0].fault->abort->httpStatus, 503u);

  auto combined = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  # Chaos testing traffic gets faults
  - match:
    - headers:
        x-chaos-test:
          exact: "true"
    fault:
      delay:
        percentage:
          value: 50.0
        fixedDelay: 5s
      abort:
        percentage:
          value: 10.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  # Normal traffic is unaffected
  - route:
    - destination:
        host: ratings
        subset: v1
)");
  EXPECT_EQ(combined.resources.virtualServices.at(0).http[0].match[0].headers.at("x-chaos-test").value, "true");

  auto retries = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 3s
      retryOn: gateway-error,connect-failure,refused-stream,503,retriable-4xx
      retryRemoteLocalities: true # Try endpoints in other zones on retry
    route:
    - destination:
        host: reviews
        subset: v2
)");
  const auto& rp = *retries.resources.virtualServices.at(0).http[0].retries;
  EXPECT_EQ(rp.attempts, 3);
  EXPECT_EQ(*rp.perTryTimeout, 3s);
  EXPECT_TRUE(rp.retryRemoteLocalities);

  auto perRoute = mustLoad(wrapHttp(R"(
  http:
  # Read operations: short timeout, aggressive retries
  - match:
    - method:
        exact: GET
    timeout: 5s
    retries:
      attempts: 3
      perTryTimeout: 1500ms
      retryOn: gateway-error,connect-failure,refused-stream,503
    route:
    - destination:
        host: api-service
  # Write operations: longer timeout, no retries
  - match:
    - method:
        exact: POST
    - method:
        exact: PUT
    - method:
        exact: DELETE
    timeout: 30s
    retries:
      attempts: 0 # No retries for writes
    route:
    - destination:
        host: api-service
)"));
  EXPECT_EQ(*perRoute.resources.virtualServices.at(0).http[0].retries->perTryTimeout, 1500ms);
  EXPECT_EQ(perRoute.resources.virtualServices.at(0).http[1].retries->attempts, 0);
}

TEST(SeedExamples, EnvoyFilterAndDeployment) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: rate-limit
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      istio: ingress
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter:
              name: envoy.filters.http.router
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: http_local_rate_limiter
          token_bucket:
            max_tokens: 1000
            tokens_per_fill: 1000
            fill_interval: 60s
          filter_enabled:
            runtime_key: local_rate_limit_enabled
            default_value:
              numerator: 100
              denominator: HUNDRED
          filter_enforced:
            runtime_key: local_rate_limit_enforced
            default_value:
              numerator: 100
              denominator: HUNDRED
          response_headers_to_add:
          - append_action: OVERWRITE_IF_EXISTS_OR_ADD
            header:
              key: x-rate-limited
              value: "true"
          status:
            code: TooManyRequests
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
spec:
  replicas: 3
  selector:
    matchLabels:
      app: reviews
      version: v2
  template:
    metadata:
      labels:
        app: reviews
        version: v2
    spec:
      containers:
      - name: reviews
        image: reviews:2.0
        ports:
        - containerPort: 8080
)");
  ASSERT_EQ(r.resources.envoyFilters.size(), 1u);
  const EnvoyFilter& ef = r.resources.envoyFilters[0];
  EXPECT_EQ(ef.workloadSelector, (std::map<std::string, std::string>{{"istio", "ingress"}}));
  ASSERT_EQ(ef.patches.size(), 1u);
  EXPECT_EQ(ef.patches[0].context, "GATEWAY");
  ASSERT_TRUE(ef.patches[0].localRateLimit.has_value());
  const LocalRateLimitConfig& l = *ef.patches[0].localRateLimit;
  EXPECT_EQ(l.statPrefix, "http_local_rate_limiter");
  EXPECT_EQ(l.maxTokens, 1000u);
  EXPECT_EQ(l.tokensPerFill, 1000u);
  EXPECT_EQ(l.fillInterval, 60s);
  EXPECT_EQ(l.enabledPpm, 1'000'000u);
  EXPECT_EQ(l.enforcedPpm, 1'000'000u);
  EXPECT_EQ(l.status, 429u);
  ASSERT_EQ(l.responseHeaders.size(), 1u);
  EXPECT_EQ(l.responseHeaders[0].name, "x-rate-limited");
  EXPECT_EQ(l.responseHeaders[0].value, "true");
  EXPECT_EQ(l.responseHeaders[0].appendAction, "OVERWRITE_IF_EXISTS_OR_ADD");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("apps/v1 Deployment reviews-v2"), std::string::npos);
}

TEST(SeedExamples, ServiceEntryAndWorkloadEntry) {
  auto r = mustLoad(R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-https
spec:
  hosts:
  - api.dropboxapi.com
  - www.googleapis.com
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: details-svc
spec:
  hosts:
  - details.bookinfo.com
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 8080
  resolution: DNS
  workloadSelector:
    labels:
      app: details-legacy
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-mongocluster
spec:
  hosts:
  - mymongodb.somedomain # not used
  addresses:
  - 192.192.192.192/24 # VIPs
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
)");
  EXPECT_EQ(r.resources.serviceEntries.size(), 3u);
  EXPECT_EQ(r.resources.workloadEntries.at(0).labels.at("instance-id"), "vm1");
  EXPECT_EQ(r.resources.serviceEntries[2].endpoints[1].address, "3.3.3.3");
}

}  // namespace
}  // namespace sluice::config
