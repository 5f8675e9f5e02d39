// Kubernetes Service (v1), EndpointSlice (discovery.k8s.io/v1) and Pod (v1)
// as `kubectl get -o yaml|json` prints them. They come from the API server,
// which has validated them already, and carry many fields the registry does
// not use (status, managedFields, container specs...): those are skipped.
// What the registry reads is type-checked, so a hand-written fixture with a
// wrong port or address is refused with its line like any Istio resource.
#include <set>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Node = yaml::Node;
using Path = std::string;

// forFields that skips unknown keys (still refusing a non-map and a field
// written twice).
void forKnownFields(Ctx& c, const Node& n, const Path& path,
                    const std::function<void(const std::string&, const Node&, const Path&)>& fn) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    fn(key, v, p);
    return true;
  });
}

void parseServicePort(Ctx& c, const Node& n, const Path& path, KubeServicePort& out) {
  bool port = false;
  forKnownFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "name") readString(c, v, p, out.name);
    else if (key == "protocol") readEnum(c, v, p, {"TCP", "UDP", "SCTP"}, out.protocol);
    else if (key == "appProtocol") readString(c, v, p, out.appProtocol);
    else if (key == "port") {
      port = !v.isNull();
      readPort(c, v, p, out.port);
    }
    else if (key == "targetPort") {
      // IntOrString: a number, or a container port's name.
      if (v.isScalar() && !v.quoted() && !v.scalar().empty() &&
          std::isdigit(static_cast<unsigned char>(v.scalar()[0]))) {
        readPort(c, v, p, out.targetPortNumber);
      } else {
        readString(c, v, p, out.targetPortName);
      }
    }
  });
  if (n.isMap() && !port) c.error(n, join(path, "port"), "is required");
}

}  // namespace

void parseKubeServiceSpec(Ctx& c, const Node& spec, KubeService& out) {
  const Path root = "spec";
  std::string clusterIP;
  std::vector<std::string> clusterIPs;
  forKnownFields(c, spec, root, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "type") {
      readEnum(c, v, p, {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}, out.type);
    } else if (key == "clusterIP") {
      readString(c, v, p, clusterIP);
      if (!clusterIP.empty() && clusterIP != "None" && !validIp(clusterIP))
        c.error(v, p, "invalid IP address \"" + clusterIP + "\" (want an IP or None)");
    } else if (key == "clusterIPs") {
      forList(c, v, p, [&](const Node& e, const Path& ep) {
        std::string ip;
        if (!readString(c, e, ep, ip)) return;
        if (ip != "None" && !validIp(ip)) c.error(e, ep, "invalid IP address \"" + ip + "\" (want an IP or None)");
        else clusterIPs.push_back(std::move(ip));
      });
    } else if (key == "externalName") {
      readString(c, v, p, out.externalName);
    } else if (key == "ports") {
      readMessageList(c, v, p, out.ports, parseServicePort);
    } else if (key == "selector") {
      readStringMap(c, v, p, out.selector);
    } else if (key == "publishNotReadyAddresses") {
      readBool(c, v, p, out.publishNotReadyAddresses);
    }
  });
  // clusterIPs, when set, starts with clusterIP (the API server keeps both).
  if (clusterIPs.empty() && !clusterIP.empty()) clusterIPs.push_back(clusterIP);
  if (!clusterIP.empty() && !clusterIPs.empty() && clusterIPs.front() != clusterIP)
    c.error(spec, join(root, "clusterIPs"), "must start with spec.clusterIP \"" + clusterIP + "\"");
  for (std::string& ip : clusterIPs) {
    if (ip == "None") out.headless = true;
    else out.clusterIPs.push_back(std::move(ip));
  }
  if (out.type == "ExternalName" && out.externalName.empty())
    c.error(spec, join(root, "externalName"), "is required for type ExternalName");
  std::set<std::string> names;
  std::set<std::pair<uint32_t, std::string>> numbers;
  for (size_t i = 0; i < out.ports.size(); ++i) {
    const KubeServicePort& sp = out.ports[i];
    const Path pp = index(join(root, "ports"), i);
    if (sp.name.empty() && out.ports.size() > 1)
      c.error(spec, join(pp, "name"), "is required when a Service has more than one port");
    if (!sp.name.empty() && !names.insert(sp.name).second)
      c.error(spec, join(pp, "name"), "duplicate port name \"" + sp.name + "\"");
    if (sp.port && !numbers.insert({sp.port, sp.protocol}).second)
      c.error(spec, join(pp, "port"), "duplicate port " + std::to_string(sp.port) + "/" + sp.protocol);
  }
}

void parseEndpointSlice(Ctx& c, const Node& doc, EndpointSlice& out) {
  out.serviceName = out.metadata.labels.contains("kubernetes.io/service-name")
                        ? out.metadata.labels.at("kubernetes.io/service-name")
                        : std::string();
  Node endpointsNode;
  forKnownFields(c, doc, "", [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "addressType") {
      readEnum(c, v, p, {"IPv4", "IPv6", "FQDN"}, out.addressType);
    } else if (key == "ports") {
      readMessageList(c, v, p, out.ports, [](Ctx& c, const Node& n, const Path& path, EndpointSlice::Port& port) {
        forKnownFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "name") readString(c, v, p, port.name);
          else if (key == "port") readPort(c, v, p, port.port);
          else if (key == "protocol") readEnum(c, v, p, {"TCP", "UDP", "SCTP"}, port.protocol);
        });
      });
    } else if (key == "endpoints") {
      endpointsNode.reset(v);
      readMessageList(c, v, p, out.endpoints, [](Ctx& c, const Node& n, const Path& path, EndpointSlice::Endpoint& e) {
        forKnownFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "addresses") {
            readStringList(c, v, p, e.addresses);
          } else if (key == "conditions") {
            forKnownFields(c, v, p, [&](const std::string& key, const Node& cv, const Path& cp) {
              if (key == "ready" && !cv.isNull()) readBool(c, cv, cp, e.ready);
              else if (key == "terminating" && !cv.isNull()) readBool(c, cv, cp, e.terminating);
            });
          } else if (key == "targetRef") {
            std::string kind, name, ns;
            forKnownFields(c, v, p, [&](const std::string& key, const Node& tv, const Path& tp) {
              if (key == "kind") readString(c, tv, tp, kind);
              else if (key == "name") readString(c, tv, tp, name);
              else if (key == "namespace") readString(c, tv, tp, ns);
            });
            if (kind == "Pod") {
              e.podName = std::move(name);
              e.podNamespace = std::move(ns);
            }
          } else if (key == "nodeName") {
            readString(c, v, p, e.nodeName);
          }
        });
        if (n.isMap() && e.addresses.empty()) c.error(n, join(path, "addresses"), "at least one address is required");
      });
    }
  });
  if (out.addressType.empty()) c.error(doc, "addressType", "is required");
  for (size_t i = 0; i < out.endpoints.size(); ++i) {
    for (size_t j = 0; j < out.endpoints[i].addresses.size(); ++j) {
      const std::string& a = out.endpoints[i].addresses[j];
      if ((out.addressType == "IPv4" || out.addressType == "IPv6") && !validIp(a))
        c.error(endpointsNode, index(join(index("endpoints", i), "addresses"), j),
                "invalid IP address \"" + a + "\" for addressType " + out.addressType);
    }
    // An endpoint's Pod is in the slice's namespace unless it says otherwise.
    EndpointSlice::Endpoint& e = out.endpoints[i];
    if (!e.podName.empty() && e.podNamespace.empty()) e.podNamespace = out.metadata.namespace_;
  }
}

void parsePod(Ctx& c, const Node& spec, const Node& status, Pod& out) {
  forKnownFields(c, spec, "spec", [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "nodeName") readString(c, v, p, out.nodeName);
  });
  if (status.isNull()) return;
  std::string podIP;
  forKnownFields(c, status, "status", [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "podIP") {
      if (readString(c, v, p, podIP) && !validIp(podIP)) c.error(v, p, "invalid IP address \"" + podIP + "\"");
    } else if (key == "podIPs") {
      readMessageList(c, v, p, out.podIPs, [](Ctx& c, const Node& n, const Path& path, std::string& ip) {
        forKnownFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "ip" && readString(c, v, p, ip) && !validIp(ip)) c.error(v, p, "invalid IP address \"" + ip + "\"");
        });
      });
    } else if (key == "phase") {
      readString(c, v, p, out.phase);
    }
  });
  if (out.podIPs.empty() && !podIP.empty()) out.podIPs.push_back(podIP);
}

}  // namespace sluice::config::detail
