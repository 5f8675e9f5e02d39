// compile() fed by the real YAML loader: short names expanded by the loader
// meet the FQDN services, and the result routes like Istio would.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "builders.h"
#include "config/loader.h"
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

// What the kernel may capture: single IPv4 addresses x HTTP ports only. A TCP
// port would be handed to an HTTP engine; a CIDR or IPv6 address has no
// connect4 to match it.
TEST(YamlCompile, CaptureVipsAreIpv4AddressesOnHttpPorts) {
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
  const std::vector<Snapshot::Vip> want = {vip("127.10.0.1", 9080), vip("127.10.0.1", 80),
                                           vip("127.10.0.2", 9080)};
  const auto& got = (*compiled)->captureVips;
  EXPECT_EQ(got, want);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].host, "a.default.svc.cluster.local");
  EXPECT_EQ(got[2].host, "b.default.svc.cluster.local");
}

}  // namespace
}  // namespace sluice::route
