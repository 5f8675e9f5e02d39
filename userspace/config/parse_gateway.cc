// Gateway spec: servers (port, hosts, TLS) and the workload selector.
#include <set>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

using Node = yaml::Node;
using Path = std::string;

void parseServerTls(Ctx& c, const Node& n, const Path& path, ServerTLSSettings& out) {
  auto tlsVersion = [&](const Node& v, const Path& p, std::string& o) {
    readEnum(c, v, p, {"TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"}, o);
  };
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "httpsRedirect") readBool(c, v, p, out.httpsRedirect);
    else if (key == "mode")
      readEnum(c, v, p, {"PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"},
               out.mode);
    else if (key == "serverCertificate") readString(c, v, p, out.serverCertificate);
    else if (key == "privateKey") readString(c, v, p, out.privateKey);
    else if (key == "caCertificates") readString(c, v, p, out.caCertificates);
    else if (key == "credentialName") readString(c, v, p, out.credentialName);
    else if (key == "credentialNames") readStringList(c, v, p, out.credentialNames);
    else if (key == "subjectAltNames") readStringList(c, v, p, out.subjectAltNames);
    else if (key == "minProtocolVersion") tlsVersion(v, p, out.minProtocolVersion);
    else if (key == "maxProtocolVersion") tlsVersion(v, p, out.maxProtocolVersion);
    else if (key == "cipherSuites") readStringList(c, v, p, out.cipherSuites);
    else if (key == "verifyCertificateSpki" || key == "verifyCertificateHash" || key == "caCrl" ||
             key == "tlsCertificates")
      c.warn(v, p, "accepted but not enforced by sluice");
    else return false;
    return true;
  });
  if (!n.isMap()) return;
  const bool terminates = out.mode == "SIMPLE" || out.mode == "MUTUAL" || out.mode == "OPTIONAL_MUTUAL";
  if (terminates && out.credentialName.empty() && out.credentialNames.empty()) {
    if (out.serverCertificate.empty())
      c.error(n, join(path, "serverCertificate"), "is required for " + out.mode + " mode without credentialName");
    if (out.privateKey.empty())
      c.error(n, join(path, "privateKey"), "is required for " + out.mode + " mode without credentialName");
  }
  if (out.mode == "MUTUAL" && out.credentialName.empty() && out.credentialNames.empty() && out.caCertificates.empty())
    c.error(n, join(path, "caCertificates"), "is required for MUTUAL mode without credentialName");
}

void parsePort(Ctx& c, const Node& n, const Path& path, Server::Port& out) {
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
  if (!n.isMap()) return;
  if (!number) c.error(n, join(path, "number"), "is required");
  if (out.protocol.empty()) c.error(n, join(path, "protocol"), "is required");
  if (out.name.empty()) c.error(n, join(path, "name"), "is required");
}

// Gateway hosts are "[namespace/]dnsName"; namespace may be "*", "." or "~".
void checkServerHost(Ctx& c, const Node& v, const Path& p, const std::string& h) {
  std::string_view host = h;
  size_t slash = host.find('/');
  if (slash != std::string_view::npos) {
    std::string_view ns = host.substr(0, slash);
    if (ns.empty() || (ns != "*" && ns != "." && ns != "~" && hostError(ns).has_value()))
      c.error(v, p, "invalid namespace in host \"" + h + "\"");
    host.remove_prefix(slash + 1);
  }
  if (auto e = hostError(host)) c.error(v, p, *e);
}

void parseServer(Ctx& c, const Node& n, const Path& path, Server& out) {
  bool hasPort = false;
  forFields(c, n, path, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "port") {
      hasPort = !v.isNull();
      if (expectMap(c, v, p)) parsePort(c, v, p, out.port);
    } else if (key == "bind") readString(c, v, p, out.bind);
    else if (key == "hosts") {
      readStringList(c, v, p, out.hosts);
      for (size_t i = 0; i < out.hosts.size(); ++i) {
        checkServerHost(c, v, index(p, i), out.hosts[i]);
        out.hosts[i] = lower(out.hosts[i]);
      }
    } else if (key == "tls") readMessage(c, v, p, out.tls, parseServerTls);
    else if (key == "defaultEndpoint") readString(c, v, p, out.defaultEndpoint);
    else if (key == "name") readString(c, v, p, out.name);
    else return false;
    return true;
  });
  if (!n.isMap()) return;
  if (!hasPort) c.error(n, join(path, "port"), "is required");
  if (out.hosts.empty()) c.error(n, join(path, "hosts"), "at least one host is required");
  std::string proto = lower(out.port.protocol);
  if ((proto == "https" || proto == "tls") && !out.tls)
    c.error(n, join(path, "tls"), "is required for " + out.port.protocol + " servers");
  if (out.tls && out.tls->httpsRedirect && proto != "http" && proto != "https")
    c.error(n, join(path, "tls.httpsRedirect"), "only applies to HTTP and HTTPS servers");
}

}  // namespace

void parseGatewaySpec(Ctx& c, const Node& spec, Gateway& out) {
  const Path root = "spec";
  forFields(c, spec, root, [&](const std::string& key, const Node& v, const Path& p) {
    if (key == "servers") readMessageList(c, v, p, out.servers, parseServer);
    else if (key == "selector") readStringMap(c, v, p, out.selector);
    else return false;
    return true;
  });
  if (out.servers.empty()) c.error(spec, join(root, "servers"), "at least one server is required");
  std::set<std::string> names;
  for (size_t i = 0; i < out.servers.size(); ++i)
    if (!out.servers[i].port.name.empty() && !names.insert(out.servers[i].port.name).second)
      c.error(spec, index(join(root, "servers"), i) + ".port.name",
              "duplicate port name \"" + out.servers[i].port.name + "\"");
}

}  // namespace sluice::config::detail
