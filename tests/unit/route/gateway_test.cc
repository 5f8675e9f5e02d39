// Gateway listeners compiled from YAML: which servers become listeners,
// which VirtualServices bind to them and under which host names, as Istio
// builds a gateway's routes.
#include <gtest/gtest.h>

#include <algorithm>

#include "builders.h"
#include "config/loader.h"
#include "route/table.h"

namespace sluice::route {
namespace {

constexpr const char* kServices = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: prod}
spec:
  hosts: [api.prod.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com", "prod/api.internal"]
  - port: {number: 80, name: http-legacy, protocol: HTTP}
    hosts: [legacy.test]
  - port: {number: 8443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: cert}
    hosts: ["*"]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
)";

std::shared_ptr<const Snapshot> compileYaml(const std::string& extra, const CompileOptions& options = {}) {
  config::LoadReport report;
  auto errors = config::loadYaml(std::string(kServices) + "---\n" + extra, "gw.yaml", report);
  for (const auto& e : errors) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1, options);
  if (!compiled) {
    for (const auto& e : compiled.error()) ADD_FAILURE() << e.str();
    return nullptr;
  }
  return *compiled;
}

bool hasWarning(const Snapshot& s, std::string_view needle) {
  return std::any_of(s.warnings.begin(), s.warnings.end(),
                     [&](const std::string& w) { return w.find(needle) != std::string::npos; });
}

const GatewayListener* listenerOn(const Snapshot& s, uint32_t port) {
  return s.findGatewayListener(GatewayListener::makeKey(0, port));
}

const Route* routeFor(const GatewayListener& l, std::string_view host, std::string_view path) {
  const VirtualHost* vh = l.routes.find(host);
  if (!vh) return nullptr;
  testing::Request r;
  r.path = std::string(path);
  r.port = l.port;
  return vh->match(r.view());
}

constexpr const char* kBoundVs = R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: web}}]
  - directResponse: {status: 418}
)";

TEST(GatewayCompile, HttpServersOfOnePortShareOneListener) {
  auto s = compileYaml(kBoundVs);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->gatewayListeners.size(), 2u) << "80 and 8443";
  const GatewayListener& l = *s->gatewayListeners[0];
  EXPECT_EQ(l.port, 80u);
  EXPECT_EQ(l.bindBe, 0u);
  EXPECT_FALSE(l.tls());
  ASSERT_EQ(l.servers.size(), 2u);
  EXPECT_EQ(l.servers[0], "Gateway istio-system/ingress server http (HTTP 80)");
  // The HTTPS server is its own listener, terminating TLS for any name.
  const GatewayListener* https = listenerOn(*s, 8443);
  ASSERT_NE(https, nullptr);
  ASSERT_TRUE(https->tls());
  EXPECT_TRUE(https->tlsServers[0]->serverNames.empty());
  EXPECT_EQ(https->tlsServers[0]->credentials, nullptr) << "no credential store given";
  // Not built yet: said, and not served.
  // TCP needs a VirtualService tcp route bound to the Gateway.
  EXPECT_TRUE(hasWarning(*s, "server tcp (TCP 9000): no VirtualService tcp route is bound to it; not served"));
  EXPECT_EQ(listenerOn(*s, 9000), nullptr);
}

TEST(GatewayCompile, BoundVirtualServiceRoutesOnTheGatewayOnly) {
  auto s = compileYaml(kBoundVs);
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 80);
  ASSERT_NE(l, nullptr);
  const Route* api = routeFor(*l, "Shop.Example.com", "/api/items");
  ASSERT_NE(api, nullptr);
  ASSERT_EQ(api->clusters.size(), 1u);
  EXPECT_EQ(api->clusters[0].cluster->name, "outbound|8080||web.default.svc.cluster.local");
  const Route* other = routeFor(*l, "shop.example.com", "/");
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->directResponse);
  EXPECT_EQ(other->directResponse->status, 418u);
  // The server covers *.example.com, but only shop.example.com is routed.
  EXPECT_EQ(l->routes.find("www.example.com"), nullptr);
  // Not mesh routing: the mesh knows no shop.example.com.
  EXPECT_EQ(s->findVirtualHost(80, "shop.example.com"), nullptr);
}

TEST(GatewayCompile, HostsIntersectAndNamespacesRestrictBinding) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: prod}
spec:
  hosts: [api.internal]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: api.prod.svc.cluster.local}}]}]
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 80);
  ASSERT_NE(l, nullptr);
  // A VirtualService for `*` takes the server's names: *.example.com and
  // legacy.test, but not prod/api.internal (default is not prod).
  const VirtualHost* wild = l->routes.find("a.example.com");
  ASSERT_NE(wild, nullptr);
  EXPECT_EQ(wild->name, "*.example.com:80");
  EXPECT_EQ(l->routes.find("example.com"), nullptr);
  ASSERT_NE(l->routes.find("legacy.test"), nullptr);
  EXPECT_EQ(l->routes.find("legacy.test")->name, "legacy.test:80");
  EXPECT_EQ(l->routes.star, nullptr);
  const Route* api = routeFor(*l, "api.internal", "/");
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->virtualService->metadata.namespace_, "prod");
}

TEST(GatewayCompile, VirtualServiceOfAnotherNamespaceIsRefusedByNsPrefixedHost) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.internal]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: web}}]}]
)");
  ASSERT_TRUE(s);
  EXPECT_EQ(listenerOn(*s, 80)->routes.find("api.internal"), nullptr);
}

TEST(GatewayCompile, MatchBlocksNamingGatewaysSplitMeshAndGatewayTraffic) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web, web.example.com]
  gateways: [mesh, istio-system/ingress]
  http:
  - match: [{uri: {prefix: /internal}, gateways: [mesh]}]
    directResponse: {status: 403}
  - match: [{uri: {prefix: /edge}, gateways: [istio-system/ingress]}]
    directResponse: {status: 410}
  - match: [{uri: {prefix: /wrong-port}, port: 8080}]
    directResponse: {status: 409}
  - route: [{destination: {host: web}}]
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 80);
  ASSERT_NE(l, nullptr);
  const VirtualHost* gw = l->routes.find("web.example.com");
  ASSERT_NE(gw, nullptr);
  ASSERT_EQ(gw->routes.size(), 2u);  // /edge and the catch-all
  EXPECT_EQ(routeFor(*l, "web.example.com", "/edge")->directResponse->status, 410u);
  EXPECT_TRUE(routeFor(*l, "web.example.com", "/internal")->directResponse == std::nullopt);
  EXPECT_TRUE(routeFor(*l, "web.example.com", "/wrong-port")->directResponse == std::nullopt);

  const VirtualHost* mesh = s->findVirtualHost(8080, "web");
  ASSERT_NE(mesh, nullptr);
  testing::Request internal;
  internal.path = "/internal";
  ASSERT_NE(mesh->match(internal.view()), nullptr);
  EXPECT_EQ(mesh->match(internal.view())->directResponse->status, 403u);
  testing::Request edge;
  edge.path = "/edge";
  EXPECT_EQ(mesh->match(edge.view())->directResponse, std::nullopt);
}

TEST(GatewayCompile, HttpsRedirectServersRedirectEveryHostTheyName) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8000, name: http, protocol: HTTP}
    hosts: [app.example.com, api.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  gateways: [secure]
  http: [{route: [{destination: {host: web}}]}]
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 8000);
  ASSERT_NE(l, nullptr);
  for (const char* host : {"app.example.com", "api.example.com"}) {
    const VirtualHost* vh = l->routes.find(host);
    ASSERT_NE(vh, nullptr) << host;
    EXPECT_TRUE(vh->httpsRedirect) << host;
  }
  EXPECT_EQ(l->routes.find("app.example.com")->routes.size(), 0u);
  EXPECT_EQ(l->routes.find("api.example.com")->routes.size(), 1u);
}

TEST(GatewayCompile, VirtualServicesSharingAHostMergeWithCatchAllLast) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - directResponse: {status: 200}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - match: [{uri: {prefix: /cart}}]
    directResponse: {status: 201}
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 80);
  EXPECT_EQ(routeFor(*l, "shop.example.com", "/cart")->directResponse->status, 201u);
  EXPECT_EQ(routeFor(*l, "shop.example.com", "/")->directResponse->status, 200u);
  EXPECT_TRUE(hasWarning(*s, "also routed by VirtualService default/first"));
}

TEST(GatewayCompile, RoutesAfterACatchAllAreDroppedBeforeTheMerge) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - match: [{uri: {prefix: /}}]
    directResponse: {status: 200}
  - match: [{uri: {prefix: /hidden}}]
    directResponse: {status: 500}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - match: [{uri: {prefix: /cart}}]
    directResponse: {status: 201}
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 80);
  ASSERT_EQ(l->routes.find("shop.example.com")->routes.size(), 2u);
  EXPECT_EQ(routeFor(*l, "shop.example.com", "/cart")->directResponse->status, 201u);
  EXPECT_EQ(routeFor(*l, "shop.example.com", "/hidden")->directResponse->status, 200u);
}

TEST(GatewayCompile, GrpcAndHttp2ServersAreHttpListeners) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: rpc, namespace: default}
spec:
  servers:
  - port: {number: 9090, name: grpc, protocol: GRPC}
    hosts: ["*"]
  - port: {number: 9091, name: h2, protocol: HTTP2}
    hosts: ["*"]
)");
  ASSERT_TRUE(s);
  ASSERT_NE(listenerOn(*s, 9090), nullptr);
  EXPECT_FALSE(listenerOn(*s, 9090)->tls());
  EXPECT_NE(listenerOn(*s, 9091), nullptr);
  EXPECT_FALSE(hasWarning(*s, "server grpc (GRPC 9090)"));
  EXPECT_FALSE(hasWarning(*s, "server h2 (HTTP2 9091)"));
}

TEST(GatewayCompile, GatewayLabelsChooseWhichGatewaysAreServed) {
  CompileOptions other;
  other.gatewayLabels = std::map<std::string, std::string>{{"istio", "egressgateway"}};
  auto none = compileYaml(kBoundVs, other);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->gatewayListeners.empty());

  CompileOptions match;
  match.gatewayLabels = std::map<std::string, std::string>{{"istio", "ingressgateway"}, {"zone", "a"}};
  auto served = compileYaml(kBoundVs, match);
  ASSERT_TRUE(served);
  EXPECT_EQ(served->gatewayListeners.size(), 2u) << "80 and 8443";
}

TEST(GatewayCompile, ServerBindAddressIsPartOfTheListener) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: local, namespace: default}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    bind: 127.0.0.5
    hosts: ["*"]
)");
  ASSERT_TRUE(s);
  ASSERT_EQ(s->gatewayListeners.size(), 3u) << "80, 8443, and 80 on 127.0.0.5";
  const GatewayListener& bound = *s->gatewayListeners[2];
  EXPECT_EQ(bound.port, 80u);
  EXPECT_EQ(bound.bindBe, htonl(0x7f000005));
  EXPECT_EQ(bound.key, GatewayListener::makeKey(htonl(0x7f000005), 80));
  EXPECT_NE(bound.key, s->gatewayListeners[0]->key);

  // With --gateway-bind 127.0.0.5 both servers are one listener.
  CompileOptions sameAddress;
  sameAddress.gatewayBindBe = htonl(0x7f000005);
  auto merged = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: local, namespace: default}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    bind: 127.0.0.5
    hosts: ["*"]
)", sameAddress);
  ASSERT_TRUE(merged);
  ASSERT_EQ(merged->gatewayListeners.size(), 2u) << "80 and 8443";
  EXPECT_EQ(merged->gatewayListeners[0]->servers.size(), 3u);
}

// ------------------------------------------------------------ HTTPS servers

constexpr const char* kTlsGateway = R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls, namespace: istio-system}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: shop-cert}
    hosts: [shop.example.com]
  - port: {number: 443, name: https-wild, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: wild-cert}
    hosts: ["*.example.com"]
  - port: {number: 443, name: https-mtls, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: partner, subjectAltNames: [spiffe://partner]}
    hosts: [partner.example.org]
  - port: {number: 443, name: https-any, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: default-cert}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [shop.example.com, www.example.com, partner.example.org]
  gateways: [istio-system/tls]
  http:
  - route: [{destination: {host: web}}]
)";

TEST(GatewayCompile, HttpsServersAreChosenBySniExactThenWildcardThenAny) {
  auto s = compileYaml(kTlsGateway);
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 443);
  ASSERT_NE(l, nullptr);
  ASSERT_TRUE(l->tls());
  ASSERT_EQ(l->tlsServers.size(), 4u);
  auto chosen = [&](std::string_view sni) {
    const GatewayTlsServer* t = l->selectServer(sni);
    return t ? t->label : std::string("none");
  };
  EXPECT_EQ(chosen("shop.example.com"), "Gateway istio-system/tls server https (HTTPS 443)");
  EXPECT_EQ(chosen("www.example.com"), "Gateway istio-system/tls server https-wild (HTTPS 443)");
  EXPECT_EQ(chosen("a.b.example.com"), "Gateway istio-system/tls server https-wild (HTTPS 443)");
  EXPECT_EQ(chosen("partner.example.org"), "Gateway istio-system/tls server https-mtls (HTTPS 443)");
  EXPECT_EQ(chosen("example.com"), "Gateway istio-system/tls server https-any (HTTPS 443)");
  EXPECT_EQ(chosen(""), "Gateway istio-system/tls server https-any (HTTPS 443)") << "no SNI";
}

TEST(GatewayCompile, EachHttpsServerHasItsOwnRoutes) {
  auto s = compileYaml(kTlsGateway);
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 443);
  ASSERT_NE(l, nullptr);
  const GatewayTlsServer* shop = l->selectServer("shop.example.com");
  const GatewayTlsServer* wild = l->selectServer("www.example.com");
  const GatewayTlsServer* partner = l->selectServer("partner.example.org");
  ASSERT_TRUE(shop && wild && partner);
  EXPECT_NE(shop->routes.find("shop.example.com"), nullptr);
  EXPECT_EQ(shop->routes.find("partner.example.org"), nullptr) << "another server's host";
  EXPECT_NE(wild->routes.find("www.example.com"), nullptr);
  EXPECT_NE(wild->routes.find("shop.example.com"), nullptr) << "*.example.com covers it too";
  EXPECT_NE(partner->routes.find("partner.example.org"), nullptr);
  EXPECT_EQ(partner->routes.find("www.example.com"), nullptr);
  EXPECT_EQ(partner->routes.port, 443u);
}

TEST(GatewayCompile, HttpsServersThatCannotBeServedAreSaidSo) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: odd, namespace: default}
spec:
  servers:
  - port: {number: 80, name: plain-on-80, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: c}
    hosts: [a.test]
  - port: {number: 8443, name: pass, protocol: HTTPS}
    tls: {mode: PASSTHROUGH}
    hosts: [a.test]
  - port: {number: 8443, name: istio, protocol: HTTPS}
    tls: {mode: ISTIO_MUTUAL}
    hosts: [b.test]
  - port: {number: 8444, name: first, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: c}
    hosts: [dup.test]
  - port: {number: 8444, name: again, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: d}
    hosts: [other.test, dup.test]
  - port: {number: 8445, name: versions, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}
    hosts: [v.test]
  - port: {number: 8446, name: ciphers, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: c, cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, NOT-A-CIPHER]}
    hosts: [c.test]
)");
  ASSERT_TRUE(s);
  EXPECT_TRUE(hasWarning(*s, "server plain-on-80 (HTTPS 80): conflicts with Gateway istio-system/ingress server "
                             "http (HTTP 80) on the same port; not served"));
  EXPECT_TRUE(hasWarning(*s, "server pass (HTTPS 8443): PASSTHROUGH, but no VirtualService tls route names its "
                             "hosts"));
  EXPECT_TRUE(hasWarning(*s, "server istio (HTTPS 8443): TLS mode ISTIO_MUTUAL is not supported yet; not served"));
  EXPECT_EQ(listenerOn(*s, 8443)->tlsServers.size(), 2u) << "the ingress Gateway's https server, and pass";
  EXPECT_TRUE(hasWarning(*s, "server again (HTTPS 8444): a host it names is already served by Gateway "
                             "default/odd server first (HTTPS 8444) on the same port; not served"));
  EXPECT_EQ(listenerOn(*s, 8444)->tlsServers.size(), 1u);
  EXPECT_TRUE(hasWarning(*s, "server versions (HTTPS 8445): minProtocolVersion TLSV1_3 is above "
                             "maxProtocolVersion TLSV1_2; not served"));
  EXPECT_EQ(listenerOn(*s, 8445), nullptr);
  EXPECT_TRUE(hasWarning(*s, "server ciphers (HTTPS 8446): ignoring invalid or duplicate cipher suites: NOT-A-CIPHER"));
  ASSERT_NE(listenerOn(*s, 8446), nullptr);
}

// PASSTHROUGH servers route by SNI with the bound VirtualServices' tls
// routes, beside terminating servers on the same port.
TEST(GatewayCompile, PassthroughServersRouteBySniHosts) {
  auto s = compileYaml(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  servers:
  - port: {number: 9443, name: pass, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.pass.test", "other.test"]
  - port: {number: 9443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: c}
    hosts: [web.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: ["*.pass.test"]
  gateways: [istio-system/edge]
  tls:
  - match: [{port: 9443, sniHosts: [a.pass.test]}]
    route: [{destination: {host: web, port: {number: 8080}}}]
  - match: [{sniHosts: ["*.pass.test"]}]
    route:
    - {destination: {host: web, port: {number: 8080}}, weight: 75}
    - {destination: {host: api.prod.svc.cluster.local, port: {number: 8080}}, weight: 25}
  - match: [{port: 1, sniHosts: [b.pass.test]}]
    route: [{destination: {host: web}}]
  - match: [{sniHosts: [c.pass.test]}]
    route: [{destination: {host: api.prod.svc.cluster.local, port: {number: 8080}}}]
)");
  ASSERT_TRUE(s);
  const GatewayListener* l = listenerOn(*s, 9443);
  ASSERT_NE(l, nullptr);
  ASSERT_EQ(l->tlsServers.size(), 2u);
  const GatewayTlsServer* pass = l->selectServer("a.pass.test");
  ASSERT_NE(pass, nullptr);
  EXPECT_TRUE(pass->passthrough);
  EXPECT_EQ(pass->credentials, nullptr);
  EXPECT_FALSE(l->selectServer("web.test")->passthrough);
  ASSERT_EQ(pass->sniRoutes.size(), 3u) << "the port-1 match applies to no server here";
  const TcpRoute* a = pass->routeFor("a.pass.test");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->clusters.size(), 1u);
  EXPECT_EQ(a->clusters[0].cluster->name, "outbound|8080||web.default.svc.cluster.local");
  const TcpRoute* b = pass->routeFor("b.pass.test");
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->clusters.size(), 2u);
  EXPECT_EQ(b->clusters[0].weight, 75u);
  EXPECT_EQ(b->clusters[1].cluster->name, "outbound|8080||api.prod.svc.cluster.local");
  EXPECT_EQ(pass->routeFor("other.test"), nullptr) << "a server host no tls route names";
  // An exact name outranks a wildcard listed before it (Envoy's filter
  // chain order; Istio makes one chain per match).
  const TcpRoute* c = pass->routeFor("c.pass.test");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->clusters.size(), 1u);
  EXPECT_EQ(c->clusters[0].cluster->name, "outbound|8080||api.prod.svc.cluster.local");
}

}  // namespace
}  // namespace sluice::route
