// Kubernetes Services, EndpointSlices and Pods: how they load (YAML, JSON,
// lists) and the services the registry builds from them, as istiod would.
#include "config/kube_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "../../common/repo_path.h"
#include "test_util.h"

namespace sluice::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using testing::load;

namespace fs = std::filesystem;

using sluice::testing::repoPath;

const ServiceEntry* find(const std::vector<ServiceEntry>& v, const std::string& host) {
  for (const auto& se : v)
    if (!se.hosts.empty() && se.hosts[0] == host) return &se;
  return nullptr;
}

std::vector<std::string> addressesOf(const ServiceEntry& se) {
  std::vector<std::string> out;
  for (const auto& e : se.endpoints) out.push_back(e.address);
  return out;
}

std::string protocolOf(std::string name, std::optional<std::string> appProtocol = {}, uint32_t port = 8080,
                       std::string proto = "TCP") {
  KubeServicePort p;
  p.name = std::move(name);
  p.appProtocol = std::move(appProtocol);
  p.port = port;
  p.protocol = std::move(proto);
  return kubernetesPortProtocol(p);
}

TEST(KubeRegistry, PortProtocolFollowsIstiodsSelection) {
  // appProtocol first, with the names Kubernetes itself defines.
  EXPECT_EQ(protocolOf("tcp-x", "http"), "HTTP");
  EXPECT_EQ(protocolOf("", "kubernetes.io/h2c"), "HTTP2");
  EXPECT_EQ(protocolOf("", "kubernetes.io/ws"), "HTTP");
  EXPECT_EQ(protocolOf("", "kubernetes.io/wss"), "HTTPS");
  EXPECT_EQ(protocolOf("http", "grpc"), "GRPC");
  // Then the port name's prefix, case-insensitively.
  EXPECT_EQ(protocolOf("http"), "HTTP");
  EXPECT_EQ(protocolOf("http-web"), "HTTP");
  EXPECT_EQ(protocolOf("HTTP2-api"), "HTTP2");
  EXPECT_EQ(protocolOf("grpc-api"), "GRPC");
  EXPECT_EQ(protocolOf("grpc-web-ui"), "GRPC-Web");
  EXPECT_EQ(protocolOf("tcp-db"), "TCP");
  EXPECT_EQ(protocolOf("tls-x"), "TLS");
  EXPECT_EQ(protocolOf("https"), "HTTPS");
  EXPECT_EQ(protocolOf("mongo-x"), "Mongo");
  EXPECT_EQ(protocolOf("redis"), "Redis");
  // A prefix is a whole word before the first dash.
  EXPECT_EQ(protocolOf("httpx"), "");
  EXPECT_EQ(protocolOf("web"), "");
  // Unnamed on a port istiod never sniffs: TCP.
  EXPECT_EQ(protocolOf("", std::nullopt, 3306), "TCP");
  EXPECT_EQ(protocolOf("db", std::nullopt, 27017), "TCP");
  EXPECT_EQ(protocolOf("", std::nullopt, 3307), "");
  // UDP and SCTP whatever the name says.
  EXPECT_EQ(protocolOf("http", std::nullopt, 53, "UDP"), "UDP");
  EXPECT_EQ(protocolOf("http", std::nullopt, 9, "SCTP"), "SCTP");
}

// The fixture a user would get from kubectl: a List of Services (YAML),
// EndpointSlices one per document, Pods as `kubectl get -o json`.
TEST(KubeRegistry, BookinfoFixtureBuildsEveryService) {
  const fs::path dir = repoPath("configs/kubernetes/bookinfo");
  ASSERT_FALSE(dir.empty()) << "configs/kubernetes/bookinfo not found from " << fs::current_path();
  auto loaded = loadDirectory(dir.string());
  ASSERT_TRUE(loaded.has_value()) << (loaded ? "" : loaded.error()[0].str());
  const Resources& r = loaded->resources;
  EXPECT_EQ(r.kubeServices.size(), 4u);
  EXPECT_EQ(r.endpointSlices.size(), 5u);
  EXPECT_EQ(r.pods.size(), 7u);
  EXPECT_TRUE(loaded->warnings.empty()) << testing::joinLines(loaded->warnings);

  std::vector<std::string> warnings;
  std::vector<ServiceEntry> services = kubernetesServices(r, warnings);
  EXPECT_TRUE(warnings.empty()) << testing::joinLines(warnings);
  ASSERT_EQ(services.size(), 4u);
  const ServiceEntry* reviews = find(services, "reviews.default.svc.cluster.local");
  ASSERT_NE(reviews, nullptr);
  EXPECT_TRUE(reviews->fromKubernetes);
  EXPECT_EQ(reviews->location, "MESH_INTERNAL");
  EXPECT_THAT(reviews->addresses, ElementsAre("127.10.100.4"));
  ASSERT_EQ(reviews->ports.size(), 1u);
  EXPECT_EQ(reviews->ports[0].number, 9080u);
  EXPECT_EQ(reviews->ports[0].name, "http");
  EXPECT_EQ(reviews->ports[0].protocol, "HTTP");
  // Two slices; the second v3 replica is not ready and is left out.
  EXPECT_THAT(addressesOf(*reviews), ElementsAre("127.18.100.41", "127.18.100.42", "127.18.100.43"));
  for (const auto& e : reviews->endpoints) {
    EXPECT_EQ(e.ports.at("http"), 9080u);
    EXPECT_EQ(e.labels.at("app"), "reviews");
  }
  EXPECT_EQ(reviews->endpoints[0].labels.at("version"), "v1");
  EXPECT_EQ(reviews->endpoints[2].labels.at("version"), "v3");
  EXPECT_EQ(reviews->endpoints[2].metadata.name, "reviews-v3-7d94d58566-8fr6t");
  EXPECT_EQ(reviews->source.file, (dir / "services.yaml").string());
}

// What the API server returns for a list: a typed List whose items name
// neither apiVersion nor kind, here as JSON.
TEST(KubeRegistry, TypedListItemsTakeTheirKindFromTheList) {
  auto l = load(R"(
{"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "99"},
 "items": [
  {"metadata": {"name": "a", "namespace": "shop"},
   "spec": {"clusterIP": "127.10.1.1", "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}},
  {"metadata": {"name": "b", "namespace": "shop"},
   "spec": {"clusterIP": "None", "ports": [{"port": 5000, "targetPort": 5001}]}}
 ]}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  ASSERT_EQ(l.report.resources.kubeServices.size(), 2u);
  const KubeService& a = l.report.resources.kubeServices[0];
  EXPECT_EQ(a.metadata.namespace_, "shop");
  EXPECT_THAT(a.clusterIPs, ElementsAre("127.10.1.1"));
  EXPECT_EQ(a.ports[0].targetPortName, "web");
  const KubeService& b = l.report.resources.kubeServices[1];
  EXPECT_TRUE(b.headless);
  EXPECT_TRUE(b.clusterIPs.empty());
  EXPECT_EQ(b.ports[0].targetPortNumber, 5001u);
}

constexpr const char* kService = R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 127.10.2.1
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
)";

std::string slice(const std::string& name, const std::string& endpoints, const std::string& extra = "") {
  return "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " + name +
         "\n  namespace: shop\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n"
         "ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]\nendpoints:\n" +
         endpoints + extra;
}

std::string pod(const std::string& name, const std::string& version) {
  return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name +
         ", namespace: shop, labels: {app: web, version: " + version + "}}\nspec: {nodeName: n1}\n";
}

TEST(KubeRegistry, EndpointsAreReadyAddressesWithTheirPodsLabels) {
  std::string yaml = std::string(kService) +
                     slice("web-1",
                           "- {addresses: [127.18.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: p1}}\n"
                           "- {addresses: [127.18.0.2], conditions: {ready: false}, targetRef: {kind: Pod, name: p2}}\n"
                           "- {addresses: [127.18.0.3], targetRef: {kind: Pod, name: p3}}\n"
                           "- {addresses: [127.18.0.4], targetRef: {kind: Pod, name: gone}}\n"
                           "- {addresses: [127.18.0.5]}\n") +
                     // A second slice repeating an address (mid-rollout) adds it once.
                     slice("web-2", "- {addresses: [127.18.0.1], targetRef: {kind: Pod, name: p1}}\n") +
                     pod("p1", "v1") + pod("p2", "v1") + pod("p3", "v2");
  auto l = load(yaml);
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  std::vector<std::string> warnings;
  auto services = kubernetesServices(l.report.resources, warnings);
  ASSERT_EQ(services.size(), 1u);
  const ServiceEntry& web = services[0];
  EXPECT_EQ(web.hosts[0], "web.shop.svc.cluster.local");
  // Not ready (p2) is out; an absent condition means ready (p3); a Pod that
  // is not loaded yet (gone) is out, as in istiod; no targetRef: no labels.
  EXPECT_THAT(addressesOf(web), ElementsAre("127.18.0.1", "127.18.0.3", "127.18.0.5"));
  EXPECT_EQ(web.endpoints[0].labels.at("version"), "v1");
  EXPECT_EQ(web.endpoints[1].labels.at("version"), "v2");
  EXPECT_TRUE(web.endpoints[2].labels.empty());
  // The UDP port is left out, of the service and of its endpoints.
  ASSERT_EQ(web.ports.size(), 1u);
  EXPECT_EQ(web.ports[0].number, 80u);
  EXPECT_EQ(web.endpoints[0].ports.size(), 1u);
  // Beside a TCP port, a UDP one is no news on every reload.
  EXPECT_THAT(warnings, ElementsAre(HasSubstr("Service shop/web: 1 endpoint(s) name a Pod (targetRef) "
                                              "that is not loaded; left out until it is")));
}

// One slice per port set, as the controller makes when pods resolve a named
// targetPort differently: one address in both is one endpoint.
TEST(KubeRegistry, AnAddressInTwoSlicesHasThePortsOfBoth) {
  auto l = load(R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 127.10.2.1
  ports: [{name: http, port: 80, targetPort: web}, {name: grpc, port: 90, targetPort: rpc}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [127.18.0.1]}, {addresses: [127.18.0.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-b, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: grpc, port: 9090}]
endpoints: [{addresses: [127.18.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: shop}
spec:
  clusterIP: 127.10.2.2
  ports: [{name: dns, port: 53, protocol: UDP}]
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  std::vector<std::string> warnings;
  auto services = kubernetesServices(l.report.resources, warnings);
  ASSERT_EQ(services.size(), 2u);
  EXPECT_THAT(addressesOf(services[0]), ElementsAre("127.18.0.1", "127.18.0.2"));
  EXPECT_EQ(services[0].endpoints[0].ports, (std::map<std::string, uint32_t>{{"grpc", 9090}, {"http", 8080}}));
  EXPECT_EQ(services[0].endpoints[1].ports, (std::map<std::string, uint32_t>{{"http", 8080}}));
  // A Service with nothing but UDP is said.
  EXPECT_TRUE(services[1].ports.empty());
  EXPECT_THAT(warnings, ElementsAre(HasSubstr("Service shop/dns: only UDP/SCTP ports; left out")));
}

TEST(KubeRegistry, PublishNotReadyAddressesKeepsEveryEndpoint) {
  std::string yaml = R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 127.10.2.1
  publishNotReadyAddresses: true
  ports: [{name: http, port: 80}]
)" + slice("web-1", "- {addresses: [127.18.0.1], conditions: {ready: false}}\n");
  auto l = load(yaml);
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  std::vector<std::string> warnings;
  auto services = kubernetesServices(l.report.resources, warnings);
  EXPECT_THAT(addressesOf(services.at(0)), ElementsAre("127.18.0.1"));
}

TEST(KubeRegistry, HeadlessAndExternalNameServices) {
  auto l = load(R"(
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: tcp-pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-pg, port: 5432}]
endpoints: [{addresses: [127.18.0.9]}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: shop}
spec:
  type: ExternalName
  externalName: search.example.com
  ports: [{name: https, port: 443}]
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  std::vector<std::string> warnings;
  auto services = kubernetesServices(l.report.resources, warnings);
  ASSERT_EQ(services.size(), 2u);
  // Headless: no VIP (reached by name), endpoints as usual.
  EXPECT_TRUE(services[0].addresses.empty());
  EXPECT_EQ(services[0].ports[0].protocol, "TCP");
  EXPECT_THAT(addressesOf(services[0]), ElementsAre("127.18.0.9"));
  // ExternalName: outside the mesh, resolved by DNS, the name its endpoint.
  EXPECT_EQ(services[1].location, "MESH_EXTERNAL");
  EXPECT_EQ(services[1].resolution, "DNS");
  EXPECT_THAT(addressesOf(services[1]), ElementsAre("search.example.com"));
}

TEST(KubeRegistry, ExportToComesFromTheAnnotation) {
  auto l = load(R"(
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {networking.istio.io/exportTo: ".,  istio-system"}
spec: {clusterIP: 127.10.2.1, ports: [{name: http, port: 80}]}
)");
  ASSERT_TRUE(l.errors.empty()) << testing::joinLines(l.errors);
  std::vector<std::string> warnings;
  auto services = kubernetesServices(l.report.resources, warnings);
  EXPECT_THAT(services.at(0).exportTo, ElementsAre(".", "istio-system"));
}

// A hand-written object with a wrong field is refused with its line, as an
// Istio resource is; fields Sluice does not read are not checked.
TEST(KubeRegistry, MalformedObjectsAreRefusedByLine) {
  auto l = load(R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 300.1.1.1
  sessionAffinity: Whatever
  ports:
  - {name: http, port: 0}
  - {port: 81}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop}
addressType: IPv4
endpoints:
- addresses: [not-an-ip]
  conditions: {ready: maybe}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: shop}
status: {podIP: 1.2.3}
)");
  EXPECT_THAT(l.errors,
              ElementsAre(HasSubstr("x.yaml:5: Service shop/web: spec.clusterIP: invalid IP address \"300.1.1.1\""),
                          HasSubstr("x.yaml:8: Service shop/web: spec.ports[0].port: must be between 1 and 65535"),
                          HasSubstr("Service shop/web: spec.ports[1].name: is required when a Service has more "
                                    "than one port"),
                          HasSubstr("x.yaml:17: EndpointSlice shop/web-1: endpoints[0].conditions.ready: "),
                          HasSubstr("x.yaml:16: EndpointSlice shop/web-1: endpoints[0].addresses[0]: invalid IP "
                                    "address \"not-an-ip\" for addressType IPv4"),
                          HasSubstr("EndpointSlice shop/web-2: addressType: is required"),
                          HasSubstr("x.yaml:26: Pod shop/p1: status.podIP: invalid IP address \"1.2.3\"")));
}

TEST(KubeRegistry, TwoFilesDefiningOneServiceAreDuplicates) {
  auto l = load(R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 127.10.2.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 127.10.2.2, ports: [{port: 80}]}
)");
  EXPECT_THAT(l.errors, ElementsAre(HasSubstr("Service shop/web: duplicate resource, also defined at")));
}

}  // namespace
}  // namespace sluice::config
