#include "tls/context.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include <arpa/inet.h>

namespace sluice::tls {
namespace {

// Envoy's default server cipher suites for TLS 1.2 (TLS 1.3 suites are
// OpenSSL's defaults, as in Envoy).
constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

std::string opensslError() {
  unsigned long e = ERR_get_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    out = reason ? reason : buf;
  }
  ERR_clear_error();
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::expected<std::string, std::string> readFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(fmt::format("{} {}: {}", what, path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > 1024 * 1024) return std::unexpected(fmt::format("{} {}: larger than 1 MiB", what, path));
  return ss.str();
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

std::expected<std::vector<X509Ptr>, std::string> readCerts(const std::string& pem, const std::string& path,
                                                           const char* what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the read that ends the loop leaves "no start line"
  if (out.empty()) return std::unexpected(fmt::format("{} {}: no PEM certificate in it", what, path));
  return out;
}

std::string timeText(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string nameText(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(n));
}

CertificateInfo describe(X509* cert) {
  CertificateInfo info;
  info.subject = nameText(X509_get_subject_name(cert));
  info.subjectAltNames = subjectAltNames(cert);
  info.notBefore = timeText(X509_get0_notBefore(cert));
  info.notAfter = timeText(X509_get0_notAfter(cert));
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      info.serial = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  return info;
}

// Verification: OpenSSL's chain check, then (for the leaf) the spec's
// subjectAltNames; a mismatch is noted so the failure is counted as such.
int verifyCallback(int preverifyOk, X509_STORE_CTX* store) {
  if (!preverifyOk) return 0;
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const auto* ctx = static_cast<const Context*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!ctx || ctx->requiredSans().empty()) return 1;
  const std::vector<std::string> have = subjectAltNames(X509_STORE_CTX_get_current_cert(store));
  for (const std::string& want : ctx->requiredSans()) {
    if (std::find(have.begin(), have.end(), want) != have.end()) return 1;
  }
  if (auto* notes = static_cast<VerifyNotes*>(SSL_get_ex_data(ssl, sessionExIndex()))) notes->sanMismatch = true;
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

int alpnSelect(SSL* ssl, const unsigned char** out, unsigned char* outLen, const unsigned char* in,
               unsigned int inLen, void*) {
  const auto* ctx = static_cast<const Context*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!ctx) return SSL_TLSEXT_ERR_NOACK;
  // Our preference first, among what the client offers.
  for (const std::string& mine : ctx->alpn()) {
    for (unsigned int i = 0; i < inLen;) {
      unsigned int n = in[i];
      if (i + 1 + n > inLen) break;
      if (n == mine.size() && std::memcmp(in + i + 1, mine.data(), n) == 0) {
        *out = in + i + 1;
        *outLen = static_cast<unsigned char>(n);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + n;
    }
  }
  // No protocol in common: go on without ALPN, as Envoy does.
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

std::vector<std::string> subjectAltNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS || n->type == GEN_URI || n->type == GEN_EMAIL) {
      const ASN1_IA5STRING* s = n->d.ia5;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), size_t(ASN1_STRING_length(s)));
    } else if (n->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = n->d.iPAddress;
      char buf[INET6_ADDRSTRLEN] = {};
      const int len = ASN1_STRING_length(ip);
      if (len == 4 || len == 16) {
        inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), buf, sizeof(buf));
        out.emplace_back(buf);
      }
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

std::string ServerSpec::key() const {
  std::string k = fmt::format("mode={} cred={} cert={} key={} ca={} min={} max={}", int(mode), credentialName,
                              certFile, keyFile, caFile, minVersion, maxVersion);
  for (const auto& s : subjectAltNames) k += " san=" + s;
  for (const auto& c : cipherSuites) k += " cipher=" + c;
  for (const auto& a : alpn) k += " alpn=" + a;
  return k;
}

int versionFromName(const std::string& name, int autoVersion) {
  if (name.empty() || name == "TLS_AUTO") return autoVersion;
  if (name == "TLSV1_0") return TLS1_VERSION;
  if (name == "TLSV1_1") return TLS1_1_VERSION;
  if (name == "TLSV1_2") return TLS1_2_VERSION;
  if (name == "TLSV1_3") return TLS1_3_VERSION;
  return 0;
}

std::expected<void, std::string> checkCipherSuite(const std::string& name) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return std::unexpected(opensslError());
  // A list of one cipher OpenSSL does not know is refused.
  const bool ok = name.find_first_of(":,! ") == std::string::npos &&
                  SSL_CTX_set_cipher_list(ctx, name.c_str()) == 1;
  ERR_clear_error();
  SSL_CTX_free(ctx);
  if (!ok) return std::unexpected("unknown cipher suite \"" + name + "\"");
  return {};
}

int sessionExIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

Context::~Context() {
  if (ctx_) SSL_CTX_free(ctx_);
}

SSL_CTX* Context::init(const SSL_METHOD* method, std::vector<std::string> sans, std::vector<std::string> alpn) {
  sans_ = std::move(sans);
  alpn_ = std::move(alpn);
  ctx_ = SSL_CTX_new(method);
  // The verify and ALPN callbacks find the context through this.
  if (ctx_) SSL_CTX_set_app_data(ctx_, this);
  return ctx_;
}

namespace {

struct EvpKeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// A certificate file's chain and the key file's key, checked: PEM, the
// leaf valid now, the key matching it. The key's bytes are wiped after use.
struct Identity {
  std::vector<X509Ptr> chain;
  std::unique_ptr<EVP_PKEY, EvpKeyFree> key;
};
std::expected<Identity, std::string> readIdentity(const std::string& certFile, const std::string& keyFile) {
  auto certPem = readFile(certFile, "certificate");
  if (!certPem) return std::unexpected(certPem.error());
  auto keyPem = readFile(keyFile, "private key");
  if (!keyPem) return std::unexpected(keyPem.error());
  Identity id;
  auto chain = readCerts(*certPem, certFile, "certificate");
  if (!chain) return std::unexpected(chain.error());
  id.chain = std::move(*chain);
  X509* leaf = id.chain[0].get();
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
    return std::unexpected(
        fmt::format("certificate {}: expired on {}", certFile, timeText(X509_get0_notAfter(leaf))));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
    return std::unexpected(
        fmt::format("certificate {}: not valid before {}", certFile, timeText(X509_get0_notBefore(leaf))));
  }
  BioPtr keyBio(BIO_new_mem_buf(keyPem->data(), int(keyPem->size())));
  id.key.reset(PEM_read_bio_PrivateKey(keyBio.get(), nullptr, nullptr, nullptr));
  // Whatever fails below, the key's bytes are not repeated in the message.
  OPENSSL_cleanse(keyPem->data(), keyPem->size());
  if (!id.key) {
    ERR_clear_error();
    return std::unexpected(fmt::format("private key {}: no PEM private key in it", keyFile));
  }
  if (X509_check_private_key(leaf, id.key.get()) != 1) {
    ERR_clear_error();
    return std::unexpected(fmt::format("private key {} does not match certificate {}", keyFile, certFile));
  }
  return id;
}

std::expected<void, std::string> useIdentity(SSL_CTX* ctx, const Identity& id) {
  if (SSL_CTX_use_certificate(ctx, id.chain[0].get()) != 1 || SSL_CTX_use_PrivateKey(ctx, id.key.get()) != 1) {
    return std::unexpected("SSL_CTX_use_certificate: " + opensslError());
  }
  for (size_t i = 1; i < id.chain.size(); ++i) SSL_CTX_add1_chain_cert(ctx, id.chain[i].get());
  return {};
}

// Trusts the CA file's certificates; with `sendNames`, also names them to
// clients as acceptable issuers (a server asking for certificates).
std::expected<void, std::string> trustCa(SSL_CTX* ctx, const std::string& caFile, bool sendNames) {
  auto caPem = readFile(caFile, "CA certificates");
  if (!caPem) return std::unexpected(caPem.error());
  auto cas = readCerts(*caPem, caFile, "CA certificates");
  if (!cas) return std::unexpected(cas.error());
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME)* names = sendNames ? sk_X509_NAME_new_null() : nullptr;
  for (auto& ca : *cas) {
    X509_STORE_add_cert(store, ca.get());
    if (names) sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca.get())));
  }
  ERR_clear_error();
  if (names) SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
  return {};
}

}  // namespace

std::expected<std::shared_ptr<const ServerContext>, std::string> ServerContext::load(const ServerSpec& spec,
                                                                                     const Files& files) {
  const bool mutual = spec.mode != ServerSpec::Mode::kSimple;
  if (mutual && files.ca.empty()) {
    // OPTIONAL_MUTUAL too: an empty trust store would refuse every client
    // that presents a certificate (Istio rejects it).
    return std::unexpected(spec.credentialName.empty()
                               ? std::string("MUTUAL mode needs caCertificates")
                               : "MUTUAL mode needs a CA: neither ca.crt in credential \"" + spec.credentialName +
                                     "\" nor a \"" + spec.credentialName + "-cacert\" credential");
  }
  auto id = readIdentity(files.cert, files.key);
  if (!id) return std::unexpected(id.error());
  std::shared_ptr<ServerContext> out(new ServerContext());
  out->spec_ = spec;
  SSL_CTX* ctx = out->init(TLS_server_method(), spec.subjectAltNames, spec.alpn);
  if (!ctx) return std::unexpected("SSL_CTX_new: " + opensslError());
  if (auto r = useIdentity(ctx, *id); !r) return std::unexpected(r.error());

  SSL_CTX_set_min_proto_version(ctx, spec.minVersion);
  SSL_CTX_set_max_proto_version(ctx, spec.maxVersion);
  std::string ciphers;
  for (const std::string& c : spec.cipherSuites) ciphers += (ciphers.empty() ? "" : ":") + c;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.empty() ? kDefaultCiphers : ciphers.c_str()) != 1) {
    return std::unexpected("cipherSuites: none of them is known: " + opensslError());
  }
  // Less memory per idle connection (read and write buffers go back to the
  // pool between records), no renegotiation, the server's cipher order.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_alpn_select_cb(ctx, alpnSelect, nullptr);
  // Resumption is by stateless tickets (a key per context); the session
  // cache of a node proxy would only grow.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);

  if (!files.ca.empty()) {
    if (auto r = trustCa(ctx, files.ca, /*sendNames=*/true); !r) return std::unexpected(r.error());
  }
  if (mutual) {
    int mode = SSL_VERIFY_PEER;
    if (spec.mode == ServerSpec::Mode::kMutual) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, verifyCallback);
    // Session ids for resumption must name the context when clients are
    // verified (OpenSSL refuses resumption otherwise).
    static const unsigned char kSidCtx[] = "sluice";
    SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof(kSidCtx) - 1);
  }
  out->info_ = describe(id->chain[0].get());
  out->info_.caFile = files.ca;
  return std::shared_ptr<const ServerContext>(std::move(out));
}

std::string ClientSpec::key() const {
  std::string k = fmt::format("client mutual={} cred={} cert={} key={} ca={} sni={} skip={}", mutual,
                              credentialName, certFile, keyFile, caFile, sni, insecureSkipVerify);
  for (const auto& s : subjectAltNames) k += " san=" + s;
  for (const auto& a : alpn) k += " alpn=" + a;
  return k;
}

std::expected<std::shared_ptr<const ClientContext>, std::string> ClientContext::load(const ClientSpec& spec,
                                                                                     const Files& files) {
  std::shared_ptr<ClientContext> out(new ClientContext());
  out->spec_ = spec;
  SSL_CTX* ctx = out->init(TLS_client_method(), spec.subjectAltNames, spec.alpn);
  if (!ctx) return std::unexpected("SSL_CTX_new: " + opensslError());
  if (spec.mutual) {
    auto id = readIdentity(files.cert, files.key);
    if (!id) return std::unexpected(id.error());
    if (auto r = useIdentity(ctx, *id); !r) return std::unexpected(r.error());
    out->info_ = describe(id->chain[0].get());
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  std::string protos;
  for (const std::string& a : spec.alpn) protos += char(a.size()) + a;
  SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(protos.data()), unsigned(protos.size()));
  // Sessions are kept by the caller per endpoint (ClientSession), not in
  // OpenSSL's cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, newSessionCallback);
  if (spec.insecureSkipVerify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  } else {
    if (!files.ca.empty()) {
      if (auto r = trustCa(ctx, files.ca, /*sendNames=*/false); !r) return std::unexpected(r.error());
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return std::unexpected("no caCertificates, and the system's CA certificates could not be read: " +
                             opensslError());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verifyCallback);
  }
  out->info_.caFile = files.ca;
  return std::shared_ptr<const ClientContext>(std::move(out));
}

}  // namespace sluice::tls
