// ServiceEntry spec (WorkloadEntry's spec parser lives in parse_util.cc since
// ServiceEntry.endpoints reuses it).
#include <set>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Node = yaml::Node;
using Path = std::string;

void parseServicePort(Ctx& c, const Node& n, const Path& path, ServicePort& out) {
  bool number = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "number") {
      number = !v.isNull();
      readPort(c, v, p, out.number);
    }
    else if (key == "protocol") {
      if (readString(c, v, p, out.protocol) && !validProtocol(out.protocol))
        c.error(v, p, "invalid protocol \"" + out.protocol + "\"");
    } else if (key == "name") readString(c, v, p, out.name);
    else if (key == "targetPort") readPort(c, v, p, out.targetPort);
    else return false;
    return true;
  });
  if (n.isMap() && !number) c.error(n, join(path, "number"), "is required");
}

}  // namespace

void parseServiceEntrySpec(Ctx& c, const Node& spec, ServiceEntry& out) {
  const Path root = "spec";
  Node endpointsNode, resolutionNode, selectorNode;
  forFields(c, spec, root, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "hosts") {
      readStringList(c, v, p, out.hosts);
      for (size_t i = 0; i < out.hosts.size(); ++i) {
        if (auto e = hostError(out.hosts[i])) c.error(v, index(p, i), *e);
        out.hosts[i] = lower(out.hosts[i]);
      }
    } else if (key == "addresses") {
      readStringList(c, v, p, out.addresses);
      for (size_t i = 0; i < out.addresses.size(); ++i)
        if (!validIpOrCidr(out.addresses[i])) c.error(v, index(p, i), "invalid IP or CIDR \"" + out.addresses[i] + "\"");
    } else if (key == "ports") {
      readMessageList(c, v, p, out.ports, parseServicePort);
    } else if (key == "location") {
      readEnum(c, v, p, {"MESH_EXTERNAL", "MESH_INTERNAL"}, out.location);
    } else if (key == "resolution") {
      resolutionNode.reset(v);
      readEnum(c, v, p, {"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"}, out.resolution);
    } else if (key == "endpoints") {
      endpointsNode.reset(v);
      readMessageList(c, v, p, out.endpoints, [](Ctx& c, const Node& n, const Path& path, WorkloadEntry& we) {
        parseWorkloadEntrySpec(c, n, path, we);
      });
    } else if (key == "workloadSelector") {
      selectorNode.reset(v);
      parseWorkloadSelector(c, v, p, "labels", out.workloadSelector);
    } else if (key == "exportTo") {
      readStringList(c, v, p, out.exportTo);
      validateExportTo(c, v, p, out.exportTo);
    } else if (key == "subjectAltNames") {
      readStringList(c, v, p, out.subjectAltNames);
    } else {
      return false;
    }
    return true;
  });

  if (out.hosts.empty()) c.error(spec, join(root, "hosts"), "at least one host is required");
  for (const auto& h : out.hosts)
    if (h == "*") c.error(spec, join(root, "hosts"), "hostname cannot be wildcard");
  // Istio's resolution-specific rules (NONE is the default).
  const std::string& resolution = out.resolution.empty() ? std::string("NONE") : out.resolution;
  if (resolution != "NONE" && resolution != "STATIC") {
    for (const auto& a : out.addresses)
      if (a.find('/') != std::string::npos)
        c.error(spec, join(root, "addresses"), "CIDR addresses are allowed only for NONE/STATIC resolution types");
  }
  if (resolution == "NONE" && !out.endpoints.empty())
    c.error(endpointsNode, join(root, "endpoints"), "no endpoints should be provided for resolution type NONE");
  if (resolution == "DNS_ROUND_ROBIN" && out.endpoints.size() > 1)
    c.error(endpointsNode, join(root, "endpoints"),
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN");
  std::set<uint32_t> numbers;
  std::set<std::string> names;
  for (size_t i = 0; i < out.ports.size(); ++i) {
    const auto& port = out.ports[i];
    std::string pp = index(join(root, "ports"), i);
    if (port.number != 0 && !numbers.insert(port.number).second)
      c.error(spec, pp + ".number", "duplicate port number " + std::to_string(port.number));
    if (!port.name.empty() && !names.insert(port.name).second)
      c.error(spec, pp + ".name", "duplicate port name \"" + port.name + "\"");
  }
  if (!out.endpoints.empty() && (!out.workloadSelector.empty() || selectorNode.isMap()))
    c.error(spec, join(root, "workloadSelector"), "only one of endpoints or workloadSelector may be set");
  for (size_t i = 0; i < out.endpoints.size(); ++i) {
    const auto& ep = out.endpoints[i];
    std::string path = index(join(root, "endpoints"), i);
    if (out.resolution == "STATIC" && !ep.address.empty() && !ep.address.starts_with("unix://") && !validIp(ep.address))
      c.error(endpointsNode, join(path, "address"), "STATIC resolution needs an IP address, got \"" + ep.address + "\"");
    for (const auto& [name, _] : ep.ports)
      if (!names.contains(name))
        c.error(endpointsNode, join(join(path, "ports"), name), "port \"" + name + "\" is not a port of the ServiceEntry");
  }
  for (const auto& h : out.hosts)
    if (h.find('*') != std::string::npos && (out.resolution == "DNS" || out.resolution == "DNS_ROUND_ROBIN"))
      c.error(spec, join(root, "hosts"), "wildcard host \"" + h + "\" cannot be used with DNS resolution");
}

}  // namespace sluice::config::detail
