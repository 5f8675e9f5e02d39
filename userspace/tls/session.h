// One TLS connection over byte buffers: the caller owns the socket and
// hands received bytes in; plaintext and bytes to send come out. No I/O
// and no blocking: a handshake advances as its bytes arrive.
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
  kVerifySan,      // ssl.fail_verify_san: the peer's certificate has none of subjectAltNames
  kVerify,         // ssl.fail_verify_error: the peer's certificate does not verify
  kConnection,     // ssl.connection_error: after the handshake
};

class Session {
 public:
  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

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
  bool resumed() const { return SSL_session_reused(ssl_) == 1; }
  // The peer sent close_notify: no more plaintext will come.
  bool closeNotified() const { return closeNotified_; }

 protected:
  Session(std::shared_ptr<const Context> ctx);
  // A session ticket arrived (clients keep it for the next connection).
  virtual void onNewSession(SSL_SESSION*) {}
  SSL* ssl_ = nullptr;
  std::string_view in_;         // what the BIO reads from during a call
  std::string* out_ = nullptr;  // where the BIO writes during a call

 private:
  friend struct SessionBio;
  friend int newSessionCallback(SSL*, SSL_SESSION*);
  void fail(int sslError);

  std::shared_ptr<const Context> ctx_;  // kept while the SSL uses it
  VerifyNotes notes_;
  Failure failure_ = Failure::kNone;
  std::string detail_;
  bool established_ = false;
  bool closeNotified_ = false;
  bool shutdownSent_ = false;
};

class ServerSession final : public Session {
 public:
  explicit ServerSession(std::shared_ptr<const ServerContext> ctx);
};

// The TLS session an upstream endpoint last gave, offered again on the next
// connection to it (resumption); owned by the caller, one per endpoint.
class ResumptionSlot {
 public:
  ResumptionSlot() = default;
  ~ResumptionSlot() { reset(nullptr); }
  ResumptionSlot(const ResumptionSlot&) = delete;
  ResumptionSlot& operator=(const ResumptionSlot&) = delete;
  SSL_SESSION* get() const { return session_; }
  void reset(SSL_SESSION* s) {  // takes the reference
    if (session_) SSL_SESSION_free(session_);
    session_ = s;
  }

 private:
  SSL_SESSION* session_ = nullptr;
};

class ClientSession final : public Session {
 public:
  // `resume`: the endpoint's slot (may be null); a session in it is
  // offered, and a new one the server sends replaces it.
  ClientSession(std::shared_ptr<const ClientContext> ctx, std::shared_ptr<ResumptionSlot> resume);
  // The ClientHello, to send first.
  void start(std::string& wire);

 private:
  void onNewSession(SSL_SESSION* s) override;
  std::shared_ptr<ResumptionSlot> resume_;
};

}  // namespace sluice::tls
