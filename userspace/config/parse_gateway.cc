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
  // Istio's rules (validateTLSOptions), with its messages.
  const std::string& mode = out.mode;
  if (mode == "ISTIO_MUTUAL") {
    auto refuse = [&](bool set, const char* field, const char* what) {
      if (set) c.error(n, join(path, field), std::string("ISTIO_MUTUAL TLS cannot have associated ") + what);
    };
    refuse(!out.serverCertificate.empty(), "serverCertificate", "server certificate");
    refuse(!out.privateKey.empty(), "privateKey", "private key");
    refuse(!out.caCertificates.empty(), "caCertificates", "CA bundle");
    refuse(!out.credentialName.empty(), "credentialName", "credentialName");
    refuse(!out.credentialNames.empty(), "credentialNames", "credentialNames");
    return;
  }
  if (mode.empty() || mode == "PASSTHROUGH" || mode == "AUTO_PASSTHROUGH") {
    if (!out.serverCertificate.empty() || !out.privateKey.empty() || !out.caCertificates.empty() ||
        !out.credentialName.empty() || !out.credentialNames.empty())
      c.warn(n, path, (mode.empty() ? std::string("PASSTHROUGH") : mode) +
                          " mode does not use certificates, they will be ignored");
    return;
  }
  const int sources = int(!out.credentialName.empty()) + int(!out.credentialNames.empty()) +
                      int(!out.serverCertificate.empty() && !out.privateKey.empty());
  if (sources > 1)
    c.error(n, path,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates "
            "should be specified");
  if (!out.credentialName.empty() || !out.credentialNames.empty()) return;
  const std::string kind = mode == "SIMPLE" ? "SIMPLE" : "MUTUAL";
  if (out.serverCertificate.empty())
    c.error(n, join(path, "serverCertificate"), kind + " TLS requires a server certificate");
  if (out.privateKey.empty()) c.error(n, join(path, "privateKey"), kind + " TLS requires a private key");
  if (kind == "MUTUAL" && out.caCertificates.empty())
    c.error(n, join(path, "caCertificates"), "MUTUAL TLS requires a client CA bundle");
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
    else if (key == "targetPort") {
      readPort(c, v, p, out.targetPort);
      if (out.targetPort > 0) c.error(v, p, "targetPort has no impact on Gateways");
    }
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
  const bool tlsPort = proto == "https" || proto == "tls";
  const bool httpPort = proto == "http" || proto == "http2" || proto == "grpc" || proto == "grpc-web";
  if (tlsPort && !out.tls) c.error(n, join(path, "tls"), "server must have TLS settings for HTTPS/TLS protocols");
  if (out.tls && httpPort) {
    const ServerTLSSettings& t = *out.tls;
    const bool passthrough = t.mode.empty() || t.mode == "PASSTHROUGH" || t.mode == "AUTO_PASSTHROUGH";
    if (!passthrough || !t.caCertificates.empty() || !t.privateKey.empty() || !t.serverCertificate.empty())
      c.error(n, join(path, "tls"), "server cannot have TLS settings for plain text HTTP ports");
  } else if (out.tls && !tlsPort && !proto.empty() && validProtocol(out.port.protocol)) {
    c.error(n, join(path, "tls"), "server cannot have TLS settings for non HTTPS/TLS ports");
  }
  if (out.tls && out.tls->httpsRedirect && proto != "http")
    c.warn(n, join(path, "tls.httpsRedirect"), "tls.httpsRedirect should only be used with http servers");
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
