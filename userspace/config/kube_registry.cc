// Kubernetes Services, EndpointSlices and Pods -> services (kube_registry.h).
#include "config/kube_registry.h"

#include <arpa/inet.h>

#include <algorithm>
#include <unordered_map>

#include "config/parse_util.h"

namespace sluice::config {

namespace {

bool isIpv4(const std::string& s) {
  in_addr a{};
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

std::string key(const std::string& ns, const std::string& name) { return ns + "/" + name; }

std::string serviceName(const KubeService& s) { return "Service " + key(s.metadata.namespace_, s.metadata.name); }

}  // namespace

std::string kubernetesPortProtocol(const KubeServicePort& p) {
  if (p.protocol == "UDP") return "UDP";
  if (p.protocol == "SCTP") return "SCTP";
  std::string name = p.name;
  if (p.appProtocol) {
    name = *p.appProtocol;
    // The application protocols Kubernetes itself defines.
    if (name == "kubernetes.io/h2c") return "HTTP2";
    if (name == "kubernetes.io/ws") return "HTTP";
    if (name == "kubernetes.io/wss") return "HTTPS";
  }
  std::string l = detail::lower(name);
  if (l.starts_with("grpc-web")) return "GRPC-Web";
  if (size_t dash = l.find('-'); dash != std::string::npos) l.resize(dash);
  static const std::pair<const char*, const char*> kNames[] = {
      {"tcp", "TCP"},       {"udp", "UDP"},     {"grpc", "GRPC"},   {"http", "HTTP"},
      {"http_proxy", "HTTP_PROXY"}, {"http2", "HTTP2"}, {"https", "HTTPS"}, {"tls", "TLS"},
      {"mongo", "Mongo"},   {"redis", "Redis"}, {"mysql", "MySQL"},
  };
  for (const auto& [from, to] : kNames)
    if (l == from) return to;
  // Ports istiod never sniffs: their protocols speak first from the server.
  if (p.port == 25 || p.port == 53 || p.port == 3306 || p.port == 27017) return "TCP";
  return "";
}

std::vector<ServiceEntry> kubernetesServices(const Resources& r, std::vector<std::string>& warnings) {
  std::vector<ServiceEntry> out;
  if (r.kubeServices.empty()) return out;
  std::unordered_map<std::string, const Pod*> pods;
  pods.reserve(r.pods.size());
  for (const Pod& p : r.pods) pods.emplace(key(p.metadata.namespace_, p.metadata.name), &p);
  std::unordered_map<std::string, std::vector<const EndpointSlice*>> slices;
  for (const EndpointSlice& s : r.endpointSlices) {
    if (s.serviceName.empty()) continue;  // not managed for a Service
    slices[key(s.metadata.namespace_, s.serviceName)].push_back(&s);
  }

  out.reserve(r.kubeServices.size());
  for (const KubeService& svc : r.kubeServices) {
    ServiceEntry se;
    se.fromKubernetes = true;
    se.metadata = svc.metadata;
    se.source = svc.source;
    se.hosts = {svc.metadata.name + "." + svc.metadata.namespace_ + ".svc.cluster.local"};
    if (auto it = svc.metadata.annotations.find("networking.istio.io/exportTo");
        it != svc.metadata.annotations.end()) {
      std::string_view v = it->second;
      while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view part = v.substr(0, comma);
        while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
        while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
        if (!part.empty()) se.exportTo.emplace_back(part);
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
      }
    }
    const std::string name = serviceName(svc);

    for (const KubeServicePort& kp : svc.ports) {
      std::string protocol = kubernetesPortProtocol(kp);
      if (protocol == "UDP" || protocol == "SCTP") continue;  // Sluice proxies TCP only
      ServicePort sp;
      sp.number = kp.port;
      sp.name = kp.name;
      sp.protocol = std::move(protocol);
      sp.targetPort = kp.targetPortNumber;  // endpoints override it with the slice's number
      se.ports.push_back(std::move(sp));
    }
    // Only a Service left with nothing Sluice can proxy is worth a line on
    // every reload (kube-dns's UDP port beside its TCP one is not).
    if (se.ports.empty() && !svc.ports.empty()) {
      warnings.push_back(svc.source.file + ":" + std::to_string(svc.source.line) + ": " + name +
                         ": only UDP/SCTP ports; left out (Sluice proxies TCP only)");
    }

    if (svc.type == "ExternalName") {
      // istiod: a DNS service outside the mesh, the external name its endpoint.
      se.location = "MESH_EXTERNAL";
      se.resolution = "DNS";
      WorkloadEntry we;
      we.address = svc.externalName;
      se.endpoints.push_back(std::move(we));
      out.push_back(std::move(se));
      continue;
    }

    se.location = "MESH_INTERNAL";
    se.resolution = "STATIC";
    // As in istiod, a Service's selector also picks WorkloadEntries (VMs)
    // of its namespace.
    se.workloadSelector = svc.selector;
    for (const std::string& ip : svc.clusterIPs)
      if (isIpv4(ip)) se.addresses.push_back(ip);

    size_t podUnknown = 0, unsupported = 0;
    // An address two slices list (mid-rollout, or one slice per port set)
    // is one endpoint with the ports of both.
    std::unordered_map<std::string, size_t> byAddress;
    if (auto it = slices.find(key(svc.metadata.namespace_, svc.metadata.name)); it != slices.end()) {
      for (const EndpointSlice* slice : it->second) {
        if (slice->addressType != "IPv4") {
          unsupported += slice->endpoints.size();
          continue;
        }
        for (const EndpointSlice::Endpoint& e : slice->endpoints) {
          // Not ready is a starting or failing pod's normal state: no warning.
          if (!e.ready && !svc.publishNotReadyAddresses) continue;
          const Pod* pod = nullptr;
          if (!e.podName.empty()) {
            auto p = pods.find(key(e.podNamespace, e.podName));
            if (p == pods.end()) {
              ++podUnknown;
              continue;
            }
            pod = p->second;
          }
          for (const std::string& addr : e.addresses) {
            if (auto dup = byAddress.find(addr); dup != byAddress.end()) {
              for (const EndpointSlice::Port& port : slice->ports)
                if (port.protocol == "TCP" && port.port) se.endpoints[dup->second].ports.try_emplace(port.name, port.port);
              continue;
            }
            byAddress.emplace(addr, se.endpoints.size());
            WorkloadEntry we;
            we.metadata.name = e.podName;
            we.metadata.namespace_ = svc.metadata.namespace_;
            we.address = addr;
            for (const EndpointSlice::Port& port : slice->ports) {
              if (port.protocol == "TCP" && port.port) we.ports[port.name] = port.port;
            }
            if (pod) we.labels = pod->metadata.labels;
            se.endpoints.push_back(std::move(we));
          }
        }
      }
    }
    if (podUnknown) {
      warnings.push_back(svc.source.file + ":" + std::to_string(svc.source.line) + ": " + name + ": " +
                         std::to_string(podUnknown) +
                         " endpoint(s) name a Pod (targetRef) that is not loaded; left out until it is");
    }
    if (unsupported && se.endpoints.empty()) {
      warnings.push_back(svc.source.file + ":" + std::to_string(svc.source.line) + ": " + name + ": " +
                         std::to_string(unsupported) +
                         " endpoint(s) in IPv6 or FQDN EndpointSlices left out: Sluice routes to IPv4 endpoints");
    }
    out.push_back(std::move(se));
  }
  return out;
}

}  // namespace sluice::config
