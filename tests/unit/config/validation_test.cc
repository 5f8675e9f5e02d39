// One test per class of validation error, each asserting the full rendered
// message (file:line: resource: path: message).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/loader.h"
#include "test_util.h"

namespace sluice::config {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A VirtualService whose http list starts on line 7.
std::vector<std::string> vsErrors(std::string_view http) {
  std::string yaml =
      "apiVersion: networking.istio.io/v1\n"
      "kind: VirtualService\n"
      "metadata: {name: r}\n"
      "spec:\n"
      "  hosts: [r]\n"
      "  http:\n";
  yaml += testing::trimFirstNewline(http);
  return testing::load(yaml).errors;
}

constexpr const char* kVs = "configs/x.yaml:";
std::string vsErr(int line, const std::string& rest) {
  return kVs + std::to_string(line) + ": VirtualService default/r: " + rest;
}

TEST(Validation, ValidBaselineHasNoErrors) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: r}
)"), IsEmpty());
}

TEST(Validation, UnknownField) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: r, subsett: v1}
    rout: []
)"), ElementsAre(vsErr(8, "spec.http[0].route[0].destination.subsett: unknown field"),
                 vsErr(9, "spec.http[0].rout: unknown field")));
}

TEST(Validation, WrongTypes) {
  EXPECT_THAT(vsErrors(R"(
  - match:
    - headers: x-user
      uri: /exact
    route:
    - destination: reviews
      weight: [1]
)"), ElementsAre(vsErr(8, "spec.http[0].match[0].headers: must be a map"),
                 vsErr(9, "spec.http[0].match[0].uri: must be a map"),
                 vsErr(11, "spec.http[0].route[0].destination: must be a map"),
                 vsErr(12, "spec.http[0].route[0].weight: must be an integer")));
  auto hostsNotList = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: reviews
  http: {route: []}
)");
  EXPECT_THAT(hostsNotList.errors,
              ElementsAre(vsErr(5, "spec.hosts: must be a list"), vsErr(6, "spec.http: must be a list"),
                          vsErr(5, "spec: at least one of http, tcp or tls routes is required"),
                          vsErr(5, "spec.hosts: at least one host is required (only a delegate VirtualService, with "
                                   "http routes and no gateways, may omit hosts)")));
}

TEST(Validation, NonIntegerWeight) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a}
      weight: 1.5
    - destination: {host: b}
      weight: ten
)"), ElementsAre(vsErr(9, "spec.http[0].route[0].weight: must be an integer"),
                 vsErr(11, "spec.http[0].route[1].weight: must be an integer")));
}

TEST(Validation, WeightsMustSumAboveZeroWhenSplit) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a}
      weight: 0
    - destination: {host: b}
)"), ElementsAre(vsErr(8, "spec.http[0].route: total weight of the destinations must be greater than 0")));
  // A single destination with weight 0 is fine (it gets all the traffic).
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a}
      weight: 0
)"), IsEmpty());
}

TEST(Validation, BadDurations) {
  EXPECT_THAT(vsErrors(R"(
  - timeout: 10
    retries: {attempts: 2, perTryTimeout: 0s}
    fault:
      delay: {fixedDelay: 500us, percentage: {value: 1}}
    route:
    - destination: {host: a}
  - timeout: 1.5x
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(7, "spec.http[0].timeout: invalid duration \"10\": missing unit (one of ns, us, ms, s, m, h)"),
                 vsErr(8, "spec.http[0].retries.perTryTimeout: duration must be at least 1ms"),
                 vsErr(10, "spec.http[0].fault.delay.fixedDelay: duration must be at least 1ms"),
                 vsErr(13, "spec.http[1].timeout: invalid duration \"1.5x\": unknown unit \"x\"")));
}

TEST(Validation, InvalidRegex) {
  auto errs = vsErrors(R"(
  - match:
    - uri: {regex: "(unclosed"}
    route:
    - destination: {host: a}
)");
  EXPECT_THAT(errs, ElementsAre(vsErr(8, "spec.http[0].match[0].uri.regex: invalid regex \"(unclosed\": "
                                         "missing ): (unclosed")));
}

TEST(Validation, StringMatchWithMoreThanOneKind) {
  EXPECT_THAT(vsErrors(R"(
  - match:
    - uri: {exact: /a, prefix: /b}
      headers:
        x-a: {regex: ".*", exact: a}
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(8, "spec.http[0].match[0].uri.prefix: only one of exact, prefix or regex may be set"),
                 vsErr(10, "spec.http[0].match[0].headers.x-a.exact: only one of exact, prefix or regex may be set")));
  EXPECT_THAT(vsErrors(R"(
  - match:
    - uri: {}
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(8, "spec.http[0].match[0].uri: one of exact, prefix or regex is required")));
}

TEST(Validation, EmptyRouteList) {
  const std::string msg =
      "at least one route destination is required unless redirect, directResponse or delegate is set";
  EXPECT_THAT(vsErrors(R"(
  - match: [{uri: {prefix: /}}]
    route: []
  - match: [{uri: {prefix: /x}}]
)"), ElementsAre(vsErr(8, "spec.http[0].route: " + msg), vsErr(9, "spec.http[1].route: " + msg)));
}

TEST(Validation, ConflictingActions) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a}
    redirect: {uri: /b}
  - route:
    - destination: {host: a}
    directResponse: {status: 200}
  - redirect: {uri: /b}
    directResponse: {status: 503}
)"), ElementsAre(vsErr(9, "spec.http[0].redirect: route and redirect are mutually exclusive"),
                 vsErr(12, "spec.http[1].directResponse: route and directResponse are mutually exclusive"),
                 vsErr(14, "spec.http[2].directResponse: redirect and directResponse are mutually exclusive")));
}

TEST(Validation, RedirectAndDirectResponseValues) {
  EXPECT_THAT(vsErrors(R"(
  - redirect: {redirectCode: 200, uri: /x}
  - redirect: {}
  - directResponse: {status: 700}
  - directResponse: {body: {string: x}}
)"), ElementsAre(vsErr(7, "spec.http[0].redirect.redirectCode: redirect code 200 is not a 3xx status"),
                 vsErr(8, "spec.http[1].redirect: redirect must set at least one of uri, authority, scheme, port or "
                          "derivePort"),
                 vsErr(9, "spec.http[2].directResponse.status: status must be between 200 and 599"),
                 vsErr(10, "spec.http[3].directResponse.status: is required")));
}

// Rules Istio's validation has that a user would otherwise learn only
// from istiod: unknown gRPC codes, retries configured while off, a 0
// redirect code (unset), TLS verification settings that contradict
// insecureSkipVerify, useClientProtocol against UPGRADE.
TEST(Validation, IstioRulesOnFaultsRetriesRedirectsTlsAndProtocols) {
  EXPECT_THAT(vsErrors(R"(
  - fault: {abort: {grpcStatus: NOPE, percentage: {value: 10}}}
    route: [{destination: {host: a}}]
  - fault: {abort: {grpcStatus: unavailable}}
    retries: {attempts: 0, perTryTimeout: 1s}
    route: [{destination: {host: a}}]
  - retries: {attempts: 0}
    redirect: {uri: /x, redirectCode: 0}
)"), ElementsAre(vsErr(7, "spec.http[0].fault.abort.grpcStatus: \"NOPE\" is not a valid gRPC code"),
                 vsErr(10, "spec.http[1].retries: http retry policy configured when attempts are set to 0 "
                           "(disabled)")));
  auto redirect = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http: [{redirect: {uri: /x, redirectCode: 0}}]
)");
  ASSERT_TRUE(redirect.errors.empty());
  EXPECT_EQ(redirect.report.resources.virtualServices[0].http[0].redirect->redirectCode, 301u) << "0 is unset";
  auto dr = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}
    tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem, subjectAltNames: [x]}
)");
  const std::string r = "configs/x.yaml:";
  EXPECT_THAT(dr.errors,
              ElementsAre(r + "7: DestinationRule default/a: spec.trafficPolicy.connectionPool.http.useClientProtocol: "
                              "must not be true when h2UpgradePolicy is UPGRADE",
                          r + "8: DestinationRule default/a: spec.trafficPolicy.tls.caCertificates: cannot be set when "
                              "insecureSkipVerify is true",
                          r + "8: DestinationRule default/a: spec.trafficPolicy.tls.subjectAltNames: cannot be set when "
                              "insecureSkipVerify is true"));
  // CORS header lists hold header names; maxAge is whole seconds.
  EXPECT_THAT(vsErrors(R"(
  - corsPolicy: {allowHeaders: ["", x-ok], exposeHeaders: [x-e], maxAge: 1500ms}
    route: [{destination: {host: a}}]
)"), ElementsAre(vsErr(7, "spec.http[0].corsPolicy.allowHeaders[0]: header name cannot be empty"),
                 vsErr(7, "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision")));
  // STATIC resolution with neither endpoints nor a selector is valid (it
  // has no endpoints).
  EXPECT_TRUE(testing::load("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n"
                            "  hosts: [s.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
                            "  resolution: STATIC\n")
                  .errors.empty());
}

TEST(Validation, ExportToEmptyPoliciesAndSelectorKeysAsIstio) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: shop}
spec:
  host: a
  workloadSelector: {matchLabels: {"": x}}
  exportTo: [., shop, Bad_NS]
  trafficPolicy: {}
  subsets:
  - name: v1
    trafficPolicy: {connectionPool: {}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: shop}
spec:
  hosts: [v]
  exportTo: ["*", other]
  http: [{route: [{destination: {host: v}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s, namespace: shop}
spec:
  hosts: [s.example.com]
  exportTo: ["~", "."]
  ports: [{number: 80, name: http, protocol: HTTP}]
)");
  const std::string r = "configs/x.yaml:";
  EXPECT_THAT(l.errors,
              ElementsAre(r + "6: DestinationRule shop/a: spec.workloadSelector.matchLabels: empty key is not "
                              "supported in selector",
                          r + "8: DestinationRule shop/a: spec.trafficPolicy: traffic policy must have at least one field",
                          r + "11: DestinationRule shop/a: spec.subsets[0].trafficPolicy.connectionPool: connection pool "
                              "must have at least one field",
                          r + "7: DestinationRule shop/a: spec.exportTo: duplicate entries in exportTo for entry shop",
                          r + "7: DestinationRule shop/a: spec.exportTo: invalid exportTo value \"Bad_NS\"",
                          r + "7: DestinationRule shop/a: spec.exportTo: destination rule with workload selector "
                              "cannot have multiple entries in exportTo",
                          r + "18: VirtualService shop/v: spec.exportTo: cannot have both public (*) and non-public "
                              "exportTo values for a resource",
                          r + "26: ServiceEntry shop/s: spec.exportTo: cannot export to no one (~) and someone"));
}

TEST(Validation, DestinationHostRequired) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {subset: v1}
    mirror: {host: ""}
)"), ElementsAre(vsErr(8, "spec.http[0].route[0].destination.host: destination host is required"),
                 vsErr(9, "spec.http[0].mirror.host: host must not be empty")));
}

TEST(Validation, PercentagesAndPorts) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a, port: {number: 70000}}
    mirror: {host: b, port: {number: 0}}
    mirrorPercentage: {value: 150}
    fault:
      abort: {httpStatus: 503, percentage: {value: -1}}
  - match: [{port: 65536}]
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(8, "spec.http[0].route[0].destination.port.number: must be between 1 and 65535"),
                 vsErr(9, "spec.http[0].mirror.port.number: must be between 1 and 65535"),
                 vsErr(10, "spec.http[0].mirrorPercentage.value: percentage must be between 0 and 100"),
                 vsErr(12, "spec.http[0].fault.abort.percentage.value: percentage must be between 0 and 100"),
                 vsErr(13, "spec.http[1].match[0].port: must be between 1 and 65535")));
}

TEST(Validation, RetryOnTokens) {
  EXPECT_THAT(vsErrors(R"(
  - retries: {attempts: 3, retryOn: "5xx,gateway-error, bogus,503,retriable-4xx,unavailable,9999"}
    route:
    - destination: {host: a}
  - retries: {attempts: 1, retryOn: "reset,reset-before-request,connect-failure,refused-stream,retriable-status-codes,retriable-headers,envoy-ratelimited,http3-post-connect-failure,cancelled,deadline-exceeded,internal,resource-exhausted,409"}
    route:
    - destination: {host: a}
  - retries: {attempts: -1}
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(7, "spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy"),
                 vsErr(7, "spec.http[0].retries.retryOn: \"9999\" is not a valid retryOn policy"),
                 vsErr(13, "spec.http[2].retries.attempts: must not be negative")));
}

TEST(Validation, FaultNeedsDelayOrAbort) {
  EXPECT_THAT(vsErrors(R"(
  - fault: {}
    route:
    - destination: {host: a}
  - fault:
      abort: {percentage: {value: 10}}
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(7, "spec.http[0].fault: fault must set delay, abort or both"),
                 vsErr(11, "spec.http[1].fault.abort.httpStatus: abort needs httpStatus or grpcStatus")));
}

TEST(Validation, CollectsAllErrorsAcrossDocuments) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  subsets:
  - name: v1
  - name: v1
  - labels: {version: v3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: ext}
spec:
  ports:
  - {number: 0, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: SPDY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  labels: {app: x}
)");
  EXPECT_THAT(l.errors,
              ElementsAre("configs/x.yaml:7: DestinationRule default/a: spec.subsets[1].name: duplicate subset name \"v1\"",
                          "configs/x.yaml:8: DestinationRule default/a: spec.subsets[2].name: is required",
                          "configs/x.yaml:5: DestinationRule default/a: spec.host: is required",
                          "configs/x.yaml:15: ServiceEntry ext/se: spec.ports[0].number: must be between 1 and 65535",
                          "configs/x.yaml:16: ServiceEntry ext/se: spec.ports[1].protocol: invalid protocol \"SPDY\"",
                          "configs/x.yaml:14: ServiceEntry ext/se: spec.hosts: at least one host is required",
                          "configs/x.yaml:22: WorkloadEntry default/we: spec.address: address is required unless "
                          "network is set"));
  // Resources with errors are still appended (callers reject the whole load).
  EXPECT_EQ(l.report.resources.destinationRules.size(), 1u);
}

TEST(Validation, DestinationRulePolicyErrors) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
    connectionPool:
      tcp: {maxConnections: -1, connectTimeout: 0s}
      http: {h2UpgradePolicy: SOMETIMES}
    outlierDetection: {maxEjectionPercent: 101, interval: 0.5ms, baseEjectionTime: abc}
    tls: {mode: MUTUAL}
)");
  const std::string r = "configs/x.yaml:";
  EXPECT_THAT(l.errors,
              ElementsAre(r + "7: DestinationRule default/a: spec.trafficPolicy.loadBalancer.simple: invalid value "
                              "\"FASTEST\" (want one of UNSPECIFIED LEAST_CONN RANDOM PASSTHROUGH ROUND_ROBIN LEAST_REQUEST)",
                          r + "9: DestinationRule default/a: spec.trafficPolicy.connectionPool.tcp.maxConnections: "
                              "must not be negative",
                          r + "9: DestinationRule default/a: spec.trafficPolicy.connectionPool.tcp.connectTimeout: "
                              "duration must be at least 1ms",
                          r + "10: DestinationRule default/a: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: "
                              "invalid value \"SOMETIMES\" (want one of DEFAULT DO_NOT_UPGRADE UPGRADE)",
                          r + "11: DestinationRule default/a: spec.trafficPolicy.outlierDetection.maxEjectionPercent: "
                              "must be between 0 and 100",
                          r + "11: DestinationRule default/a: spec.trafficPolicy.outlierDetection.interval: duration "
                              "must be at least 1ms",
                          r + "11: DestinationRule default/a: spec.trafficPolicy.outlierDetection.baseEjectionTime: "
                              "invalid duration \"abc\": expected a number",
                          r + "12: DestinationRule default/a: spec.trafficPolicy.tls.clientCertificate: is required "
                              "for MUTUAL mode",
                          r + "12: DestinationRule default/a: spec.trafficPolicy.tls.privateKey: is required for "
                              "MUTUAL mode"));
}

TEST(Validation, VirtualServiceHostsRequiredUnlessDelegate) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  gateways: [gw]
  http:
  - route:
    - destination: {host: a}
)");
  EXPECT_THAT(l.errors, ElementsAre(vsErr(5, "spec.hosts: at least one host is required (only a delegate "
                                             "VirtualService, with http routes and no gateways, may omit hosts)")));
}

TEST(Validation, GatewayErrors) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  servers:
  - port: {number: 443, protocol: HTTPS, name: https}
    hosts: ["a..com"]
  - port: {number: 80, protocol: HTTP}
)");
  const std::string r = "configs/x.yaml:";
  EXPECT_THAT(l.errors, ElementsAre(r + "7: Gateway default/g: spec.servers[0].hosts[0]: invalid host \"a..com\" (label \"\")",
                                    r + "6: Gateway default/g: spec.servers[0].tls: server must have TLS settings for HTTPS/TLS "
                                        "protocols",
                                    r + "8: Gateway default/g: spec.servers[1].port.name: is required",
                                    r + "8: Gateway default/g: spec.servers[1].hosts: at least one host is required"));
}

// Istio's validateTLSOptions and server rules, with its messages.
TEST(Validation, GatewayTlsOptions) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  servers:
  - port: {number: 443, protocol: HTTPS, name: a}
    hosts: [a.com]
    tls: {mode: SIMPLE}
  - port: {number: 444, protocol: HTTPS, name: b}
    hosts: [b.com]
    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}
  - port: {number: 445, protocol: HTTPS, name: c}
    hosts: [c.com]
    tls: {mode: SIMPLE, credentialName: x, serverCertificate: /c, privateKey: /k}
  - port: {number: 446, protocol: HTTPS, name: d}
    hosts: [d.com]
    tls: {mode: ISTIO_MUTUAL, credentialName: x}
  - port: {number: 80, protocol: HTTP, name: e}
    hosts: [e.com]
    tls: {mode: SIMPLE, credentialName: x}
  - port: {number: 81, protocol: TCP, name: f, targetPort: 8081}
    hosts: [f.com]
    tls: {httpsRedirect: true}
  - port: {number: 447, protocol: HTTPS, name: g}
    hosts: [g.com]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: g}
)");
  const std::string r = "configs/x.yaml:";
  const std::string gw = "Gateway default/g: spec.servers";
  EXPECT_THAT(l.errors,
              ElementsAre(r + "8: " + gw + "[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
                          r + "8: " + gw + "[0].tls.privateKey: SIMPLE TLS requires a private key",
                          r + "11: " + gw + "[1].tls.caCertificates: MUTUAL TLS requires a client CA bundle",
                          r + "14: " + gw +
                              "[2].tls: only one of credential_name, credential_names, "
                              "server_certificate/private_key, tls_certificates should be specified",
                          r + "17: " + gw + "[3].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated "
                                            "credentialName",
                          r + "18: " + gw + "[4].tls: server cannot have TLS settings for plain text HTTP ports",
                          r + "21: " + gw + "[5].port.targetPort: targetPort has no impact on Gateways",
                          r + "21: " + gw + "[5].tls: server cannot have TLS settings for non HTTPS/TLS ports"));
  EXPECT_THAT(l.report.warnings, Contains(HasSubstr("tls.httpsRedirect should only be used with http servers")));
}

TEST(Validation, MetadataAndDocumentShape) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {namespace: Bad_NS, owner: me}
spec: {host: a}
extra: 1
---
kind: DestinationRule
metadata: {name: b}
---
- just
- a list
)");
  EXPECT_THAT(l.errors,
              ElementsAre("configs/x.yaml:3: DestinationRule Bad_NS/: metadata.namespace: invalid namespace \"Bad_NS\" "
                          "(want a lower-case DNS-1123 label)",
                          "configs/x.yaml:3: DestinationRule Bad_NS/: metadata.owner: unknown field",
                          "configs/x.yaml:3: DestinationRule Bad_NS/: metadata.name: is required",
                          "configs/x.yaml:5: DestinationRule Bad_NS/: extra: unknown field",
                          "configs/x.yaml:7: apiVersion: is required",
                          "configs/x.yaml:10: document must be a map with apiVersion and kind"));
}

TEST(Validation, DuplicateFieldIsAnError) {
  EXPECT_THAT(vsErrors(R"(
  - route:
    - destination: {host: a}
    timeout: 1s
    timeout: 2s
)"), ElementsAre(vsErr(10, "spec.http[0].timeout: duplicate field")));
}

TEST(Validation, HeaderValueVariables) {
  EXPECT_THAT(vsErrors(R"(
  - headers:
      request:
        set:
          x-a: "%FOO%"
          x-ok: "%START_TIME(%s.%3f)% %DOWNSTREAM_PEER_CERT_V_START% 100%%"
        add:
          x-b: "50% off"
    route:
    - destination: {host: a}
      headers:
        response:
          set: {x-c: "%REQ(x-user"}
)"), ElementsAre(vsErr(10, "spec.http[0].headers.request.set.x-a: unknown variable %FOO%"),
                 vsErr(13, "spec.http[0].headers.request.add.x-b: lone '%' at offset 2 (write %% for a literal %)"),
                 vsErr(18, "spec.http[0].route[0].headers.response.set.x-c: unterminated variable "
                           "\"%REQ(x-user\" (write %% for a literal %)")));
}

TEST(Validation, HeaderOperationsCannotTouchFraming) {
  EXPECT_THAT(vsErrors(R"(
  - headers:
      request:
        set: {content-length: "0"}
        remove: [Transfer-Encoding]
      response:
        add: {connection: close}
    route:
    - destination: {host: a}
)"), ElementsAre(vsErr(9, "spec.http[0].headers.request.set.content-length: header \"content-length\" is managed by "
                           "the proxy and cannot be changed with set"),
                 vsErr(10, "spec.http[0].headers.request.remove: header \"Transfer-Encoding\" is managed by "
                           "the proxy and cannot be changed with remove"),
                 vsErr(12, "spec.http[0].headers.response.add.connection: header \"connection\" is managed by "
                           "the proxy and cannot be changed with add")));
}

// Every configured string that is written into a request line or a header
// is refused at load time when it holds CR, LF or NUL: otherwise a config
// injects header lines upstream or to the client.
TEST(Validation, StringsThatReachTheWireRefuseControlBytes) {
  EXPECT_THAT(vsErrors(R"(
  - rewrite: {uri: "/v2\r\nX-Injected: 1"}
    route:
    - destination: {host: r}
)"), ElementsAre(vsErr(7, "spec.http[0].rewrite.uri: contains a CR or LF: it would be written into an HTTP "
                          "header or request line")));
  struct Case {
    const char* http;
    const char* path;
  };
  for (const Case& c : {
           Case{"  - rewrite: {authority: \"a\\nX-Injected: 1\"}\n    route: [{destination: {host: r}}]\n",
                "spec.http[0].rewrite.authority"},
           Case{"  - rewrite: {uriRegexRewrite: {match: \"^/a\", rewrite: \"/b\\r\\nX: 1\"}}\n"
                "    route: [{destination: {host: r}}]\n",
                "spec.http[0].rewrite.uriRegexRewrite.rewrite"},
           Case{"  - redirect: {uri: \"/x\\r\\nSet-Cookie: a=b\"}\n", "spec.http[0].redirect.uri"},
           Case{"  - redirect: {authority: \"x\\u0000y\"}\n", "spec.http[0].redirect.authority"},
           Case{"  - redirect: {scheme: \"https\\r\\nX: 1\"}\n", "spec.http[0].redirect.scheme"},
           Case{"  - corsPolicy: {allowHeaders: [\"a\\r\\nX: 1\"]}\n    route: [{destination: {host: r}}]\n",
                "spec.http[0].corsPolicy.allowHeaders[0]"},
           Case{"  - corsPolicy: {exposeHeaders: [ok, \"a\\nX: 1\"]}\n    route: [{destination: {host: r}}]\n",
                "spec.http[0].corsPolicy.exposeHeaders[1]"},
           Case{"  - corsPolicy: {allowOrigins: [{exact: \"https://a\\r\\nX: 1\"}]}\n"
                "    route: [{destination: {host: r}}]\n",
                "spec.http[0].corsPolicy.allowOrigins[0]"},
           Case{"  - corsPolicy: {allowOrigin: [\"https://a\\r\\nX: 1\"]}\n    route: [{destination: {host: r}}]\n",
                "spec.http[0].corsPolicy.allowOrigin[0]"},
       }) {
    std::vector<std::string> errs = vsErrors(c.http);
    ASSERT_EQ(errs.size(), 1u) << c.http << ::testing::PrintToString(errs);
    EXPECT_THAT(errs[0], ::testing::HasSubstr(std::string(c.path) + ": contains a ")) << c.http;
  }
  // Ordinary values still load.
  EXPECT_THAT(vsErrors(R"(
  - rewrite: {uri: "/v2/%20?a=b", authority: "reviews.default:9080"}
    corsPolicy: {allowHeaders: [X-Foo, "*"], allowOrigins: [{exact: "https://a.example"}]}
    route:
    - destination: {host: r}
)"), IsEmpty());
}

TEST(Validation, HashCookieNameAndPathRefuseControlBytes) {
  std::string yaml =
      "apiVersion: networking.istio.io/v1\n"
      "kind: DestinationRule\n"
      "metadata: {name: r}\n"
      "spec:\n"
      "  host: r\n"
      "  trafficPolicy:\n"
      "    loadBalancer:\n"
      "      consistentHash:\n"
      "        httpCookie: {name: \"u\\r\\nX: 1\", path: \"/\\nX: 2\", ttl: 0s}\n";
  std::vector<std::string> errs = testing::load(yaml).errors;
  ASSERT_EQ(errs.size(), 2u) << ::testing::PrintToString(errs);
  EXPECT_THAT(errs[0], ::testing::HasSubstr("httpCookie.name: contains a CR or LF"));
  EXPECT_THAT(errs[1], ::testing::HasSubstr("httpCookie.path: contains a CR or LF"));
  // A ';' in the path would add attributes of the config's choosing.
  yaml.replace(yaml.find("httpCookie"), std::string::npos,
               "httpCookie: {name: u, path: \"/; Domain=evil.example\", ttl: 0s}\n");
  errs = testing::load(yaml).errors;
  ASSERT_EQ(errs.size(), 1u) << ::testing::PrintToString(errs);
  EXPECT_THAT(errs[0], ::testing::HasSubstr("httpCookie.path: contains ';'"));
}

// As Istio: subset names are DNS-1123 labels (they end up in cluster names
// and metric labels).
TEST(Validation, SubsetNamesAreDns1123Labels) {
  auto l = testing::load(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: canary-2, labels: {version: v2}}
  - {name: "V3", labels: {version: v3}}
  - {name: "v4\"} 1", labels: {version: v4}}
  - {name: -v5, labels: {version: v5}}
)");
  EXPECT_THAT(l.errors,
              ElementsAre("configs/x.yaml:9: DestinationRule default/a: spec.subsets[2].name: subset name is invalid: V3",
                          "configs/x.yaml:10: DestinationRule default/a: spec.subsets[3].name: subset name is invalid: "
                          "v4\"} 1",
                          "configs/x.yaml:11: DestinationRule default/a: spec.subsets[4].name: subset name is invalid: -v5"));
}

}  // namespace
}  // namespace sluice::config
