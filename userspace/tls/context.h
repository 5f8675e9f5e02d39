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

// An immutable SSL_CTX with the spec applied. Rotation builds a new one.
class ServerContext {
 public:
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // Reads the files and builds the context. The error names the file and
  // what is wrong with it (missing, not PEM, key not matching, expired).
  static std::expected<std::shared_ptr<const ServerContext>, std::string> load(const ServerSpec& spec,
                                                                               const Files& files);

  SSL_CTX* native() const { return ctx_; }
  const ServerSpec& spec() const { return spec_; }
  const CertificateInfo& info() const { return info_; }

 private:
  ServerContext() = default;
  SSL_CTX* ctx_ = nullptr;
  ServerSpec spec_;
  CertificateInfo info_;
};

// Istio's TLS version names (TLS_AUTO, TLSV1_0 ... TLSV1_3) as OpenSSL
// versions; TLS_AUTO gives `autoVersion`. 0: not a version name.
int versionFromName(const std::string& name, int autoVersion);
// An Envoy/OpenSSL cipher suite name OpenSSL does not know: the error.
std::expected<void, std::string> checkCipherSuite(const std::string& name);

// The index of SSL ex_data where a session keeps its VerifyNotes.
int sessionExIndex();
struct VerifyNotes {
  bool sanMismatch = false;  // the client's certificate has none of subjectAltNames
};

// A certificate's subject alternative names as Istio writes them: DNS
// names, URIs (spiffe://...), IP addresses, e-mail addresses.
std::vector<std::string> subjectAltNames(X509* cert);

}  // namespace sluice::tls
