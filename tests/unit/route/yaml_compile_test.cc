// compile() fed by the real YAML loader: short names expanded by the loader
// meet the FQDN services, and the result routes like Istio would.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../../common/repo_path.h"
#include "builders.h"
#include "config/loader.h"
#include "core/clock.h"
#include "route/table.h"

namespace sluice::route {
namespace {

constexpr const char* kYaml = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [240.0.0.10]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}, ports: {http: 19081}}
  - {address: 127.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}, {uri: {regex: "/v2/.*"}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
)";

TEST(YamlCompile, BookinfoReviews) {
  config::LoadReport report;
  auto errors = config::loadYaml(kYaml, "reviews.yaml", report);
  for (const auto& e : errors) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  const Snapshot& s = **compiled;
  EXPECT_TRUE(s.warnings.empty());

  uint32_t port = 0;
  const VirtualHost* vh = s.findVirtualHost(0, "240.0.0.10", &port);
  ASSERT_NE(vh, nullptr);
  EXPECT_EQ(port, 9080u);
  EXPECT_EQ(s.findVirtualHost(9080, "reviews"), vh);

  testing::Request jason;
  jason.header("end-user", "jason");
  const Route* r = vh->match(jason.view());
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->clusters.size(), 1u);
  const Cluster* v2 = r->clusters[0].cluster;
  EXPECT_EQ(v2->name, "outbound|9080|v2|reviews.default.svc.cluster.local");
  EXPECT_EQ(v2->lb, LbPolicy::RoundRobin);
  ASSERT_EQ(v2->endpoints.size(), 1u);
  EXPECT_EQ(v2->endpoints[0].key, "127.0.0.2:9080");

  testing::Request regexPath;
  regexPath.path = "/v2/reviews/1";
  EXPECT_EQ(vh->match(regexPath.view()), r);

  testing::Request anon;
  const Route* split = vh->match(anon.view());
  ASSERT_NE(split, nullptr);
  ASSERT_EQ(split->clusters.size(), 2u);
  EXPECT_EQ(split->totalWeight, 100u);
  const Cluster* v1 = split->clusters[0].cluster;
  ASSERT_EQ(v1->endpoints.size(), 1u);
  EXPECT_EQ(v1->endpoints[0].key, "127.0.0.1:19081");  // the endpoint's own port for "http"
}

}  // namespace
}  // namespace sluice::route

namespace sluice::route {
namespace {

// What the kernel may capture: single IPv4 addresses x every port, the TCP
// ones marked for the L4 path. A CIDR or IPv6 address has no connect4 to
// match it.
TEST(YamlCompile, CaptureVipsAreSingleIpv4AddressesOnEveryPort) {
  constexpr const char* kVips = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec:
  hosts: [a.default.svc.cluster.local]
  addresses: [127.10.0.1, 127.10.1.0/24, "2001:db8::1"]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 5432, name: db, protocol: TCP}
  - {number: 80, name: web, protocol: HTTP2}
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec:
  hosts: [b.default.svc.cluster.local]
  addresses: [127.10.0.2]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: no-vip, namespace: default}
spec:
  hosts: [c.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
)";
  config::LoadReport report;
  auto errors = config::loadYaml(kVips, "vips.yaml", report);
  for (const auto& e : errors) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  auto vip = [](const char* ip, uint16_t port) {
    Snapshot::Vip v;
    inet_pton(AF_INET, ip, &v.addrBe);
    v.port = port;
    return v;
  };
  const std::vector<Snapshot::Vip> want = {vip("127.10.0.1", 9080), vip("127.10.0.1", 5432),
                                           vip("127.10.0.1", 80), vip("127.10.0.2", 9080)};
  const auto& got = (*compiled)->captureVips;
  EXPECT_EQ(got, want);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].host, "a.default.svc.cluster.local");
  EXPECT_EQ(got[3].host, "b.default.svc.cluster.local");
  EXPECT_FALSE(got[0].tcp);
  EXPECT_TRUE(got[1].tcp);
  EXPECT_NE((*compiled)->findTcp(got[1].addrBe, 5432), nullptr);
  EXPECT_EQ((*compiled)->findTcp(got[0].addrBe, 9080), nullptr);
}

}  // namespace
}  // namespace sluice::route

namespace sluice::route {
namespace {

// TCP Traffic Shifting as Istio documents it: tcp[] routes of the service's
// VirtualService, weights per connection, subsets from the DestinationRule.
TEST(YamlCompile, TcpRoutesShiftConnectionsBetweenSubsets) {
  constexpr const char* kTcp = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  addresses: [127.10.0.2]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}, ports: {tcp: 18081}}
  - {address: 127.0.0.1, labels: {version: v2}, ports: {tcp: 18082}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000, destinationSubnets: [127.10.0.0/24]}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
)";
  config::LoadReport report;
  auto errors = config::loadYaml(kTcp, "tcp.yaml", report);
  for (const auto& e : errors) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  const Snapshot& s = **compiled;
  in_addr vip{}, other{};
  inet_pton(AF_INET, "127.10.0.2", &vip);
  inet_pton(AF_INET, "127.10.1.2", &other);
  const TcpService* svc = s.findTcp(vip.s_addr, 9000);
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(s.findTcp(vip.s_addr, 9001), nullptr);
  ASSERT_EQ(svc->routes.size(), 2u) << "the tcp[] rule, then the service as fallback";
  const TcpRoute* r = svc->match(vip.s_addr);
  ASSERT_EQ(r, &svc->routes[0]);
  ASSERT_EQ(r->clusters.size(), 2u);
  EXPECT_EQ(r->clusters[0].cluster->name, "outbound|9000|v1|tcp-echo.default.svc.cluster.local");
  ASSERT_EQ(r->clusters[0].cluster->endpoints.size(), 1u);
  EXPECT_EQ(r->clusters[0].cluster->endpoints[0].port, 18081);
  ASSERT_EQ(r->clusters[1].cluster->endpoints.size(), 1u);
  EXPECT_EQ(r->clusters[1].cluster->endpoints[0].port, 18082);
  // Outside destinationSubnets: the service-wide fallback.
  EXPECT_EQ(svc->match(other.s_addr), &svc->routes[1]);
  // weight/sum over many picks.
  core::Rng rng(7);
  int v1 = 0;
  for (int i = 0; i < 10000; ++i) v1 += r->pick(rng.next()) == &r->clusters[0];
  EXPECT_NEAR(v1, 8000, 300);
  ASSERT_EQ(s.captureVips.size(), 1u);
  EXPECT_TRUE(s.captureVips[0].tcp);
}

}  // namespace
}  // namespace sluice::route

namespace sluice::route {
namespace {

TEST(YamlCompile, UpstreamProtocolFollowsThePortThenUseClientProtocolThenH2UpgradePolicy) {
  constexpr const char* kYaml = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [grpc.default.svc.cluster.local, up.default.svc.cluster.local, client.default.svc.cluster.local,
          plain.default.svc.cluster.local]
  ports: [{number: 9090, name: grpc, protocol: GRPC}, {number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: grpc, namespace: default}
spec:
  host: grpc
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE, maxConcurrentStreams: 7}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: up, namespace: default}
spec:
  host: up
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, http2KeepAlive: {interval: 15s, timeout: 2s}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: client, namespace: default}
spec:
  host: client
  trafficPolicy: {connectionPool: {http: {useClientProtocol: true, http2KeepAlive: {interval: 30s}}}}
)";
  config::LoadReport report;
  auto errors = config::loadYaml(kYaml, "p.yaml", report);
  for (const auto& e : errors) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  using P = UpstreamSettings::Protocol;
  auto protocolOf = [&](const std::string& name) -> std::optional<P> {
    for (const auto& c : (*compiled)->clusters) {
      if (c->name == name) return c->upstream.protocol;
    }
    return std::nullopt;
  };
  // The port's GRPC wins over DO_NOT_UPGRADE.
  EXPECT_EQ(protocolOf("outbound|9090||grpc.default.svc.cluster.local"), P::Http2);
  EXPECT_EQ(protocolOf("outbound|8080||grpc.default.svc.cluster.local"), P::Http1);
  EXPECT_EQ(protocolOf("outbound|8080||up.default.svc.cluster.local"), P::Http2);
  EXPECT_EQ(protocolOf("outbound|8080||client.default.svc.cluster.local"), P::ClientProtocol);
  EXPECT_EQ(protocolOf("outbound|8080||plain.default.svc.cluster.local"), P::Http1);
  for (const auto& c : (*compiled)->clusters) {
    if (c->name == "outbound|9090||grpc.default.svc.cluster.local") {
      EXPECT_EQ(c->upstream.maxConcurrentStreams, 7u);
      EXPECT_EQ(c->upstream.h2PingIntervalNs, 0u);
    }
    // http2KeepAlive: PINGs every interval, answered within the timeout
    // (5 s when only the interval is given).
    if (c->name == "outbound|8080||up.default.svc.cluster.local") {
      EXPECT_EQ(c->upstream.h2PingIntervalNs, 15'000'000'000u);
      EXPECT_EQ(c->upstream.h2PingTimeoutNs, 2'000'000'000u);
    }
    if (c->name == "outbound|8080||client.default.svc.cluster.local") {
      EXPECT_EQ(c->upstream.h2PingIntervalNs, 30'000'000'000u);
      EXPECT_EQ(c->upstream.h2PingTimeoutNs, 5'000'000'000u);
    }
  }
}

}  // namespace
}  // namespace sluice::route

namespace sluice::route {
namespace {

namespace fs = std::filesystem;

using sluice::testing::repoPath;

std::vector<std::string> endpointKeys(const Cluster* c) {
  std::vector<std::string> out;
  if (c)
    for (const auto& e : c->endpoints) out.push_back(e.key);
  return out;
}

// Istio's bookinfo VirtualServices and DestinationRules, as written, over the
// Kubernetes fixture (Services, EndpointSlices, Pods): subsets select pods by
// the labels of the Pods behind the EndpointSlices.
TEST(YamlCompile, BookinfoRoutesOverKubernetesServices) {
  const fs::path fixture = repoPath("configs/kubernetes/bookinfo");
  const fs::path samples = repoPath("tests/data/istio_bookinfo");
  ASSERT_FALSE(fixture.empty() || samples.empty()) << "fixtures not found from " << fs::current_path();
  config::LoadReport report;
  for (const fs::path& f : {fixture / "services.yaml", fixture / "endpointslices.yaml", fixture / "pods.json",
                            samples / "destination-rule-all.yaml", samples / "virtual-service-reviews-jason-v2-v3.yaml"}) {
    std::ifstream in(f);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const auto& e : config::loadYaml(text, f.string(), report)) ADD_FAILURE() << e.str();
  }
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  const Snapshot& s = **compiled;
  ASSERT_EQ(s.kubernetesServices.size(), 4u);

  // The cluster IP is a capture VIP and a Host form; so are the short names.
  uint32_t port = 0;
  const VirtualHost* vh = s.findVirtualHost(0, "127.10.100.4", &port);
  ASSERT_NE(vh, nullptr);
  EXPECT_EQ(port, 9080u);
  EXPECT_EQ(s.findVirtualHost(9080, "reviews"), vh);
  EXPECT_EQ(s.findVirtualHost(9080, "reviews.default.svc"), vh);
  Snapshot::Vip want;
  inet_pton(AF_INET, "127.10.100.4", &want.addrBe);
  want.port = 9080;
  EXPECT_NE(std::find(s.captureVips.begin(), s.captureVips.end(), want), s.captureVips.end());

  testing::Request jason;
  jason.header("end-user", "jason");
  const Route* r = vh->match(jason.view());
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->clusters.size(), 1u);
  EXPECT_EQ(r->clusters[0].cluster->name, "outbound|9080|v2|reviews.default.svc.cluster.local");
  EXPECT_EQ(endpointKeys(r->clusters[0].cluster), std::vector<std::string>{"127.18.100.42:9080"});
  testing::Request anon;
  const Route* rest = vh->match(anon.view());
  ASSERT_NE(rest, nullptr);
  // v3's ready replica only: its second one is not ready.
  EXPECT_EQ(endpointKeys(rest->clusters[0].cluster), std::vector<std::string>{"127.18.100.43:9080"});
  // The service-wide cluster holds every ready pod.
  EXPECT_EQ(endpointKeys(s.findCluster("outbound|9080||reviews.default.svc.cluster.local")),
            (std::vector<std::string>{"127.18.100.41:9080", "127.18.100.42:9080", "127.18.100.43:9080"}));
}

// As in istiod, a Kubernetes Service keeps its name against a ServiceEntry
// claiming the same host, whichever loaded first; an unnamed port's
// endpoints use the slice's port.
TEST(YamlCompile, KubernetesServiceTakesPrecedenceOverAServiceEntry) {
  constexpr const char* kYaml = R"(
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: squatter, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  addresses: [127.10.3.9]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.99}]
---
apiVersion: v1
kind: Service
metadata: {name: solo, namespace: shop}
spec:
  clusterIP: 127.10.3.2
  ports: [{port: 70, targetPort: 7070}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: solo-1, namespace: shop, labels: {kubernetes.io/service-name: solo}}
addressType: IPv4
ports: [{port: 7071}]
endpoints: [{addresses: [127.18.3.9]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 127.10.3.1
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: rpc}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8081}]
endpoints: [{addresses: [127.18.3.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8081}, {name: grpc, port: 9090}]
endpoints: [{addresses: [127.18.3.2]}]
)";
  config::LoadReport report;
  for (const auto& e : config::loadYaml(kYaml, "web.yaml", report)) ADD_FAILURE() << e.str();
  auto compiled = compile(report.resources, 1);
  ASSERT_TRUE(compiled.has_value());
  const Snapshot& s = **compiled;
  EXPECT_EQ(endpointKeys(s.findCluster("outbound|80||web.shop.svc.cluster.local")),
            (std::vector<std::string>{"127.18.3.1:8081", "127.18.3.2:8081"}));
  // An unnamed port: the slice's unnamed port.
  EXPECT_EQ(endpointKeys(s.findCluster("outbound|70||solo.shop.svc.cluster.local")),
            std::vector<std::string>{"127.18.3.9:7071"});
  // A pod whose slice lacks a port (its named targetPort did not resolve)
  // serves the others only, as in istiod: never the service port number.
  EXPECT_EQ(endpointKeys(s.findCluster("outbound|90||web.shop.svc.cluster.local")),
            std::vector<std::string>{"127.18.3.2:9090"});
  EXPECT_NE(s.findVirtualHost(0, "127.10.3.1"), nullptr);
  EXPECT_EQ(s.findVirtualHost(80, "127.10.3.9"), nullptr);
  EXPECT_NE(std::find_if(s.warnings.begin(), s.warnings.end(),
                         [](const std::string& w) {
                           return w == "ServiceEntry shop/squatter: host web.shop.svc.cluster.local already defined "
                                       "by Service shop/web; ignored";
                         }),
            s.warnings.end())
      << ::testing::PrintToString(s.warnings);
}

}  // namespace
}  // namespace sluice::route
