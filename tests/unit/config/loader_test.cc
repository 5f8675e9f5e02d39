// Loader behaviour: kinds, versions, defaults, host expansion, and the exact
// rendering of errors (file:line: resource: path: message).
#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/loader.h"
#include "test_util.h"

namespace sluice::config {
namespace {

using testing::load;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConfigError, StrLeavesOutEmptyParts) {
  EXPECT_EQ((ConfigError{"a.yaml", 3, "VirtualService ns/x", "spec.hosts", "bad"}).str(),
            "a.yaml:3: VirtualService ns/x: spec.hosts: bad");
  EXPECT_EQ((ConfigError{"a.yaml", 0, "", "", "cannot read"}).str(), "a.yaml: cannot read");
  EXPECT_EQ((ConfigError{"a.yaml", 7, "", "", "YAML syntax error: x"}).str(), "a.yaml:7: YAML syntax error: x");
}

TEST(Loader, NegativeWeightExactMessage) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 110
    - destination:
        host: reviews
      weight: -10
)");
  EXPECT_THAT(l.errors, ElementsAre("configs/x.yaml:14: VirtualService default/reviews: "
                                    "spec.http[0].route[1].weight: must not be negative"));
}

TEST(Loader, MinimalVirtualServiceDefaultsAndExpansion) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews, "*.Example.com", ratings.prod]
  gateways: [mesh, my-gw, other/gw2, legacy.istio-system.svc.cluster.local]
  http:
  - match:
    - gateways: [gw3]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 3
    mirror: {host: shadow}
    mirrors:
    - destination: {host: shadow2.ns2}
  tcp:
  - route:
    - destination: {host: db, port: {number: 5432}}
)");
  ASSERT_THAT(l.errors, ElementsAre("configs/x.yaml:15: VirtualService default/reviews: spec.http[0].mirrors: "
                                    "only one of mirror or mirrors may be set"));
  const auto& vs = l.report.resources.virtualServices.at(0);
  EXPECT_EQ(vs.metadata.namespace_, "default");
  EXPECT_EQ(vs.source.file, "configs/x.yaml");
  EXPECT_EQ(vs.source.line, 1);
  EXPECT_THAT(vs.hosts, ElementsAre("reviews.default.svc.cluster.local", "*.example.com", "ratings.prod"));
  EXPECT_THAT(vs.gateways, ElementsAre("mesh", "default/my-gw", "other/gw2", "istio-system/legacy"));
  EXPECT_THAT(vs.http[0].match[0].gateways, ElementsAre("default/gw3"));
  EXPECT_EQ(vs.http[0].route[0].destination.host, "reviews.default.svc.cluster.local");
  EXPECT_TRUE(vs.http[0].route[0].weightSet);
  EXPECT_EQ(vs.http[0].route[0].weight, 3);
  EXPECT_EQ(vs.http[0].mirror->host, "shadow.default.svc.cluster.local");
  EXPECT_EQ(vs.http[0].mirrors[0].destination.host, "shadow2.ns2");
  EXPECT_EQ(vs.http[0].source.line, 9);
  EXPECT_EQ(vs.tcp[0].route[0].destination.host, "db.default.svc.cluster.local");
  EXPECT_EQ(vs.tcp[0].route[0].destination.port->number, 5432u);
}

TEST(Loader, NamespaceFromMetadataUsedForExpansion) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: r
  namespace: prod
spec:
  host: reviews
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  EXPECT_EQ(l.report.resources.destinationRules[0].host, "reviews.prod.svc.cluster.local");
  EXPECT_EQ(l.report.resources.destinationRules[0].metadata.namespace_, "prod");
}

TEST(Loader, AllThreeApiVersionsAccepted) {
  for (const char* v : {"v1", "v1beta1", "v1alpha3"}) {
    std::string yaml = std::string("apiVersion: networking.istio.io/") + v + R"(
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
)";
    auto l = load(yaml);
    EXPECT_TRUE(l.errors.empty()) << v << ": " << testing::joinLines(l.errors);
    EXPECT_EQ(l.report.resources.serviceEntries.size(), 1u) << v;
  }
}

TEST(Loader, MultiDocumentAndEmptyDocuments) {
  auto l = load(R"(
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec: {host: a}
---
---
# only a comment
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec: {host: b}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  ASSERT_EQ(l.report.resources.destinationRules.size(), 2u);
  EXPECT_EQ(l.report.resources.destinationRules[0].source.line, 2);
  EXPECT_EQ(l.report.resources.destinationRules[1].source.line, 10);
  EXPECT_TRUE(l.report.warnings.empty());
}

TEST(Loader, UnknownKindsAreWarningsAndSkipped) {
  auto l = load(R"(
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec: {replicas: 3, whatever: {a: 1}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: EnvoyFilter
metadata: {name: not-in-v1}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec: {host: a}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  EXPECT_EQ(l.report.resources.destinationRules.size(), 1u);
  EXPECT_TRUE(l.report.resources.envoyFilters.empty());
  ASSERT_EQ(l.report.warnings.size(), 3u);
  EXPECT_EQ(l.report.warnings[0], "configs/x.yaml:1: skipping unsupported resource apps/v1 Deployment reviews-v2");
  EXPECT_THAT(l.report.warnings[1], HasSubstr("Sidecar"));
  EXPECT_THAT(l.report.warnings[2], HasSubstr(":11: skipping unsupported resource networking.istio.io/v1 EnvoyFilter"));
}

TEST(Loader, EnvoyFilterPatchesSluiceCannotApplyAreKeptToBeReported) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: rate-limit
  namespace: istio-system
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      value:
        token_bucket: {max_tokens: 1000, fill_interval: 60s}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  ASSERT_EQ(l.report.resources.envoyFilters.size(), 1u);
  const auto& ef = l.report.resources.envoyFilters[0];
  EXPECT_EQ(ef.metadata.name, "rate-limit");
  EXPECT_EQ(ef.metadata.namespace_, "istio-system");
  ASSERT_EQ(ef.patches.size(), 1u);
  EXPECT_EQ(ef.patches[0].applyTo, "HTTP_FILTER");
  EXPECT_EQ(ef.patches[0].context, "ANY");
  EXPECT_FALSE(ef.patches[0].localRateLimit) << "no operation, no typed_config: not an insert of the filter";
  EXPECT_EQ(ef.patches[0].unsupported, "HTTP_FILTER");
}

TEST(Loader, YamlSyntaxErrorNamesFileAndLine) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews
  http: []
)");
  ASSERT_EQ(l.errors.size(), 1u);
  EXPECT_THAT(l.errors[0], ::testing::StartsWith("configs/x.yaml:"));
  EXPECT_THAT(l.errors[0], HasSubstr("YAML syntax error"));
  EXPECT_TRUE(l.report.resources.virtualServices.empty());

  auto tab = load("apiVersion: v1\nkind: X\nmetadata:\n  name: a\n\tbad: tab\n");
  ASSERT_EQ(tab.errors.size(), 1u);
  EXPECT_THAT(tab.errors[0], ::testing::StartsWith("configs/x.yaml:5: YAML syntax error"));
}

// A small file whose aliases would expand to hundreds of thousands of match
// blocks (gigabytes once compiled) is refused as a whole, naming the line.
TEST(Loader, AliasBombIsRefusedWithFileAndLine) {
  std::string text = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bomb
spec:
  hosts: [reviews]
  http:
  - &r
    match: &m
    - &one
      uri: {regex: "/a[0-9]+"}
)";
  for (int i = 0; i < 299; ++i) text += "    - *one\n";
  text += "    route:\n    - destination: {host: reviews}\n";
  for (int i = 0; i < 999; ++i) text += "  - *r\n";
  auto l = load(text);
  ASSERT_EQ(l.errors.size(), 1u);
  EXPECT_THAT(l.errors[0], ::testing::StartsWith("configs/x.yaml:12: YAML error: aliases expand"));
  EXPECT_TRUE(l.report.resources.virtualServices.empty());
}

TEST(Loader, PresenceMatchAndHeaderNamesLowerCased) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - match:
    - headers:
        X-User-Group: {exact: beta}
        X-Present: {}
        X-Regex: {regex: "v[0-9]+"}
      withoutHeaders:
        X-Debug: {}
      queryParams:
        Mode: {prefix: fast}
      uri: {prefix: /api}
      ignoreUriCase: true
    route:
    - destination: {host: r}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& m = l.report.resources.virtualServices[0].http[0].match[0];
  ASSERT_EQ(m.headers.size(), 3u);
  EXPECT_EQ(m.headers.at("x-user-group").kind, StringMatch::Kind::Exact);
  EXPECT_EQ(m.headers.at("x-user-group").value, "beta");
  EXPECT_EQ(m.headers.at("x-present").kind, StringMatch::Kind::Present);
  const auto& rx = m.headers.at("x-regex");
  EXPECT_EQ(rx.kind, StringMatch::Kind::Regex);
  ASSERT_NE(rx.regex, nullptr);
  EXPECT_TRUE(RE2::FullMatch("v12", *rx.regex));
  EXPECT_FALSE(RE2::FullMatch("x12", *rx.regex));
  EXPECT_EQ(m.withoutHeaders.at("x-debug").kind, StringMatch::Kind::Present);
  EXPECT_EQ(m.queryParams.at("Mode").kind, StringMatch::Kind::Prefix);  // query keys keep case
  EXPECT_EQ(m.uri->kind, StringMatch::Kind::Prefix);
  EXPECT_EQ(m.uri->value, "/api");
  EXPECT_TRUE(m.ignoreUriCase);
}

TEST(Loader, RegexRewriteCompiled) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - rewrite:
      uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: '\2/instance/\1'}
    route:
    - destination: {host: r}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& rr = *l.report.resources.virtualServices[0].http[0].rewrite->uriRegexRewrite;
  ASSERT_NE(rr.regex, nullptr);
  EXPECT_EQ(rr.rewrite, "\\2/instance/\\1");
  std::string s = "/service/a/b";
  EXPECT_TRUE(RE2::Replace(&s, *rr.regex, rr.rewrite));
  EXPECT_EQ(s, "/b/instance/a");
}

TEST(Loader, DirectResponseAndRedirectParsed) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {exact: /bin}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - redirect: {uri: /new, redirectCode: 308, derivePort: FROM_REQUEST_PORT}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& http = l.report.resources.virtualServices[0].http;
  EXPECT_EQ(http[0].directResponse->status, 418u);
  EXPECT_EQ(http[0].directResponse->body, "short and stout");
  EXPECT_EQ(http[1].directResponse->body, "hello");
  EXPECT_EQ(http[2].redirect->redirectCode, 308u);
  EXPECT_EQ(http[2].redirect->uri, "/new");
  EXPECT_EQ(http[2].redirect->derivePort, "FROM_REQUEST_PORT");
}

TEST(Loader, DelegateVirtualServiceNeedsNoHosts) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [bookinfo.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /productpage}}]
    delegate: {name: productpage, namespace: nsa}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: nsa}
spec:
  http:
  - route:
    - destination: {host: productpage-v1}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& vss = l.report.resources.virtualServices;
  EXPECT_EQ(vss[0].http[0].delegate->name, "productpage");
  EXPECT_EQ(vss[0].http[0].delegate->namespace_, "nsa");
  EXPECT_TRUE(vss[1].hosts.empty());
  EXPECT_EQ(vss[1].http[0].route[0].destination.host, "productpage-v1.nsa.svc.cluster.local");
}

TEST(Loader, WorkloadEntryAndServiceEntry) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: vms}
spec:
  address: 127.100.0.7
  ports: {http: 8080}
  labels: {app: details, version: v1}
  weight: 5
  serviceAccount: details-legacy
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: remote}
spec:
  network: net2
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details-svc, namespace: vms}
spec:
  hosts: [details.bookinfo.com]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  resolution: STATIC
  workloadSelector:
    labels: {app: details}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static}
spec:
  hosts: [Static.Example.COM]
  addresses: [240.0.0.1/32]
  ports: [{number: 9080, name: http, protocol: http}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 19080}, labels: {version: v1}}
  - {address: 127.0.0.2}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& r = l.report.resources;
  ASSERT_EQ(r.workloadEntries.size(), 2u);
  EXPECT_EQ(r.workloadEntries[0].address, "127.100.0.7");
  EXPECT_EQ(r.workloadEntries[0].ports.at("http"), 8080u);
  EXPECT_EQ(r.workloadEntries[0].labels.at("version"), "v1");
  EXPECT_EQ(r.workloadEntries[0].weight, 5u);
  EXPECT_EQ(r.workloadEntries[1].network, "net2");
  ASSERT_EQ(r.serviceEntries.size(), 2u);
  EXPECT_EQ(r.serviceEntries[0].workloadSelector.at("app"), "details");
  EXPECT_EQ(r.serviceEntries[0].ports[0].targetPort, 8080u);
  EXPECT_THAT(r.serviceEntries[1].hosts, ElementsAre("static.example.com"));  // not expanded
  ASSERT_EQ(r.serviceEntries[1].endpoints.size(), 2u);
  EXPECT_EQ(r.serviceEntries[1].endpoints[0].ports.at("http"), 19080u);
}

TEST(Loader, GatewayParsed) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["ns1/App.example.com", "*/api.example.com"]
    tls: {mode: SIMPLE, credentialName: app-cert, minProtocolVersion: TLSV1_2}
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 127.0.0.1
    tls: {httpsRedirect: true}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& gw = l.report.resources.gateways.at(0);
  EXPECT_EQ(gw.selector.at("istio"), "ingress");
  ASSERT_EQ(gw.servers.size(), 2u);
  EXPECT_EQ(gw.servers[0].port.number, 8443u);
  EXPECT_THAT(gw.servers[0].hosts, ElementsAre("ns1/app.example.com", "*/api.example.com"));
  EXPECT_EQ(gw.servers[0].tls->credentialName, "app-cert");
  EXPECT_TRUE(gw.servers[1].tls->httpsRedirect);
  EXPECT_EQ(gw.servers[1].bind, "127.0.0.1");
}

TEST(Loader, DestinationRulePolicies) {
  auto l = load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: session, ttl: 0s}}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 1, maxRetries: 2, idleTimeout: 1.5s}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  workloadSelector: {matchLabels: {app: reviews}}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  const auto& dr = l.report.resources.destinationRules[0];
  using namespace std::chrono_literals;
  EXPECT_EQ(dr.trafficPolicy->loadBalancer->consistentHash->httpCookie->name, "session");
  EXPECT_EQ(*dr.trafficPolicy->connectionPool->tcp->connectTimeout, 250ms);
  EXPECT_EQ(*dr.trafficPolicy->connectionPool->http->idleTimeout, 1500ms);
  EXPECT_EQ(*dr.trafficPolicy->outlierDetection->baseEjectionTime, 3min);
  EXPECT_EQ(*dr.trafficPolicy->outlierDetection->consecutive5xxErrors, 2u);
  EXPECT_EQ(dr.trafficPolicy->portLevelSettings[0].loadBalancer->simple, LoadBalancerSettings::Simple::Random);
  EXPECT_EQ(dr.subsets[0].trafficPolicy->loadBalancer->simple, LoadBalancerSettings::Simple::RoundRobin);
  EXPECT_EQ(dr.workloadSelector.at("app"), "reviews");
}

TEST(Loader, LoadYamlRejectsDuplicateWithinAndAcrossCalls) {
  LoadReport report;
  const char* dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n";
  EXPECT_TRUE(loadYaml(dr, "one.yaml", report).empty());
  auto errs = loadYaml(dr, "two.yaml", report);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].str(), "two.yaml:1: DestinationRule default/a: duplicate resource, also defined at one.yaml:1");
  // Same name in another namespace, or another kind, is not a duplicate.
  const char* other =
      "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: b}\nspec: {host: a}\n";
  EXPECT_TRUE(loadYaml(other, "three.yaml", report).empty());
}

}  // namespace
}  // namespace sluice::config
