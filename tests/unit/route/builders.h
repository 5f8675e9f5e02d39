// Small constructors for config:: structs, so route tests read like the YAML
// they stand for.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/model.h"
#include "http/parser.h"
#include "http/header_map.h"
#include "route/table.h"

namespace sluice::route::testing {

inline config::StringMatch exact(std::string v) {
  return config::StringMatch{config::StringMatch::Kind::Exact, std::move(v), nullptr};
}
inline config::StringMatch prefix(std::string v) {
  return config::StringMatch{config::StringMatch::Kind::Prefix, std::move(v), nullptr};
}
inline config::StringMatch regex(std::string v) {
  return config::StringMatch{config::StringMatch::Kind::Regex, std::move(v), nullptr};
}
inline config::StringMatch present() { return config::StringMatch{}; }

inline config::WorkloadEntry endpoint(std::string address, std::map<std::string, std::string> labels = {},
                                      uint32_t weight = 0) {
  config::WorkloadEntry e;
  e.address = std::move(address);
  e.labels = std::move(labels);
  e.weight = weight;
  return e;
}

inline config::ServicePort port(uint32_t number, std::string name = "http", uint32_t target = 0,
                                std::string protocol = "HTTP") {
  return config::ServicePort{number, std::move(protocol), std::move(name), target};
}

inline config::ServiceEntry serviceEntry(std::string name, std::vector<std::string> hosts,
                                         std::vector<config::ServicePort> ports,
                                         std::vector<config::WorkloadEntry> endpoints = {},
                                         std::vector<std::string> addresses = {}) {
  config::ServiceEntry se;
  se.metadata.name = std::move(name);
  se.hosts = std::move(hosts);
  se.ports = std::move(ports);
  se.endpoints = std::move(endpoints);
  se.addresses = std::move(addresses);
  se.resolution = "STATIC";
  se.location = "MESH_INTERNAL";
  return se;
}

inline config::HTTPRouteDestination dest(std::string host, std::string subset = "", int32_t weight = -1,
                                         uint32_t portNumber = 0) {
  config::HTTPRouteDestination d;
  d.destination.host = std::move(host);
  d.destination.subset = std::move(subset);
  if (portNumber) d.destination.port = config::PortSelector{portNumber};
  if (weight >= 0) {
    d.weight = weight;
    d.weightSet = true;
  }
  return d;
}

inline config::HTTPRoute httpRoute(std::vector<config::HTTPRouteDestination> route,
                                   std::vector<config::HTTPMatchRequest> match = {}, std::string name = "") {
  config::HTTPRoute r;
  r.name = std::move(name);
  r.route = std::move(route);
  r.match = std::move(match);
  return r;
}

inline config::HTTPMatchRequest uriPrefix(std::string p) {
  config::HTTPMatchRequest m;
  m.uri = prefix(std::move(p));
  return m;
}

inline config::VirtualService virtualService(std::string name, std::vector<std::string> hosts,
                                             std::vector<config::HTTPRoute> http) {
  config::VirtualService vs;
  vs.metadata.name = std::move(name);
  vs.hosts = std::move(hosts);
  vs.http = std::move(http);
  return vs;
}

inline config::Subset subset(std::string name, std::map<std::string, std::string> labels) {
  config::Subset s;
  s.name = std::move(name);
  s.labels = std::move(labels);
  return s;
}

inline config::DestinationRule destinationRule(std::string name, std::string host,
                                               std::vector<config::Subset> subsets = {}) {
  config::DestinationRule dr;
  dr.metadata.name = std::move(name);
  dr.host = std::move(host);
  dr.subsets = std::move(subsets);
  return dr;
}

inline config::LoadBalancerSettings lb(config::LoadBalancerSettings::Simple s) {
  config::LoadBalancerSettings l;
  l.simple = s;
  return l;
}

// A request as the proxy would describe it; `headers` must outlive the view.
struct Request {
  std::string method = "GET";
  std::string path = "/";
  std::string authority = "reviews:9080";
  std::string scheme = "http";
  uint32_t port = 9080;
  std::vector<std::pair<std::string, std::string>> headerStore;
  std::vector<http::Header> headers;
  http::HeaderMap headerMap;

  Request& header(std::string name, std::string value) {
    headerStore.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  RequestView view() {
    headers.clear();
    for (const auto& [n, v] : headerStore) headers.push_back(http::Header{n, v});
    RequestView r;
    r.method = method;
    r.path = path;
    r.authority = authority;
    r.scheme = scheme;
    r.port = port;
    headerMap = http::HeaderMap(std::vector<http::Header>(headers));
    r.headers = &headerMap;
    return r;
  }
};

}  // namespace sluice::route::testing
