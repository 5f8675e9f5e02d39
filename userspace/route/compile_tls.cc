// compile(), continued: a cluster's trafficPolicy.tls (DestinationRule,
// after subset and port-level inheritance) as the TLS its connections
// speak.
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
  c.upstream.tls = true;
  if (!options_.credentials) return;  // compiled for inspection: no connections
  c.upstream.tlsCredentials = options_.credentials->get(spec);
  if (std::string e = c.upstream.tlsCredentials->error(); !e.empty()) {
    warn(c.name + ": tls " + mode + ": " + e + "; its connections fail until it loads");
  }
}

}  // namespace sluice::route::detail
