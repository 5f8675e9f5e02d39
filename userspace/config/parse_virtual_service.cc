// VirtualService spec: field-by-field parsing plus the cross-field rules of
// Istio's validation (route vs redirect vs directResponse vs delegate, weight
// totals, retryOn tokens, fault percentages).
#include <algorithm>
#include <array>
#include <cctype>

#include <re2/re2.h>

#include "config/parse_util.h"
#include "http/grpc.h"
#include "istio/header_template.h"
#include "istio/retry_on.h"

namespace sluice::config::detail {

namespace {

using Node = yaml::Node;
using Path = std::string;

bool validRetryOn(std::string_view tok) {
  return istio::retryOnToken(tok).has_value() || istio::retryOnStatus(tok).has_value();
}

bool validHeaderName(std::string_view h) {
  if (h.empty()) return false;
  // RFC 7230 token characters.
  return std::all_of(h.begin(), h.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
  });
}

// Names and values are checked with route/'s own rules (header_ops.h), so
// what loads is exactly what compiles; here the errors get a file and line.
void parseHeaderOps(Ctx& c, const Node& n, const Path& path, HeaderOperations& out) {
  auto readValues = [&](std::string_view op, const Node& v, const Path& p, std::map<std::string, std::string>& m) {
    if (v.isNull()) return;
    forFields(c, v, p, [&](const std::string& name, const Node& hv, const Path& hp) {
      std::string value;
      if (!readString(c, hv, hp, value)) return true;
      if (!validHeaderName(name)) c.error(hv, hp, "invalid header name");
      else if (auto e = istio::headerOpNameError(op, name); !e.empty()) c.error(hv, hp, e);
      if (auto t = istio::HeaderTemplate::parse(value); !t) c.error(hv, hp, t.error());
      m[name] = std::move(value);
      return true;
    });
  };
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "set") {
      readValues("set", v, p, out.set);
    } else if (key == "add") {
      readValues("add", v, p, out.add);
    } else if (key == "remove") {
      readStringList(c, v, p, out.remove);
      for (const auto& h : out.remove) {
        if (!validHeaderName(h)) c.error(v, p, "invalid header name \"" + h + "\"");
        else if (auto e = istio::headerOpNameError("remove", h); !e.empty()) c.error(v, p, e);
      }
    } else {
      return false;
    }
    return true;
  });
}

void parseHeaders(Ctx& c, const Node& n, const Path& path, Headers& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "request") readMessage(c, v, p, out.request, parseHeaderOps);
    else if (key == "response") readMessage(c, v, p, out.response, parseHeaderOps);
    else return false;
    return true;
  });
}

void readGateways(Ctx& c, const Node& v, const Path& p, std::vector<std::string>& out) {
  std::vector<std::string> raw;
  readStringList(c, v, p, raw);
  for (auto& g : raw) {
    if (g.empty()) c.error(v, p, "gateway name must not be empty");
    out.push_back(qualifyGateway(g, c.ns()));
  }
}

void parseMatchRequest(Ctx& c, const Node& n, const Path& path, HTTPMatchRequest& out) {
  auto sm = [&](const Node& v, const Path& p, std::optional<StringMatch>& o) {
    if (v.isNull() || !expectMap(c, v, p)) return;
    parseStringMatch(c, v, p, o.emplace(), /*allowPresence=*/false);
  };
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "name") readString(c, v, p, out.name);
    else if (key == "uri") sm(v, p, out.uri);
    else if (key == "scheme") sm(v, p, out.scheme);
    else if (key == "method") sm(v, p, out.method);
    else if (key == "authority") sm(v, p, out.authority);
    else if (key == "headers") parseStringMatchMap(c, v, p, out.headers, /*lowerKeys=*/true);
    else if (key == "withoutHeaders") parseStringMatchMap(c, v, p, out.withoutHeaders, /*lowerKeys=*/true);
    else if (key == "queryParams") parseStringMatchMap(c, v, p, out.queryParams, /*lowerKeys=*/false);
    else if (key == "port") readPort(c, v, p, out.port);
    else if (key == "sourceLabels") readStringMap(c, v, p, out.sourceLabels);
    else if (key == "gateways") readGateways(c, v, p, out.gateways);
    else if (key == "sourceNamespace") readString(c, v, p, out.sourceNamespace);
    else if (key == "statPrefix") sm(v, p, out.statPrefix);
    else if (key == "ignoreUriCase") readBool(c, v, p, out.ignoreUriCase);
    else return false;
    return true;
  });
  // A match may name a request pseudo-header (HTTP/2's :authority,
  // :method, :path, :scheme), as Envoy's header matchers allow.
  auto matchable = [](const std::string& name) {
    return validHeaderName(name) || name == ":authority" || name == ":method" || name == ":path" ||
           name == ":scheme";
  };
  for (const auto& [name, _] : out.headers)
    if (!matchable(name)) c.error(n, join(join(path, "headers"), name), "invalid header name");
  for (const auto& [name, _] : out.withoutHeaders)
    if (!matchable(name)) c.error(n, join(join(path, "withoutHeaders"), name), "invalid header name");
}

// Negative weights, and a zero total when traffic is split.
template <class Dest>
void checkWeights(Ctx& c, const Node& list, const Path& path, const std::vector<Dest>& dests) {
  if (dests.size() < 2) return;
  int64_t sum = 0;
  for (const auto& d : dests) sum += std::max<int32_t>(d.weight, 0);
  if (sum == 0) c.error(list, path, "total weight of the destinations must be greater than 0");
}

void parseHttpRouteDestination(Ctx& c, const Node& n, const Path& path, HTTPRouteDestination& out) {
  bool hasDest = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "destination") {
      hasDest = !v.isNull();
      if (expectMap(c, v, p)) parseDestination(c, v, p, out.destination);
    } else if (key == "weight") {
      out.weightSet = readInt(c, v, p, out.weight, 0, std::numeric_limits<int32_t>::max());
    } else if (key == "headers") {
      readMessage(c, v, p, out.headers, parseHeaders);
    } else {
      return false;
    }
    return true;
  });
  if (!hasDest && n.isMap()) c.error(n, join(path, "destination"), "is required");
}

void parseRouteDestination(Ctx& c, const Node& n, const Path& path, RouteDestination& out) {
  bool hasDest = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "destination") {
      hasDest = !v.isNull();
      if (expectMap(c, v, p)) parseDestination(c, v, p, out.destination);
    } else if (key == "weight") {
      readInt(c, v, p, out.weight, 0, std::numeric_limits<int32_t>::max());
    } else {
      return false;
    }
    return true;
  });
  if (!hasDest && n.isMap()) c.error(n, join(path, "destination"), "is required");
}

void parseRedirect(Ctx& c, const Node& n, const Path& path, HTTPRedirect& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "uri") readWireString(c, v, p, out.uri, http::WireField::Path);
    else if (key == "authority") readWireString(c, v, p, out.authority, http::WireField::Authority);
    else if (key == "port") readPort(c, v, p, out.port);
    else if (key == "derivePort") {
      readEnum(c, v, p, {"FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"}, out.derivePort);
    } else if (key == "scheme") readWireString(c, v, p, out.scheme, http::WireField::Scheme);
    else if (key == "redirectCode") {
      // 0 is the field unset: Envoy's 301.
      if (readInt(c, v, p, out.redirectCode, 0, 999) && out.redirectCode == 0) out.redirectCode = 301;
      else if (out.redirectCode < 300 || out.redirectCode > 399)
        c.error(v, p, "redirect code " + std::to_string(out.redirectCode) + " is not a 3xx status");
    } else return false;
    return true;
  });
  if (out.port && !out.derivePort.empty()) c.error(n, join(path, "derivePort"), "only one of port or derivePort may be set");
  if (out.uri.empty() && out.authority.empty() && out.scheme.empty() && !out.port && out.derivePort.empty())
    c.error(n, path, "redirect must set at least one of uri, authority, scheme, port or derivePort");
}

std::string base64Decode(std::string_view in, bool& ok) {
  auto val = [](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  ok = true;
  for (char ch : in) {
    if (ch == '=' || ch == '\n' || ch == '\r' || ch == ' ') continue;
    int v = val(ch);
    if (v < 0) {
      ok = false;
      return {};
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

void parseDirectResponse(Ctx& c, const Node& n, const Path& path, HTTPDirectResponse& out) {
  bool hasStatus = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "status") {
      hasStatus = readInt(c, v, p, out.status, 0, 999);
      if (hasStatus && (out.status < 200 || out.status > 599)) c.error(v, p, "status must be between 200 and 599");
    } else if (key == "body") {
      if (v.isNull() || !expectMap(c, v, p)) return true;
      int set = 0;
      forFields(c, v, p, [&](const std::string& bk, const Node& bv, const Path& bp) {
        std::string s;
        if (bk == "string") {
          if (readString(c, bv, bp, s)) out.body = std::move(s), ++set;
        } else if (bk == "bytes") {
          if (readString(c, bv, bp, s)) {
            bool ok = false;
            out.body = base64Decode(s, ok);
            ++set;
            if (!ok) c.error(bv, bp, "invalid base64");
          }
        } else {
          return false;
        }
        return true;
      });
      if (set > 1) c.error(v, p, "only one of string or bytes may be set");
    } else {
      return false;
    }
    return true;
  });
  if (!hasStatus && n.isMap()) c.error(n, join(path, "status"), "is required");
}

void parseRewrite(Ctx& c, const Node& n, const Path& path, HTTPRewrite& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "uri") readWireString(c, v, p, out.uri, http::WireField::Path);
    else if (key == "authority") readWireString(c, v, p, out.authority, http::WireField::Authority);
    else if (key == "uriRegexRewrite") {
      readMessage(c, v, p, out.uriRegexRewrite, [](Ctx& c, const Node& n, const Path& path, RegexRewrite& rr) {
        Node matchNode;
        bool hasMatch = false;
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "match") {
            if (readString(c, v, p, rr.match)) matchNode.reset(v), hasMatch = true;
          } else if (key == "rewrite") readWireString(c, v, p, rr.rewrite, http::WireField::Path);
          else return false;
          return true;
        });
        if (!hasMatch) {
          c.error(n, join(path, "match"), "is required");
          return;
        }
        RE2::Options opt;
        opt.set_log_errors(false);
        auto re = std::make_shared<const RE2>(rr.match, opt);
        if (!re->ok()) c.error(matchNode, join(path, "match"), "invalid regex \"" + rr.match + "\": " + re->error());
        else rr.regex = std::move(re);
      });
    } else return false;
    return true;
  });
  if (!out.uri.empty() && out.uriRegexRewrite)
    c.error(n, join(path, "uriRegexRewrite"), "only one of uri or uriRegexRewrite may be set");
}

void parseRetry(Ctx& c, const Node& n, const Path& path, HTTPRetry& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "attempts") readInt(c, v, p, out.attempts, 0, std::numeric_limits<int32_t>::max());
    else if (key == "perTryTimeout") readDuration(c, v, p, out.perTryTimeout, true);
    else if (key == "retryOn") {
      if (!readString(c, v, p, out.retryOn)) return true;
      std::string_view rest = out.retryOn;
      while (!rest.empty()) {
        size_t comma = rest.find(',');
        std::string_view tok = rest.substr(0, comma);
        while (!tok.empty() && tok.front() == ' ') tok.remove_prefix(1);
        while (!tok.empty() && tok.back() == ' ') tok.remove_suffix(1);
        if (!tok.empty() && !validRetryOn(tok)) c.error(v, p, "\"" + std::string(tok) + "\" is not a valid retryOn policy");
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
    } else if (key == "retryRemoteLocalities") readBool(c, v, p, out.retryRemoteLocalities);
    else if (key == "retryIgnorePreviousHosts") readBool(c, v, p, out.retryIgnorePreviousHosts);
    else if (key == "backoff") readDuration(c, v, p, out.backoff, true);
    else return false;
    return true;
  });
  // Istio: attempts 0 turns retries off, and then nothing else may be set.
  if (n.isMap() && out.attempts == 0 &&
      (out.perTryTimeout || !out.retryOn.empty() || out.retryRemoteLocalities || out.retryIgnorePreviousHosts ||
       out.backoff))
    c.error(n, path, "http retry policy configured when attempts are set to 0 (disabled)");
}

void parseFault(Ctx& c, const Node& n, const Path& path, HTTPFaultInjection& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "delay") {
      readMessage(c, v, p, out.delay, [](Ctx& c, const Node& n, const Path& path, HTTPFaultInjection::Delay& d) {
        bool given = false;
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "fixedDelay") {
            given = !v.isNull();
            readDuration(c, v, p, d.fixedDelay, true);
          }
          else if (key == "percentage") parsePercent(c, v, p, d.percentage);
          else if (key == "percent") readInt(c, v, p, d.percent, 0, 100);
          else return false;
          return true;
        });
        if (!given) c.error(n, join(path, "fixedDelay"), "is required");
      });
    } else if (key == "abort") {
      readMessage(c, v, p, out.abort, [](Ctx& c, const Node& n, const Path& path, HTTPFaultInjection::Abort& a) {
        bool status = false;
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "httpStatus") {
            if (readInt(c, v, p, a.httpStatus, 0, 999)) {
              status = true;
              if (a.httpStatus < 200 || a.httpStatus > 599) c.error(v, p, "httpStatus must be between 200 and 599");
            }
          } else if (key == "grpcStatus") {
            if (readString(c, v, p, a.grpcStatus)) {
              status = true;
              if (http::grpcStatusCode(a.grpcStatus) < 0)
                c.error(v, p, "\"" + a.grpcStatus + "\" is not a valid gRPC code");
            }
          } else if (key == "percentage") parsePercent(c, v, p, a.percentage);
          else return false;
          return true;
        });
        if (!status) c.error(n, join(path, "httpStatus"), "abort needs httpStatus or grpcStatus");
      });
    } else return false;
    return true;
  });
  if (!out.delay && !out.abort && n.isMap()) c.error(n, path, "fault must set delay, abort or both");
}

void parseCors(Ctx& c, const Node& n, const Path& path, CorsPolicy& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "allowOrigins") {
      readMessageList(c, v, p, out.allowOrigins, [](Ctx& c, const Node& e, const Path& ep, StringMatch& m) {
        parseStringMatch(c, e, ep, m, /*allowPresence=*/false);
        // An exact or prefix origin is what a matching request echoes back.
        if (m.kind != StringMatch::Kind::Regex) checkWire(c, e, ep, m.value, http::WireField::HeaderValue);
      });
    } else if (key == "allowOrigin") {  // deprecated: exact strings
      std::vector<std::string> origins;
      readStringList(c, v, p, origins);
      for (size_t i = 0; i < origins.size(); ++i) checkWire(c, v, index(p, i), origins[i], http::WireField::HeaderValue);
      for (auto& o : origins) out.allowOrigins.push_back(StringMatch{StringMatch::Kind::Exact, std::move(o), nullptr});
    } else if (key == "allowMethods") {
      readStringList(c, v, p, out.allowMethods);
      static constexpr std::array<std::string_view, 10> methods = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                                                   "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"};
      for (const auto& m : out.allowMethods)
        if (std::find(methods.begin(), methods.end(), m) == methods.end())
          c.error(v, p, "invalid HTTP method \"" + m + "\"");
    } else if (key == "allowHeaders" || key == "exposeHeaders") {
      // Header names, as Istio checks them (each one, then sent as a list).
      std::vector<std::string>& names = key == "allowHeaders" ? out.allowHeaders : out.exposeHeaders;
      readStringList(c, v, p, names);
      for (size_t i = 0; i < names.size(); ++i) {
        if (names[i].empty()) c.error(v, index(p, i), "header name cannot be empty");
        else checkWire(c, v, index(p, i), names[i], http::WireField::HeaderName);
      }
    } else if (key == "maxAge") {
      if (readDuration(c, v, p, out.maxAge, true) && out.maxAge->count() % 1'000'000'000 != 0)
        c.error(v, p, "max_age duration is accurate only to seconds precision");
    }
    else if (key == "allowCredentials") readBool(c, v, p, out.allowCredentials);
    else if (key == "unmatchedPreflights") {
      readEnum(c, v, p, {"UNSPECIFIED", "FORWARD", "IGNORE"}, out.unmatchedPreflights);
    } else return false;
    return true;
  });
}

void parseMirrorPolicy(Ctx& c, const Node& n, const Path& path, HTTPMirrorPolicy& out) {
  bool hasDest = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "destination") {
      hasDest = !v.isNull();
      if (expectMap(c, v, p)) parseDestination(c, v, p, out.destination);
    } else if (key == "percentage") parsePercent(c, v, p, out.percentage);
    else return false;
    return true;
  });
  if (!hasDest && n.isMap()) c.error(n, join(path, "destination"), "is required");
}

void parseHttpRoute(Ctx& c, const Node& n, const Path& path, HTTPRoute& out, bool inDelegate) {
  out.source = SourceRef{c.file(), c.line(n)};
  Node routeNode;
  bool routeErrors = false;
  // Field key nodes, so cross-field errors point at the line of the field they name.
  std::vector<std::pair<std::string, Node>> fields;
  auto at = [&](std::string_view key) -> Node {
    for (const auto& [k, v] : fields)
      if (k == key) return v;
    return n;
  };
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    fields.emplace_back(key, c.currentKey());
    if (key == "name") readString(c, v, p, out.name);
    else if (key == "match") readMessageList(c, v, p, out.match, parseMatchRequest);
    else if (key == "route") {
      routeNode.reset(v);
      size_t before = c.errorCount();
      readMessageList(c, v, p, out.route, parseHttpRouteDestination);
      routeErrors = c.errorCount() != before;
    } else if (key == "redirect") readMessage(c, v, p, out.redirect, parseRedirect);
    else if (key == "directResponse") readMessage(c, v, p, out.directResponse, parseDirectResponse);
    else if (key == "delegate") {
      readMessage(c, v, p, out.delegate, [](Ctx& c, const Node& n, const Path& path, Delegate& d) {
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "name") readString(c, v, p, d.name);
          else if (key == "namespace") readString(c, v, p, d.namespace_);
          else return false;
          return true;
        });
        if (d.name.empty()) c.error(n, join(path, "name"), "is required");
        if (d.namespace_.empty()) d.namespace_ = c.ns();
      });
      if (out.delegate && inDelegate) c.error(v, p, "a delegate VirtualService must not delegate again");
    } else if (key == "rewrite") readMessage(c, v, p, out.rewrite, parseRewrite);
    else if (key == "timeout") readDuration(c, v, p, out.timeout, true);
    else if (key == "retries") readMessage(c, v, p, out.retries, parseRetry);
    else if (key == "fault") readMessage(c, v, p, out.fault, parseFault);
    else if (key == "mirror") {
      readMessage(c, v, p, out.mirror, parseDestination);
    } else if (key == "mirrorPercentage") parsePercent(c, v, p, out.mirrorPercentage);
    else if (key == "mirrorPercent") readInt(c, v, p, out.mirrorPercent, 0, 100);
    else if (key == "mirrors") readMessageList(c, v, p, out.mirrors, parseMirrorPolicy);
    else if (key == "corsPolicy") readMessage(c, v, p, out.corsPolicy, parseCors);
    else if (key == "headers") readMessage(c, v, p, out.headers, parseHeaders);
    else return false;
    return true;
  });
  if (!n.isMap()) return;

  const bool hasRoute = !out.route.empty();
  const Path routePath = join(path, "route");
  if (out.redirect && hasRoute) c.error(at("redirect"), join(path, "redirect"), "route and redirect are mutually exclusive");
  if (out.directResponse && hasRoute)
    c.error(at("directResponse"), join(path, "directResponse"), "route and directResponse are mutually exclusive");
  if (out.redirect && out.directResponse)
    c.error(at("directResponse"), join(path, "directResponse"), "redirect and directResponse are mutually exclusive");
  if (out.delegate && (hasRoute || out.redirect || out.directResponse))
    c.error(at("delegate"), join(path, "delegate"), "delegate must not be combined with route, redirect or directResponse");
  if (out.redirect && out.rewrite) c.error(at("rewrite"), join(path, "rewrite"), "rewrite and redirect are mutually exclusive");
  if (out.redirect && out.fault) c.error(at("fault"), join(path, "fault"), "fault and redirect are mutually exclusive");
  if (out.directResponse && out.fault)
    c.error(at("fault"), join(path, "fault"), "fault and directResponse are mutually exclusive");
  if (out.directResponse && out.rewrite)
    c.error(at("rewrite"), join(path, "rewrite"), "rewrite and directResponse are mutually exclusive");
  if (!hasRoute && !out.redirect && !out.directResponse && !out.delegate)
    c.error(at("route"), routePath,
            "at least one route destination is required unless redirect, directResponse or delegate is set");
  if (out.mirror && !out.mirrors.empty())
    c.error(at("mirrors"), join(path, "mirrors"), "only one of mirror or mirrors may be set");
  if (out.mirrorPercentage && out.mirrorPercent)
    c.error(at("mirrorPercent"), join(path, "mirrorPercent"), "only one of mirrorPercent or mirrorPercentage may be set");
  if (hasRoute && !routeErrors) checkWeights(c, routeNode, routePath, out.route);
}

void parseL4Match(Ctx& c, const Node& n, const Path& path, L4MatchAttributes& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "destinationSubnets") {
      readStringList(c, v, p, out.destinationSubnets);
      for (const auto& s : out.destinationSubnets)
        if (!validIpOrCidr(s)) c.error(v, p, "invalid IP or CIDR \"" + s + "\"");
    } else if (key == "port") readPort(c, v, p, out.port);
    else if (key == "sourceLabels") readStringMap(c, v, p, out.sourceLabels);
    else if (key == "gateways") readGateways(c, v, p, out.gateways);
    else if (key == "sourceNamespace") readString(c, v, p, out.sourceNamespace);
    else if (key == "sourceSubnet") {  // deprecated, not enforced
      std::string ignored;
      readString(c, v, p, ignored);
    } else return false;
    return true;
  });
}

void parseTlsMatch(Ctx& c, const Node& n, const Path& path, TLSMatchAttributes& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "sniHosts") {
      readStringList(c, v, p, out.sniHosts);
      for (auto& h : out.sniHosts) {
        if (auto e = hostError(h)) c.error(v, p, *e);
        h = lower(h);
      }
    } else if (key == "destinationSubnets") {
      readStringList(c, v, p, out.destinationSubnets);
      for (const auto& s : out.destinationSubnets)
        if (!validIpOrCidr(s)) c.error(v, p, "invalid IP or CIDR \"" + s + "\"");
    } else if (key == "port") readPort(c, v, p, out.port);
    else if (key == "sourceLabels") readStringMap(c, v, p, out.sourceLabels);
    else if (key == "gateways") readGateways(c, v, p, out.gateways);
    else if (key == "sourceNamespace") readString(c, v, p, out.sourceNamespace);
    else return false;
    return true;
  });
  if (n.isMap() && out.sniHosts.empty()) c.error(n, join(path, "sniHosts"), "at least one SNI host is required");
}

template <class Route, class Match, class MatchFn>
void parseL4Route(Ctx& c, const Node& n, const Path& path, Route& out, MatchFn matchFn, bool matchRequired) {
  Node routeNode;
  bool routeErrors = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "match") readMessageList(c, v, p, out.match, matchFn);
    else if (key == "route") {
      routeNode.reset(v);
      size_t before = c.errorCount();
      readMessageList(c, v, p, out.route, parseRouteDestination);
      routeErrors = c.errorCount() != before;
    } else return false;
    return true;
  });
  if (!n.isMap()) return;
  if (matchRequired && out.match.empty()) c.error(n, join(path, "match"), "at least one match is required");
  if (out.route.empty()) c.error(routeNode.line() == 0 ? n : routeNode, join(path, "route"), "at least one route destination is required");
  else if (!routeErrors) checkWeights(c, routeNode, join(path, "route"), out.route);
}

}  // namespace

void parseVirtualServiceSpec(Ctx& c, const Node& spec, VirtualService& out) {
  const Path root = "spec";
  bool delegate = true;  // a VirtualService without hosts is a delegate
  for (const auto& [k, v] : spec.entries())
    if (k.scalar() == "hosts" && v.isSequence() && v.size() > 0) delegate = false;
  forFields(c, spec, root, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "hosts") {
      std::vector<std::string> raw;
      readStringList(c, v, p, raw);
      size_t i = 0;
      for (const auto& h : raw) {
        if (auto e = hostError(h)) c.error(v, index(p, i), *e);
        out.hosts.push_back(expandHost(h, c.ns()));
        ++i;
      }
    } else if (key == "gateways") {
      readGateways(c, v, p, out.gateways);
    } else if (key == "http") {
      forList(c, v, p, [&](const Node& e, const Path& ep) {
        if (!expectMap(c, e, ep)) return;
        parseHttpRoute(c, e, ep, out.http.emplace_back(), delegate);
      });
    } else if (key == "tls") {
      readMessageList(c, v, p, out.tls, [](Ctx& c, const Node& n, const Path& path, TLSRoute& r) {
        parseL4Route<TLSRoute, TLSMatchAttributes>(c, n, path, r, parseTlsMatch, true);
      });
    } else if (key == "tcp") {
      readMessageList(c, v, p, out.tcp, [](Ctx& c, const Node& n, const Path& path, TCPRoute& r) {
        parseL4Route<TCPRoute, L4MatchAttributes>(c, n, path, r, parseL4Match, false);
      });
    } else if (key == "exportTo") {
      readStringList(c, v, p, out.exportTo);
      validateExportTo(c, v, p, out.exportTo);
    } else return false;
    return true;
  });

  if (out.http.empty() && out.tls.empty() && out.tcp.empty())
    c.error(spec, root, "at least one of http, tcp or tls routes is required");
  if (delegate && (!out.gateways.empty() || !out.tls.empty() || !out.tcp.empty() || out.http.empty())) {
    c.error(spec, join(root, "hosts"),
            "at least one host is required (only a delegate VirtualService, with http routes and no gateways, "
            "may omit hosts)");
  } else {
    bool mesh = out.gateways.empty() ||
                std::find(out.gateways.begin(), out.gateways.end(), "mesh") != out.gateways.end();
    if (mesh && std::find(out.hosts.begin(), out.hosts.end(), "*") != out.hosts.end())
      c.error(spec, join(root, "hosts"), "wildcard host * is not allowed for VirtualServices bound to the mesh gateway");
  }
}

}  // namespace sluice::config::detail
