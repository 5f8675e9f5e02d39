// A TLS server's settings (one Gateway server's `tls` block, resolved to
// files) and the OpenSSL context built from them.
#pragma once

#include <openssl/ssl.h>

#include <expected>
#include <memory>
#include <string>
#include <vector>

namespace sluice::tls {

// What a Gateway server asks of its TLS termination.
struct ServerSpec {
  enum class Mode { kSimple, kMutual, kOptionalMutual };
  Mode mode = Mode::kSimple;
  // Either a credential (a folder under --credentials-dir) or files.
  std::string credentialName;
  std::string certFile, keyFile, caFile;
  std::vector<std::string> subjectAltNames;  // a client certificate must carry one
  int minVersion = TLS1_2_VERSION;  // Istio's gateway default: TLS 1.2 to 1.3
  int maxVersion = TLS1_3_VERSION;
  std::vector<std::string> cipherSuites;  // TLS 1.2 and below; empty: Envoy's defaults
  std::vector<std::string> alpn = {"http/1.1"};  // in preference order

  // One line naming everything but the files' contents: equal specs share one context.
  std::string key() const;
};

// The files a spec reads, once a credential name is resolved.
struct Files {
  std::string cert, key, ca;  // ca empty: none
};

// What /config_dump shows of a loaded certificate (never key material).
struct CertificateInfo {
  std::string subject;
  std::vector<std::string> subjectAltNames;
  std::string notBefore, notAfter;  // RFC 3339, UTC
  std::string serial;               // hex
  std::string caFile;               // the file client certificates are checked against, if any
};

// What an upstream connection asks of TLS (DestinationRule
// trafficPolicy.tls, SIMPLE or MUTUAL).
struct ClientSpec {
  bool mutual = false;  // a client certificate is presented
  std::string credentialName;
  std::string certFile, keyFile, caFile;  // caFile empty: the system's roots
  std::vector<std::string> subjectAltNames;  // the server's certificate must carry one
  std::string sni;                 // the ClientHello's server name
  bool insecureSkipVerify = false;  // no verification at all
  std::vector<std::string> alpn = {"http/1.1"};

  std::string key() const;
};

// An immutable SSL_CTX with a spec applied. Rotation builds a new one.
class Context {
 public:
  virtual ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  SSL_CTX* native() const { return ctx_; }
  // The certificate this side presents (empty subject: none).
  const CertificateInfo& info() const { return info_; }
  // A peer certificate must carry one of these (empty: any verified one).
  const std::vector<std::string>& requiredSans() const { return sans_; }
  const std::vector<std::string>& alpn() const { return alpn_; }

 protected:
  Context() = default;
  // Makes the SSL_CTX (null on failure) with the peer SANs required and
  // the ALPN protocols, and points it back at this context.
  SSL_CTX* init(const SSL_METHOD* method, std::vector<std::string> sans, std::vector<std::string> alpn);
  SSL_CTX* ctx_ = nullptr;
  CertificateInfo info_;
  std::vector<std::string> sans_;
  std::vector<std::string> alpn_;
};

class ServerContext final : public Context {
 public:
  // Reads the files and builds the context. The error names the file and
  // what is wrong with it (missing, not PEM, key not matching, expired).
  static std::expected<std::shared_ptr<const ServerContext>, std::string> load(const ServerSpec& spec,
                                                                               const Files& files);
  const ServerSpec& spec() const { return spec_; }

 private:
  ServerContext() = default;
  ServerSpec spec_;
};

class ClientContext final : public Context {
 public:
  // As ServerContext::load; the certificate and key only for MUTUAL.
  static std::expected<std::shared_ptr<const ClientContext>, std::string> load(const ClientSpec& spec,
                                                                               const Files& files);
  const ClientSpec& spec() const { return spec_; }

 private:
  ClientContext() = default;
  ClientSpec spec_;
};

// Istio's TLS version names (TLS_AUTO, TLSV1_0 ... TLSV1_3) as OpenSSL
// versions; TLS_AUTO gives `autoVersion`. 0: not a version name.
int versionFromName(const std::string& name, int autoVersion);
// An Envoy/OpenSSL cipher suite name OpenSSL does not know: the error.
std::expected<void, std::string> checkCipherSuite(const std::string& name);

// OpenSSL's new-session callback for client contexts (session.cc): hands a
// session ticket to the Session it arrived on.
int newSessionCallback(SSL* ssl, SSL_SESSION* sess);

// The index of SSL ex_data where a session keeps its VerifyNotes.
int sessionExIndex();
struct VerifyNotes {
  bool sanMismatch = false;  // the peer's certificate has none of subjectAltNames
};

// A certificate's subject alternative names as Istio writes them: DNS
// names, URIs (spiffe://...), IP addresses, e-mail addresses.
std::vector<std::string> subjectAltNames(X509* cert);

}  // namespace sluice::tls
