// compile(), continued: a cluster's trafficPolicy.tls (DestinationRule,
// after subset and port-level inheritance) as the TLS its connections
// speak, and the HTTP version they speak.
#include "route/compiler.h"
#include "tls/credential_store.h"

namespace sluice::route::detail {

void Compiler::clientTls(Cluster& c, const config::ClientTLSSettings& t) {
  const std::string mode = t.mode.empty() ? "DISABLE" : t.mode;
  if (mode == "DISABLE") return;
  if (mode == "ISTIO_MUTUAL") {
    warn(c.name + ": tls mode ISTIO_MUTUAL needs mesh certificates, which sluice does not issue yet; "
         "its connections stay plaintext");
    return;
  }
  tls::ClientSpec spec;
  spec.mutual = mode == "MUTUAL";
  if (!t.credentialName.empty()) {
    spec.credentialName = t.credentialName;
  } else {
    spec.certFile = t.clientCertificate;
    spec.keyFile = t.privateKey;
    spec.caFile = t.caCertificates;
  }
  spec.subjectAltNames = t.subjectAltNames;
  // The name the server is asked for: `sni`, else the service's host (the
  // name a client of the service dials); a wildcard host names no server.
  spec.sni = !t.sni.empty() ? t.sni : (c.serviceHost.starts_with("*") ? "" : c.serviceHost);
  spec.insecureSkipVerify = t.insecureSkipVerify.value_or(false);
  // ALPN names the HTTP version the cluster speaks (upstreamProtocol ran
  // first): the server must agree to it, or the connection fails.
  if (c.upstream.protocol == UpstreamSettings::Protocol::Http2) spec.alpn = {"h2"};
  c.upstream.tls = true;
  if (!options_.credentials) return;  // compiled for inspection: no connections
  c.upstream.tlsCredentials = options_.credentials->get(spec);
  if (std::string e = c.upstream.tlsCredentials->error(); !e.empty()) {
    warn(c.name + ": tls " + mode + ": " + e + "; its connections fail until it loads");
  }
}

}  // namespace sluice::route::detail

namespace sluice::route::detail {

void Compiler::upstreamProtocol(Cluster& c, const config::ServicePort& sp, const std::string& context) {
  std::string proto = sp.protocol;
  for (char& ch : proto) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  const config::ConnectionPoolSettings::HTTP* http =
      c.policy && c.policy->connectionPool && c.policy->connectionPool->http ? &*c.policy->connectionPool->http
                                                                            : nullptr;
  using P = UpstreamSettings::Protocol;
  P p = P::Http1;
  if (proto == "HTTP2" || proto == "GRPC") {
    p = P::Http2;  // the port says so, whatever the policy
  } else if (http && http->useClientProtocol) {
    p = P::ClientProtocol;
  } else if (http && http->h2UpgradePolicy == "UPGRADE") {
    p = P::Http2;
  }
  const bool tls = c.policy && c.policy->tls && (c.policy->tls->mode == "SIMPLE" || c.policy->tls->mode == "MUTUAL");
  if (p == P::ClientProtocol && tls) {
    // One client context names one ALPN protocol: the client's version
    // cannot be followed over TLS yet.
    warn(context + ": " + c.name + " is reached over TLS, where useClientProtocol is not followed yet; "
         "its requests go out in HTTP/1.1");
    p = P::Http1;
  }
  c.upstream.protocol = p;
}

}  // namespace sluice::route::detail
