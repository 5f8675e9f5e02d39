#include "config/parse_util.h"

#include "istio/duration.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <set>

namespace sluice::config::detail {

int Ctx::line(const Node& n) const {
  return n.line() > 0 ? n.line() + lineOffset_ : docLine_;
}

void Ctx::error(const Node& at, const std::string& path, std::string message) {
  errorAtLine(line(at), path, std::move(message));
}

void Ctx::errorAtLine(int line, const std::string& path, std::string message) {
  errors_.push_back(ConfigError{file_, line, resource_, path, std::move(message)});
}

void Ctx::warn(const Node& at, const std::string& path, std::string message) {
  ConfigError e{file_, line(at), resource_, path, std::move(message)};
  warnings_.push_back(e.str());
}

std::string join(const std::string& path, std::string_view key) {
  std::string out;
  out.reserve(path.size() + key.size() + 1);
  out += path;
  if (!path.empty()) out += '.';
  out += key;
  return out;
}

std::string index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

bool expectMap(Ctx& c, const Node& n, const std::string& path) {
  if (n.isMap()) return true;
  if (!n.isNull()) c.error(n, path, "must be a map");
  return false;
}

void forFields(Ctx& c, const Node& n, const std::string& path, const FieldFn& fn) {
  if (!expectMap(c, n, path)) return;
  // Small maps: a linear scan for duplicates beats hashing.
  std::vector<std::string_view> seen;
  for (const auto& [k, v] : n.entries()) {
    if (!k.isScalar()) {
      c.error(k, path, "field names must be strings");
      continue;
    }
    const std::string& key = k.scalar();
    std::string p = join(path, key);
    if (std::find(seen.begin(), seen.end(), std::string_view(key)) != seen.end()) {
      c.error(k, p, "duplicate field");
      continue;
    }
    seen.push_back(key);
    c.setCurrentKey(k);
    if (!fn(key, v, p)) c.error(k, p, "unknown field");
  }
}

bool forList(Ctx& c, const Node& n, const std::string& path, const ElemFn& fn) {
  if (n.isNull()) return false;
  if (!n.isSequence()) {
    c.error(n, path, "must be a list");
    return false;
  }
  size_t i = 0;
  for (const Node& e : n.items()) fn(e, index(path, i++));
  return true;
}

static bool scalar(Ctx& c, const Node& n, const std::string& path, const char* what) {
  if (n.isNull()) return false;
  if (!n.isScalar()) {
    c.error(n, path, std::string("must be ") + what);
    return false;
  }
  return true;
}

bool readString(Ctx& c, const Node& n, const std::string& path, std::string& out) {
  if (!scalar(c, n, path, "a string")) return false;
  out = n.scalar();
  return true;
}

bool readString(Ctx& c, const Node& n, const std::string& path, std::optional<std::string>& out) {
  std::string s;
  if (!readString(c, n, path, s)) return false;
  out = std::move(s);
  return true;
}

bool readBool(Ctx& c, const Node& n, const std::string& path, bool& out) {
  if (!scalar(c, n, path, "a boolean")) return false;
  // Kubernetes decodes YAML 1.1, where yes/no/on/off are booleans too.
  static constexpr std::array<std::string_view, 8> yes = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On"};
  static constexpr std::array<std::string_view, 8> no = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off"};
  const std::string& s = n.scalar();
  if (std::find(yes.begin(), yes.end(), s) != yes.end()) {
    out = true;
  } else if (std::find(no.begin(), no.end(), s) != no.end()) {
    out = false;
  } else {
    c.error(n, path, "must be a boolean");
    return false;
  }
  return true;
}

bool readBool(Ctx& c, const Node& n, const std::string& path, std::optional<bool>& out) {
  bool b = false;
  if (!readBool(c, n, path, b)) return false;
  out = b;
  return true;
}

bool readInt64(Ctx& c, const Node& n, const std::string& path, int64_t min, int64_t max, int64_t& out) {
  if (!scalar(c, n, path, "an integer")) return false;
  const std::string& s = n.scalar();
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    c.error(n, path, "integer out of range");
    return false;
  }
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    c.error(n, path, "must be an integer");
    return false;
  }
  if (v < min || v > max) {
    if (v < 0 && min == 0)
      c.error(n, path, "must not be negative");
    else
      c.error(n, path, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return false;
  }
  out = v;
  return true;
}

bool readDouble(Ctx& c, const Node& n, const std::string& path, double& out) {
  if (!scalar(c, n, path, "a number")) return false;
  const std::string& s = n.scalar();
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    c.error(n, path, "must be a number");
    return false;
  }
  out = v;
  return true;
}

bool readDuration(Ctx& c, const Node& n, const std::string& path, std::optional<Duration>& out, bool minMs) {
  if (!scalar(c, n, path, "a duration string")) return false;
  auto d = istio::parseDuration(n.scalar());
  if (!d) {
    c.error(n, path, "invalid duration \"" + n.scalar() + "\": " + d.error());
    return false;
  }
  if (minMs) {
    if (*d < std::chrono::milliseconds(1)) {
      c.error(n, path, "duration must be at least 1ms");
      return false;
    }
    if (d->count() % 1000000 != 0) {
      c.error(n, path, "only durations to millisecond precision are supported");
      return false;
    }
  }
  out = *d;
  return true;
}

bool readStringList(Ctx& c, const Node& n, const std::string& path, std::vector<std::string>& out) {
  return forList(c, n, path, [&](const Node& e, const std::string& p) {
    std::string s;
    if (readString(c, e, p, s)) out.push_back(std::move(s));
    else if (e.isNull()) c.error(e, p, "must be a string");
  });
}

bool checkWire(Ctx& c, const Node& n, const std::string& path, std::string_view value, http::WireField field) {
  std::string_view e = http::wireError(field, value);
  if (e.empty()) return true;
  c.error(n, path, std::string(e) + ": it would be written into an HTTP header or request line");
  return false;
}

bool readWireString(Ctx& c, const Node& n, const std::string& path, std::string& out, http::WireField field) {
  if (!readString(c, n, path, out)) return false;
  return checkWire(c, n, path, out, field);
}

bool readWireStringList(Ctx& c, const Node& n, const std::string& path, std::vector<std::string>& out,
                        http::WireField field) {
  return forList(c, n, path, [&](const Node& e, const std::string& p) {
    std::string s;
    if (readWireString(c, e, p, s, field)) out.push_back(std::move(s));
    else if (e.isNull()) c.error(e, p, "must be a string");
  });
}

bool readStringMap(Ctx& c, const Node& n, const std::string& path, std::map<std::string, std::string>& out) {
  if (n.isNull()) return false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    std::string s;
    if (readString(c, v, p, s)) out[key] = std::move(s);
    return true;
  });
  return n.isMap();
}

bool readEnum(Ctx& c, const Node& n, const std::string& path, std::initializer_list<std::string_view> allowed,
              std::string& out) {
  std::string s;
  if (!readString(c, n, path, s)) return false;
  if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
    std::string msg = "invalid value \"" + s + "\" (want one of";
    for (auto a : allowed) msg += " " + std::string(a);
    c.error(n, path, msg + ")");
    return false;
  }
  out = std::move(s);
  return true;
}

void parseStringMatch(Ctx& c, const Node& n, const std::string& path, StringMatch& out, bool allowPresence) {
  int set = 0;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    StringMatch::Kind kind;
    if (key == "exact") kind = StringMatch::Kind::Exact;
    else if (key == "prefix") kind = StringMatch::Kind::Prefix;
    else if (key == "regex") kind = StringMatch::Kind::Regex;
    else return false;
    std::string s;
    if (!readString(c, v, p, s)) return true;
    if (++set > 1) {
      c.error(v, p, "only one of exact, prefix or regex may be set");
      return true;
    }
    out.kind = kind;
    out.value = std::move(s);
    if (kind == StringMatch::Kind::Regex) {
      RE2::Options opt;
      opt.set_log_errors(false);
      auto re = std::make_shared<const RE2>(out.value, opt);
      if (!re->ok()) c.error(v, p, "invalid regex \"" + out.value + "\": " + re->error());
      else out.regex = std::move(re);
    }
    return true;
  });
  if (set == 0 && n.isMap() && !allowPresence) c.error(n, path, "one of exact, prefix or regex is required");
}

void parseStringMatchMap(Ctx& c, const Node& n, const std::string& path,
                         std::map<std::string, StringMatch>& out, bool lowerKeys) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key.empty()) {
      c.error(v, p, "name must not be empty");
      return true;
    }
    StringMatch m;  // Kind::Present unless a matcher is given: `name: {}` or `name:`
    if (!v.isNull()) {
      if (!expectMap(c, v, p)) return true;
      parseStringMatch(c, v, p, m, /*allowPresence=*/true);
    }
    out[lowerKeys ? lower(key) : key] = std::move(m);
    return true;
  });
}

void parsePercent(Ctx& c, const Node& n, const std::string& path, std::optional<Percent>& out) {
  if (n.isNull() || !expectMap(c, n, path)) return;
  Percent pct;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key != "value") return false;
    if (readDouble(c, v, p, pct.value) && (pct.value < 0 || pct.value > 100))
      c.error(v, p, "percentage must be between 0 and 100");
    return true;
  });
  out = pct;
}

void parsePortSelector(Ctx& c, const Node& n, const std::string& path, std::optional<PortSelector>& out) {
  if (n.isNull() || !expectMap(c, n, path)) return;
  PortSelector ps;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key != "number") return false;
    readPort(c, v, p, ps.number);
    return true;
  });
  out = ps;
}

void parseDestination(Ctx& c, const Node& n, const std::string& path, Destination& out) {
  bool hostGiven = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key == "host") {
      if (!readString(c, v, p, out.host)) return true;
      hostGiven = true;
      if (out.host == "*") c.error(v, p, "invalid destination host *");
      else if (auto e = hostError(out.host)) c.error(v, p, *e);
      out.host = expandHost(out.host, c.ns());
    } else if (key == "subset") {
      readString(c, v, p, out.subset);
    } else if (key == "port") {
      parsePortSelector(c, v, p, out.port);
    } else {
      return false;
    }
    return true;
  });
  if (!hostGiven && n.isMap()) c.error(n, join(path, "host"), "destination host is required");
}

void parseWorkloadSelector(Ctx& c, const Node& n, const std::string& path, std::string_view labelsKey,
                           std::map<std::string, std::string>& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key != labelsKey) return false;
    readStringMap(c, v, p, out);
    // A selector selects by exact labels: "*" is no wildcard here.
    for (const auto& [k, val] : out) {
      if (k.empty()) c.error(v, p, "empty key is not supported in selector");
      if (k.find('*') != std::string::npos || val.find('*') != std::string::npos)
        c.error(v, join(p, k), "wildcard is not supported in selector");
    }
    return true;
  });
}

namespace {
// A Kubernetes namespace name (DNS-1123 label).
bool isNamespaceName(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto alnum = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char ch) { return alnum(ch) || ch == '-'; });
}
}  // namespace

void validateExportTo(Ctx& c, const Node& n, const std::string& path, const std::vector<std::string>& exportTo,
                      bool drWithSelector) {
  if (exportTo.empty()) return;
  std::set<std::string> seen;
  for (const std::string& e : exportTo) {
    const std::string key = e == "." ? c.ns() : e;
    if (!seen.insert(key).second) {
      c.error(n, path, key != e ? "duplicate entries in exportTo: . and current namespace " + c.ns()
                                : "duplicate entries in exportTo for entry " + e);
      continue;
    }
    if (key != "*" && key != "~" && !isNamespaceName(key)) c.error(n, path, "invalid exportTo value \"" + e + "\"");
  }
  if (drWithSelector) {
    if (!seen.contains(c.ns()))
      c.error(n, path, "destination rule with workload selector cannot have exportTo beyond current namespace");
    else if (seen.size() > 1)
      c.error(n, path, "destination rule with workload selector cannot have multiple entries in exportTo");
  }
  if (seen.contains("*") && exportTo.size() > 1)
    c.error(n, path, "cannot have both public (*) and non-public exportTo values for a resource");
  if (seen.contains("~") && exportTo.size() > 1) c.error(n, path, "cannot export to no one (~) and someone");
}

void parseWorkloadEntrySpec(Ctx& c, const Node& n, const std::string& path, WorkloadEntry& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    if (key == "address") readString(c, v, p, out.address);
    else if (key == "ports") {
      forFields(c, v, p, [&](const std::string& name, const Node& pv, const std::string& pp) {
        uint32_t num = 0;
        if (readPort(c, pv, pp, num)) out.ports[name] = num;
        return true;
      });
    } else if (key == "labels") readStringMap(c, v, p, out.labels);
    else if (key == "network") readString(c, v, p, out.network);
    else if (key == "locality") readString(c, v, p, out.locality);
    else if (key == "weight") readInt(c, v, p, out.weight, 0, std::numeric_limits<uint32_t>::max());
    else if (key == "serviceAccount") readString(c, v, p, out.serviceAccount);
    else return false;
    return true;
  });
  if (n.isMap() && out.address.empty() && out.network.empty())
    c.error(n, join(path, "address"), "address is required unless network is set");
  if (!out.address.empty() && out.address.starts_with("unix://") && !out.ports.empty())
    c.error(n, join(path, "ports"), "unix socket endpoints must not have ports");
  if (out.address.starts_with("unix://")) {
    const std::string_view socket = std::string_view(out.address).substr(7);
    if (socket.empty() || (socket.front() != '/' && socket.front() != '@'))
      c.error(n, join(path, "address"), "UDS must be an absolute path or abstract socket");
    else if (socket.back() == '/')
      c.error(n, join(path, "address"), "UDS may not be a dir");
  }
  for (const auto& [name, number] : out.ports) {
    // Istio's port names are DNS-1123 labels.
    const bool ok = !name.empty() && name.size() <= 63 && std::isalnum(static_cast<unsigned char>(name.front())) &&
                    std::isalnum(static_cast<unsigned char>(name.back())) &&
                    std::all_of(name.begin(), name.end(), [](char ch) {
                      return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
                    });
    if (!ok) c.error(n, join(join(path, "ports"), name), "invalid port name \"" + name + "\"");
  }
}

bool validProtocol(std::string_view p) {
  static constexpr std::array<std::string_view, 13> names = {
      "http", "https", "http2", "grpc", "grpc-web", "tcp", "tls", "udp", "mongo", "redis", "mysql", "http_proxy",
      "thrift"};
  std::string l = lower(p);
  return std::find(names.begin(), names.end(), l) != names.end();
}

static bool validLabel(std::string_view l) {
  if (l.empty() || l.size() > 63) return false;
  if (l.front() == '-' || l.back() == '-') return false;
  return std::all_of(l.begin(), l.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
  });
}

std::optional<std::string> hostError(std::string_view host) {
  if (host.empty()) return "host must not be empty";
  if (host.size() > 255) return "host name too long";
  if (host == "*") return std::nullopt;
  std::string_view rest = host;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  else if (rest.starts_with("*")) rest.remove_prefix(1);  // "*foo.com" is allowed by Istio
  if (rest.empty()) return "invalid host \"" + std::string(host) + "\"";
  size_t start = 0;
  while (start <= rest.size()) {
    size_t dot = rest.find('.', start);
    std::string_view label = rest.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    // A trailing dot (absolute name) leaves an empty last label; tolerate it.
    if (!(label.empty() && dot == std::string_view::npos && start > 0) && !validLabel(label))
      return "invalid host \"" + std::string(host) + "\" (label \"" + std::string(label) + "\")";
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return std::nullopt;
}

bool validIp(std::string_view s) {
  std::string str(s);
  unsigned char buf[16];
  return inet_pton(AF_INET, str.c_str(), buf) == 1 || inet_pton(AF_INET6, str.c_str(), buf) == 1;
}

bool validIpOrCidr(std::string_view s) {
  size_t slash = s.find('/');
  if (slash == std::string_view::npos) return validIp(s);
  std::string_view ip = s.substr(0, slash), bits = s.substr(slash + 1);
  if (!validIp(ip)) return false;
  int n = -1;
  auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), n);
  if (ec != std::errc() || end != bits.data() + bits.size()) return false;
  int max = ip.find(':') == std::string_view::npos ? 32 : 128;
  return n >= 0 && n <= max;
}

std::string qualifyGateway(std::string_view gw, std::string_view ns) {
  if (gw == "mesh" || gw.find('/') != std::string_view::npos) return std::string(gw);
  size_t dot = gw.find('.');
  if (dot != std::string_view::npos) {
    // Legacy FQDN form "name.ns.svc.cluster.local".
    std::string_view name = gw.substr(0, dot), rest = gw.substr(dot + 1);
    std::string_view gns = rest.substr(0, rest.find('.'));
    return std::string(gns) + "/" + std::string(name);
  }
  return std::string(ns) + "/" + std::string(gw);
}

}  // namespace sluice::config::detail
