#include "tls/session.h"

#include <openssl/err.h>

#include <cstring>

namespace sluice::tls {

// A BIO over the session's current input view and output string: no copy
// into an intermediate buffer, and nothing held between calls.
struct SessionBio {
  static int read(BIO* bio, char* buf, int len) {
    auto* s = static_cast<Session*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (s->in_.empty()) {
      BIO_set_retry_read(bio);
      return -1;
    }
    const size_t n = std::min(s->in_.size(), size_t(len));
    std::memcpy(buf, s->in_.data(), n);
    s->in_.remove_prefix(n);
    return int(n);
  }
  static int write(BIO* bio, const char* buf, int len) {
    auto* s = static_cast<Session*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (!s->out_) {
      BIO_set_retry_write(bio);
      return -1;
    }
    s->out_->append(buf, size_t(len));
    return len;
  }
  static long ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
  static int create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
  }
  static const BIO_METHOD* method() {
    static BIO_METHOD* m = [] {
      BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice-session");
      BIO_meth_set_read(bm, read);
      BIO_meth_set_write(bm, write);
      BIO_meth_set_ctrl(bm, ctrl);
      BIO_meth_set_create(bm, create);
      return bm;
    }();
    return m;
  }
};

Session::Session(std::shared_ptr<const Context> ctx) : ctx_(std::move(ctx)) {
  ssl_ = SSL_new(ctx_->native());
  BIO* bio = BIO_new(SessionBio::method());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways; SSL owns it
  SSL_set_ex_data(ssl_, sessionExIndex(), &notes_);
}

Session::~Session() {
  // Freeing a connection that sent no close_notify makes OpenSSL mark its
  // session not resumable (ssl_clear_bad_session). A connection that ended
  // without a TLS error (closed, reset, timed out) leaves its session
  // good: the next connection to the endpoint may resume it.
  if (established_ && failure_ == Failure::kNone) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);
}

ServerSession::ServerSession(std::shared_ptr<const ServerContext> ctx) : Session(std::move(ctx)) {
  SSL_set_accept_state(ssl_);
}

// OpenSSL's new-session callback (clients): the session belongs to the
// Session whose SSL it came on. Returning 1 keeps the reference.
int newSessionCallback(SSL* ssl, SSL_SESSION* sess) {
  auto* bio = SSL_get_rbio(ssl);
  auto* s = bio ? static_cast<Session*>(BIO_get_data(bio)) : nullptr;
  if (!s) return 0;
  s->onNewSession(sess);
  return 1;
}

ClientSession::ClientSession(std::shared_ptr<const ClientContext> ctx, std::shared_ptr<ResumptionSlot> resume)
    : Session(ctx), resume_(std::move(resume)) {
  SSL_set_connect_state(ssl_);
  const ClientSpec& spec = ctx->spec();
  if (!spec.sni.empty()) SSL_set_tlsext_host_name(ssl_, spec.sni.c_str());
  if (!spec.insecureSkipVerify && spec.subjectAltNames.empty() && !spec.sni.empty()) {
    // No SANs named: the certificate must be for the name dialled.
    SSL_set1_host(ssl_, spec.sni.c_str());
  }
  if (resume_ && resume_->get()) SSL_set_session(ssl_, resume_->get());
}

void ClientSession::start(std::string& wire) {
  std::string plain;
  receive({}, plain, wire);
}

void ClientSession::onNewSession(SSL_SESSION* s) {
  if (resume_) {
    resume_->reset(s);
  } else {
    SSL_SESSION_free(s);
  }
}

void Session::fail(int sslError) {
  unsigned long e = ERR_peek_error();
  const int reason = ERR_GET_REASON(e);
  if (!established_) {
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      failure_ = Failure::kNoCertificate;
    } else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      failure_ = notes_.sanMismatch ? Failure::kVerifySan : Failure::kVerify;
    } else {
      failure_ = Failure::kHandshake;
    }
  } else {
    failure_ = Failure::kConnection;
  }
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    detail_ = r ? r : "error " + std::to_string(reason);
  } else {
    detail_ = sslError == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "error " + std::to_string(sslError);
  }
  if (failure_ == Failure::kVerify) {
    detail_ += std::string(": ") + X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
  }
  ERR_clear_error();
}

bool Session::receive(std::string_view in, std::string& plain, std::string& wire) {
  if (failure_ != Failure::kNone) return false;
  in_ = in;
  out_ = &wire;
  bool ok = true;
  ERR_clear_error();  // SSL_get_error reads the thread's queue: start clean
  if (!established_) {
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      established_ = true;
    } else {
      const int err = SSL_get_error(ssl_, r);
      if (err != SSL_ERROR_WANT_READ) {
        fail(err);
        ok = false;
      }
    }
  }
  // Application data, possibly in the same segment as the handshake's end.
  while (ok && established_) {
    // Into a buffer of the thread's, then appended: growing `plain` by a
    // record's worth first would zero 16 KiB per read.
    thread_local char buf[16 * 1024];
    size_t got = 0;
    const int r = SSL_read_ex(ssl_, buf, sizeof(buf), &got);
    if (r == 1) {
      plain.append(buf, got);
      continue;
    }
    const int err = SSL_get_error(ssl_, r);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) {  // close_notify
      closeNotified_ = true;
      break;
    }
    fail(err);
    ok = false;
  }
  in_ = {};
  out_ = nullptr;
  return ok;
}

void Session::send(std::string_view plain, std::string& wire) {
  if (!established_ || failure_ != Failure::kNone || shutdownSent_ || plain.empty()) return;
  out_ = &wire;
  ERR_clear_error();
  size_t written = 0;
  if (SSL_write_ex(ssl_, plain.data(), plain.size(), &written) != 1) fail(SSL_get_error(ssl_, 0));
  out_ = nullptr;
}

void Session::shutdown(std::string& wire) {
  if (!established_ || failure_ != Failure::kNone || shutdownSent_) return;
  shutdownSent_ = true;
  out_ = &wire;
  SSL_shutdown(ssl_);
  ERR_clear_error();
  out_ = nullptr;
}

std::string_view Session::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return std::string_view(reinterpret_cast<const char*>(p), n);
}

bool Session::peerCertificate() const {
  X509* peer = SSL_get0_peer_certificate(ssl_);
  return peer != nullptr;
}

}  // namespace sluice::tls
