// DestinationRule spec: traffic policies (load balancer, connection pool,
// outlier detection, client TLS), port-level overrides and subsets.
#include <algorithm>
#include <set>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Node = yaml::Node;
using Path = std::string;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kUint32Max = std::numeric_limits<uint32_t>::max();

// Accepted because they are valid Istio, but Sluice does not act on them.
void acceptIgnored(Ctx& c, const Node& v, const Path& p) {
  c.warn(v, p, "accepted but not enforced by sluice");
}

// Istio requires subset names to be DNS-1123 labels; they become metric
// label values and cluster names.
bool isDns1123Label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto alnum = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char ch) { return alnum(ch) || ch == '-'; });
}

void parseConsistentHash(Ctx& c, const Node& n, const Path& path, LoadBalancerSettings::ConsistentHash& out) {
  int keys = 0;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "httpHeaderName") {
      if (readString(c, v, p, out.httpHeaderName)) ++keys;
    } else if (key == "httpCookie") {
      readMessage(c, v, p, out.httpCookie,
                  [](Ctx& c, const Node& n, const Path& path, LoadBalancerSettings::ConsistentHash::HttpCookie& ck) {
                    forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
                      // Both are written into the Set-Cookie header a missing cookie gets.
                      if (key == "name") readWireString(c, v, p, ck.name, http::WireField::HeaderName);
                      else if (key == "path") readWireString(c, v, p, ck.path, http::WireField::CookieAttribute);
                      else if (key == "ttl") readDuration(c, v, p, ck.ttl, false);
                      else if (key == "attributes") acceptIgnored(c, v, p);
                      else return false;
                      return true;
                    });
                    if (ck.name.empty()) c.error(n, join(path, "name"), "is required");
                  });
      if (out.httpCookie) ++keys;
    } else if (key == "useSourceIp") {
      if (readBool(c, v, p, out.useSourceIp) && out.useSourceIp) ++keys;
    } else if (key == "httpQueryParameterName") {
      if (readString(c, v, p, out.httpQueryParameterName)) ++keys;
    } else if (key == "ringHash") {
      forFields(c, v, p, [&](const std::string& k, const Node& rv, const Path& rp) {
        if (k != "minimumRingSize") return false;
        readInt(c, rv, rp, out.ringHashMinimumRingSize, 0, std::numeric_limits<int64_t>::max());
        return true;
      });
    } else if (key == "maglev") {
      out.maglev = v.isMap() || v.isNull();
      forFields(c, v, p, [&](const std::string& k, const Node& mv, const Path& mp) {
        if (k != "tableSize") return false;
        readInt(c, mv, mp, out.maglevTableSize, 0, std::numeric_limits<int64_t>::max());
        return true;
      });
    } else if (key == "minimumRingSize") {
      readInt(c, v, p, out.minimumRingSize, 0, std::numeric_limits<int64_t>::max());
    } else {
      return false;
    }
    return true;
  });
  if (!n.isMap()) return;
  if (keys == 0) c.error(n, path, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required");
  if (keys > 1) c.error(n, path, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
  if (out.ringHashMinimumRingSize && out.maglev) c.error(n, path, "only one of ringHash or maglev may be set");
}

void parseLoadBalancer(Ctx& c, const Node& n, const Path& path, LoadBalancerSettings& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "simple") {
      std::string s;
      if (!readEnum(c, v, p, {"UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"}, s))
        return true;
      using S = LoadBalancerSettings::Simple;
      out.simple = s == "LEAST_CONN"      ? S::LeastConn
                   : s == "RANDOM"        ? S::Random
                   : s == "PASSTHROUGH"   ? S::Passthrough
                   : s == "ROUND_ROBIN"   ? S::RoundRobin
                   : s == "LEAST_REQUEST" ? S::LeastRequest
                                          : S::Unspecified;
    } else if (key == "consistentHash") {
      readMessage(c, v, p, out.consistentHash, parseConsistentHash);
    } else if (key == "localityLbSetting") {
      readMessage(c, v, p, out.localityLbSetting,
                  [](Ctx& c, const Node& n, const Path& path, LoadBalancerSettings::LocalityLbSetting& l) {
                    forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
                      if (key == "enabled") {
                        if (readBool(c, v, p, l.enabled)) l.enabledSet = l.enabled;
                      } else if (key == "distribute" || key == "failover" || key == "failoverPriority") {
                        acceptIgnored(c, v, p);
                      } else {
                        return false;
                      }
                      return true;
                    });
                  });
    } else if (key == "warmupDurationSecs") {
      readDuration(c, v, p, out.warmupDurationSecs, false);
    } else if (key == "warmup") {
      // WarmupConfiguration: duration is required; the curve's shape
      // (minimumPercent, aggression) is checked and not enforced: sluiced
      // ramps linearly from 10% as for warmupDurationSecs.
      if (!expectMap(c, v, p)) return true;
      std::optional<Duration> duration;
      forFields(c, v, p, [&](const std::string& k, const Node& wv, const Path& wp) {
        double d = 0;
        if (k == "duration") {
          readDuration(c, wv, wp, duration, false);
        } else if (k == "minimumPercent") {
          if (readDouble(c, wv, wp, d) && (d < 0 || d > 100)) c.error(wv, wp, "must be between 0 and 100");
          else if (d != 10) acceptIgnored(c, wv, wp);
        } else if (k == "aggression") {
          if (readDouble(c, wv, wp, d) && d <= 0) c.error(wv, wp, "must be greater than 0");
          else if (d != 1) acceptIgnored(c, wv, wp);
        } else {
          return false;
        }
        return true;
      });
      if (!duration) c.error(v, join(p, "duration"), "is required");
      else if (!out.warmupDurationSecs) out.warmupDurationSecs = duration;
    } else {
      return false;
    }
    return true;
  });
  if (out.simple && out.consistentHash) c.error(n, path, "only one of simple or consistentHash may be set");
}

void parseConnectionPool(Ctx& c, const Node& n, const Path& path, ConnectionPoolSettings& out) {
  if (n.isMap() && n.size() == 0) c.error(n, path, "connection pool must have at least one field");
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "tcp") {
      readMessage(c, v, p, out.tcp, [](Ctx& c, const Node& n, const Path& path, ConnectionPoolSettings::TCP& t) {
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "maxConnections") readInt(c, v, p, t.maxConnections, 0, kInt32Max);
          else if (key == "connectTimeout") readDuration(c, v, p, t.connectTimeout, true);
          else if (key == "tcpKeepalive") {
            readMessage(c, v, p, t.tcpKeepalive,
                        [](Ctx& c, const Node& n, const Path& path, ConnectionPoolSettings::TCP::Keepalive& k) {
                          forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
                            if (key == "probes") readInt(c, v, p, k.probes, 0, kUint32Max);
                            else if (key == "time") readDuration(c, v, p, k.time, true);
                            else if (key == "interval") readDuration(c, v, p, k.interval, true);
                            else return false;
                            return true;
                          });
                        });
          } else if (key == "maxConnectionDuration") readDuration(c, v, p, t.maxConnectionDuration, true);
          else if (key == "idleTimeout") readDuration(c, v, p, t.idleTimeout, false);
          else return false;
          return true;
        });
      });
    } else if (key == "http") {
      readMessage(c, v, p, out.http, [](Ctx& c, const Node& n, const Path& path, ConnectionPoolSettings::HTTP& h) {
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "http1MaxPendingRequests") readInt(c, v, p, h.http1MaxPendingRequests, 0, kInt32Max);
          else if (key == "http2MaxRequests") readInt(c, v, p, h.http2MaxRequests, 0, kInt32Max);
          else if (key == "maxRequestsPerConnection") readInt(c, v, p, h.maxRequestsPerConnection, 0, kInt32Max);
          else if (key == "maxRetries") readInt(c, v, p, h.maxRetries, 0, kInt32Max);
          else if (key == "idleTimeout") readDuration(c, v, p, h.idleTimeout, true);
          else if (key == "h2UpgradePolicy") readEnum(c, v, p, {"DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"}, h.h2UpgradePolicy);
          else if (key == "useClientProtocol") readBool(c, v, p, h.useClientProtocol);
          else if (key == "maxConcurrentStreams") readInt(c, v, p, h.maxConcurrentStreams, 0, kInt32Max);
          else if (key == "http2KeepAlive") {
            readMessage(c, v, p, h.http2KeepAlive,
                        [](Ctx& c, const Node& n, const Path& path, ConnectionPoolSettings::HTTP::Http2KeepAlive& k) {
                          forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
                            if (key == "interval") readDuration(c, v, p, k.interval, true);
                            else if (key == "timeout") readDuration(c, v, p, k.timeout, true);
                            else return false;
                            return true;
                          });
                        });
          } else return false;
          return true;
        });
        if (h.useClientProtocol && h.h2UpgradePolicy == "UPGRADE")
          c.error(n, join(path, "useClientProtocol"), "must not be true when h2UpgradePolicy is UPGRADE");
      });
    } else {
      return false;
    }
    return true;
  });
}

void parseOutlierDetection(Ctx& c, const Node& n, const Path& path, OutlierDetection& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "splitExternalLocalOriginErrors") readBool(c, v, p, out.splitExternalLocalOriginErrors);
    else if (key == "consecutiveLocalOriginFailures") readInt(c, v, p, out.consecutiveLocalOriginFailures, 0, kUint32Max);
    else if (key == "consecutiveGatewayErrors") readInt(c, v, p, out.consecutiveGatewayErrors, 0, kUint32Max);
    else if (key == "consecutive5xxErrors") readInt(c, v, p, out.consecutive5xxErrors, 0, kUint32Max);
    else if (key == "consecutiveErrors") {
      // Deprecated alias Istio maps onto consecutive5xxErrors.
      std::optional<uint32_t> legacy;
      if (readInt(c, v, p, legacy, 0, kInt32Max) && !out.consecutive5xxErrors) out.consecutive5xxErrors = legacy;
    } else if (key == "interval") readDuration(c, v, p, out.interval, true);
    else if (key == "baseEjectionTime") readDuration(c, v, p, out.baseEjectionTime, true);
    else if (key == "maxEjectionPercent") readInt(c, v, p, out.maxEjectionPercent, 0, 100);
    else if (key == "minHealthPercent") readInt(c, v, p, out.minHealthPercent, 0, 100);
    else return false;
    return true;
  });
  if (out.consecutiveLocalOriginFailures && !out.splitExternalLocalOriginErrors.value_or(false))
    c.error(n, join(path, "consecutiveLocalOriginFailures"),
            "requires splitExternalLocalOriginErrors: true");
}

void parseClientTls(Ctx& c, const Node& n, const Path& path, ClientTLSSettings& out) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "mode") readEnum(c, v, p, {"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"}, out.mode);
    else if (key == "clientCertificate") readString(c, v, p, out.clientCertificate);
    else if (key == "privateKey") readString(c, v, p, out.privateKey);
    else if (key == "caCertificates") readString(c, v, p, out.caCertificates);
    else if (key == "credentialName") readString(c, v, p, out.credentialName);
    else if (key == "subjectAltNames") readStringList(c, v, p, out.subjectAltNames);
    else if (key == "sni") readString(c, v, p, out.sni);
    else if (key == "insecureSkipVerify") readBool(c, v, p, out.insecureSkipVerify);
    else if (key == "caCrl") acceptIgnored(c, v, p);
    else return false;
    return true;
  });
  if (out.mode == "MUTUAL" && out.credentialName.empty()) {
    if (out.clientCertificate.empty()) c.error(n, join(path, "clientCertificate"), "is required for MUTUAL mode");
    if (out.privateKey.empty()) c.error(n, join(path, "privateKey"), "is required for MUTUAL mode");
  }
  if (out.insecureSkipVerify.value_or(false)) {
    if (!out.caCertificates.empty())
      c.error(n, join(path, "caCertificates"), "cannot be set when insecureSkipVerify is true");
    if (!out.subjectAltNames.empty())
      c.error(n, join(path, "subjectAltNames"), "cannot be set when insecureSkipVerify is true");
  }
  if (out.mode == "ISTIO_MUTUAL" && (!out.clientCertificate.empty() || !out.privateKey.empty() ||
                                     !out.caCertificates.empty() || !out.credentialName.empty()))
    c.error(n, path, "ISTIO_MUTUAL mode must not set certificates or credentialName");
}

void parseTrafficPolicy(Ctx& c, const Node& n, const Path& path, TrafficPolicy& out) {
  if (n.isMap() && n.size() == 0) c.error(n, path, "traffic policy must have at least one field");
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "loadBalancer") readMessage(c, v, p, out.loadBalancer, parseLoadBalancer);
    else if (key == "connectionPool") readMessage(c, v, p, out.connectionPool, parseConnectionPool);
    else if (key == "outlierDetection") readMessage(c, v, p, out.outlierDetection, parseOutlierDetection);
    else if (key == "tls") readMessage(c, v, p, out.tls, parseClientTls);
    else if (key == "portLevelSettings") {
      std::set<uint32_t> ports;
      readMessageList(c, v, p, out.portLevelSettings,
                      [&](Ctx& c, const Node& n, const Path& path, TrafficPolicy::PortTrafficPolicy& pl) {
                        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
                          if (key == "port") parsePortSelector(c, v, p, pl.port);
                          else if (key == "loadBalancer") readMessage(c, v, p, pl.loadBalancer, parseLoadBalancer);
                          else if (key == "connectionPool") readMessage(c, v, p, pl.connectionPool, parseConnectionPool);
                          else if (key == "outlierDetection")
                            readMessage(c, v, p, pl.outlierDetection, parseOutlierDetection);
                          else if (key == "tls") readMessage(c, v, p, pl.tls, parseClientTls);
                          else return false;
                          return true;
                        });
                        if (!pl.port) c.error(n, join(path, "port"), "is required");
                        else if (!ports.insert(pl.port->number).second)
                          c.error(n, join(path, "port"), "duplicate port " + std::to_string(pl.port->number));
                      });
    } else if (key == "tunnel" || key == "proxyProtocol" || key == "retryBudget") {
      acceptIgnored(c, v, p);
    } else {
      return false;
    }
    return true;
  });
}

}  // namespace

void parseDestinationRuleSpec(Ctx& c, const Node& spec, DestinationRule& out) {
  const Path root = "spec";
  bool hostGiven = false, selectorGiven = false;
  Node exportToNode;
  forFields(c, spec, root, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "host") {
      if (!readString(c, v, p, out.host)) return true;
      hostGiven = !out.host.empty();
      if (!hostGiven) return true;
      if (auto e = hostError(out.host)) c.error(v, p, *e);
      out.host = expandHost(out.host, c.ns());
    } else if (key == "trafficPolicy") {
      readMessage(c, v, p, out.trafficPolicy, parseTrafficPolicy);
    } else if (key == "subsets") {
      std::set<std::string> names;
      readMessageList(c, v, p, out.subsets, [&](Ctx& c, const Node& n, const Path& path, Subset& s) {
        forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
          if (key == "name") readString(c, v, p, s.name);
          else if (key == "labels") readStringMap(c, v, p, s.labels);
          else if (key == "trafficPolicy") readMessage(c, v, p, s.trafficPolicy, parseTrafficPolicy);
          else return false;
          return true;
        });
        if (s.name.empty()) c.error(n, join(path, "name"), "is required");
        else if (!isDns1123Label(s.name)) c.error(n, join(path, "name"), "subset name is invalid: " + s.name);
        else if (!names.insert(s.name).second) c.error(n, join(path, "name"), "duplicate subset name \"" + s.name + "\"");
      });
    } else if (key == "exportTo") {
      exportToNode.reset(v);
      readStringList(c, v, p, out.exportTo);
    } else if (key == "workloadSelector") {
      selectorGiven = true;
      parseWorkloadSelector(c, v, p, "matchLabels", out.workloadSelector);
    } else {
      return false;
    }
    return true;
  });
  if (!hostGiven) c.error(spec, join(root, "host"), "is required");
  validateExportTo(c, exportToNode, join(root, "exportTo"), out.exportTo, selectorGiven);
}

}  // namespace sluice::config::detail
