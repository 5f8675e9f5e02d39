// libFuzzer target for request routing: a request head (any bytes) is
// parsed, split into authority and path, and matched against a fixed table
// that uses every kind of match (exact, prefix, RE2 regex, headers, query
// parameters, ignoreUriCase, withoutHeaders, authority) and path rewrites
// built from the request (prefix and regex with captures). Checks that
// matching is deterministic and that no rewritten path can carry a byte
// that would end the request line or start a header.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "http/parser.h"
#include "proxy/request_util.h"
#include "route/table.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr std::string_view kConfig = R"yaml(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.default.svc.cluster.local, "*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 9080, name: http-alt, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}, {address: 127.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc}
spec:
  hosts: [svc, "*.example.com"]
  http:
  - match:
    - headers: {end-user: {exact: jason}, x-canary: {regex: "(on|yes|1)"}}
    - queryParams: {v: {exact: "2"}}
    route: [{destination: {host: svc, subset: v2}}]
  - match:
    - uri: {regex: "/api/v([0-9]+)/(.*)"}
      method: {regex: "GET|HEAD"}
    rewrite:
      uriRegexRewrite: {match: "/api/v([0-9]+)/(.*)", rewrite: "/\\2/version-\\1"}
    route: [{destination: {host: svc, subset: v1}}]
  - match:
    - uri: {prefix: /Static/}
      ignoreUriCase: true
      withoutHeaders: {x-debug: {}}
    rewrite: {uri: /assets/}
    route: [{destination: {host: svc, subset: v1}}]
  - match:
    - authority: {prefix: shop.}
      uri: {exact: /checkout}
    route: [{destination: {host: svc, subset: v2}}]
  - route:
    - {destination: {host: svc, subset: v1}, weight: 90}
    - {destination: {host: svc, subset: v2}, weight: 10}
)yaml";

const sluice::route::Snapshot& table() {
  static std::shared_ptr<const sluice::route::Snapshot> snap = [] {
    sluice::config::LoadReport report;
    auto errors = sluice::config::loadYaml(kConfig, "fuzz.yaml", report);
    check(errors.empty());
    auto s = sluice::route::compile(std::move(report.resources), 1);
    check(s.has_value());
    return *s;
  }();
  return *snap;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint32_t port = data[0] & 1 ? 9080 : 80;
  const char* text = reinterpret_cast<const char*>(data + 1);
  sluice::http::RequestHead head;
  sluice::http::ParseError err;
  if (sluice::http::parseRequestHead(text, size - 1, {}, head, err) != sluice::http::ParseStatus::Complete) return 0;
  sluice::proxy::TargetParts target;
  if (!sluice::proxy::splitTarget(head.target, head.host, target)) return 0;
  uint32_t routedPort = port;
  const sluice::route::VirtualHost* vh =
      table().findVirtualHost(target.port ? target.port : port, sluice::proxy::lowerHost(target.host), &routedPort);
  if (!vh) return 0;
  sluice::route::RequestView view;
  view.method = head.method;
  view.path = target.path;
  view.authority = target.authority;
  view.port = routedPort;
  const sluice::http::HeaderMap fields(std::vector<sluice::http::Header>(head.headers));
  view.headers = &fields;
  const sluice::route::CompiledMatch* matched = nullptr;
  const sluice::route::Route* r = vh->match(view, &matched);
  const sluice::route::CompiledMatch* again = nullptr;
  check(vh->match(view, &again) == r && again == matched);
  if (r && r->rewrite) {
    if (auto path = r->rewrite->rewritePath(target.path, matched)) {
      for (char c : *path) {
        auto u = static_cast<unsigned char>(c);
        check(u > 0x20 && u != 0x7f);
      }
    }
  }
  return 0;
}
