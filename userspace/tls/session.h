// One server-side TLS connection over byte buffers: the caller owns the
// socket and hands received bytes in; plaintext and bytes to send come
// out. No I/O and no blocking: a handshake advances as its bytes arrive.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "tls/context.h"

namespace sluice::tls {

// Why a connection failed, in the terms Envoy counts.
enum class Failure {
  kNone,
  kHandshake,      // ssl.handshake_error: a protocol or negotiation failure
  kNoCertificate,  // ssl.no_certificate: MUTUAL and the client sent none
  kVerifySan,      // ssl.fail_verify_san: the client's certificate has none of subjectAltNames
  kVerify,         // ssl.fail_verify_error: the client's certificate does not verify
  kConnection,     // ssl.connection_error: after the handshake
};

class ServerSession {
 public:
  explicit ServerSession(std::shared_ptr<const ServerContext> ctx);
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Bytes off the socket. Plaintext they complete goes to `plain`, bytes
  // to send (handshake, alerts, tickets) to `wire`. False once failed
  // (failure() says why; an alert for the peer may be in `wire`).
  bool receive(std::string_view in, std::string& plain, std::string& wire);
  // Plaintext to send, encrypted into `wire`. Only once established().
  void send(std::string_view plain, std::string& wire);
  // A close_notify alert for the peer.
  void shutdown(std::string& wire);

  bool established() const { return established_; }
  Failure failure() const { return failure_; }
  // OpenSSL's reason for the failure (no key material).
  const std::string& failureDetail() const { return detail_; }
  // After the handshake: what was negotiated.
  std::string_view alpn() const;
  const char* version() const { return SSL_get_version(ssl_); }
  bool peerCertificate() const;

 private:
  friend struct SessionBio;
  void fail(int sslError);

  std::shared_ptr<const ServerContext> ctx_;  // kept while the SSL uses it
  SSL* ssl_ = nullptr;
  std::string_view in_;      // what the BIO reads from during a call
  std::string* out_ = nullptr;  // where the BIO writes during a call
  VerifyNotes notes_;
  Failure failure_ = Failure::kNone;
  std::string detail_;
  bool established_ = false;
};

}  // namespace sluice::tls
