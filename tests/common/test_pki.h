// Certificates made at test time (ECDSA P-256, OpenSSL's API): a CA and
// leaves it signs, with chosen names, SANs and validity, written as PEM
// files; and a real client's ClientHello. Header-only so unit and
// integration tests can share it.
#pragma once

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace sluice::testing {

class TestKey {
 public:
  TestKey() {
    key_ = EVP_EC_gen("P-256");
    if (!key_) throw std::runtime_error("EVP_EC_gen failed");
  }
  ~TestKey() { EVP_PKEY_free(key_); }
  TestKey(const TestKey&) = delete;
  TestKey& operator=(const TestKey&) = delete;
  EVP_PKEY* get() const { return key_; }

 private:
  EVP_PKEY* key_ = nullptr;
};

struct CertOptions {
  std::string commonName;
  // "DNS:a.example.com", "URI:spiffe://x/y", "IP:127.0.0.1"
  std::vector<std::string> subjectAltNames;
  long notBeforeSeconds = -3600;  // relative to now
  long notAfterSeconds = 86400;
  bool ca = false;
  bool clientAuth = false;  // extendedKeyUsage clientAuth instead of serverAuth
};

// A certificate and its key; `issuer` null: self-signed.
class TestCert {
 public:
  TestCert(const CertOptions& o, const TestCert* issuer = nullptr) {
    static long serial = 1000;
    cert_ = X509_new();
    X509_set_version(cert_, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert_), ++serial);
    X509_gmtime_adj(X509_getm_notBefore(cert_), o.notBeforeSeconds);
    X509_gmtime_adj(X509_getm_notAfter(cert_), o.notAfterSeconds);
    X509_set_pubkey(cert_, key_.get());
    X509_NAME* name = X509_get_subject_name(cert_);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(o.commonName.c_str()),
                               -1, -1, 0);
    X509* issuerCert = issuer ? issuer->cert_ : cert_;
    X509_set_issuer_name(cert_, X509_get_subject_name(issuerCert));
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuerCert, cert_, nullptr, nullptr, 0);
    auto ext = [&](int nid, const std::string& value) {
      X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
      if (!e) throw std::runtime_error("bad extension " + value);
      X509_add_ext(cert_, e, -1);
      X509_EXTENSION_free(e);
    };
    ext(NID_basic_constraints, o.ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    ext(NID_key_usage, o.ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    ext(NID_subject_key_identifier, "hash");
    if (!o.ca) ext(NID_ext_key_usage, o.clientAuth ? "clientAuth" : "serverAuth");
    if (!o.subjectAltNames.empty()) {
      std::string sans;
      for (const auto& s : o.subjectAltNames) sans += (sans.empty() ? "" : ",") + s;
      ext(NID_subject_alt_name, sans);
    }
    if (X509_sign(cert_, issuer ? issuer->key_.get() : key_.get(), EVP_sha256()) == 0)
      throw std::runtime_error("X509_sign failed");
  }
  ~TestCert() { X509_free(cert_); }
  TestCert(const TestCert&) = delete;
  TestCert& operator=(const TestCert&) = delete;

  std::string certPem() const {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, cert_);
    return drain(b);
  }
  std::string keyPem() const {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, key_.get(), nullptr, nullptr, 0, nullptr, nullptr);
    return drain(b);
  }
  // Writes <dir>/<certName> and <dir>/<keyName>.
  void write(const std::filesystem::path& dir, const std::string& certName = "tls.crt",
             const std::string& keyName = "tls.key") const {
    std::filesystem::create_directories(dir);
    writeFile(dir / certName, certPem());
    writeFile(dir / keyName, keyPem());
  }
  static void writeFile(const std::filesystem::path& p, const std::string& text) {
    // Written beside, then renamed: a reader never sees half a file.
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    const std::filesystem::path tmp = p.string() + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) throw std::runtime_error("cannot write " + tmp.string());
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    std::filesystem::rename(tmp, p);
  }

 private:
  static std::string drain(BIO* b) {
    char* data = nullptr;
    long n = BIO_get_mem_data(b, &data);
    std::string out(data, size_t(n));
    BIO_free(b);
    return out;
  }
  TestKey key_;
  X509* cert_ = nullptr;
};

// A real client's first flight (its ClientHello records), naming `sni`
// (none when empty) and offering `alpnWire` (ALPN wire format) if given.
inline std::string clientHello(const std::string& sni, const std::string& alpnWire = "") {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (!alpnWire.empty())
    SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(alpnWire.data()), unsigned(alpnWire.size()));
  SSL_connect(ssl);
  std::string out;
  char buf[4096];
  int n;
  while ((n = BIO_read(wbio, buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

}  // namespace sluice::testing
