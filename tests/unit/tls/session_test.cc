// tls::ServerSession against a real OpenSSL client over byte buffers:
// handshakes, client certificates, SAN checks, version limits, ALPN.
#include "tls/session.h"

#include <gtest/gtest.h>
#include <openssl/err.h>

#include "../../common/test_pki.h"
#include "../config/test_util.h"
#include "tls/credential_store.h"

namespace sluice::tls {
namespace {

using sluice::testing::CertOptions;
using sluice::testing::TestCert;

// A client SSL over memory BIOs, pumped against a ServerSession.
class Client {
 public:
  explicit Client(const std::string& sni, const TestCert* cert = nullptr, int maxVersion = 0,
                  std::vector<std::string> alpn = {}) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    if (maxVersion) SSL_CTX_set_max_proto_version(ctx_, maxVersion);
    SSL_CTX_set_min_proto_version(ctx_, TLS1_VERSION);
    SSL_CTX_set_security_level(ctx_, 0);
    if (cert) {
      std::string c = cert->certPem(), k = cert->keyPem();
      BIO* cb = BIO_new_mem_buf(c.data(), int(c.size()));
      BIO* kb = BIO_new_mem_buf(k.data(), int(k.size()));
      X509* x = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
      EVP_PKEY* p = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
      SSL_CTX_use_certificate(ctx_, x);
      SSL_CTX_use_PrivateKey(ctx_, p);
      X509_free(x);
      EVP_PKEY_free(p);
      BIO_free(cb);
      BIO_free(kb);
    }
    ssl_ = SSL_new(ctx_);
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, rbio_, wbio_);
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
    if (!alpn.empty()) {
      std::string wire;
      for (const auto& a : alpn) wire += char(a.size()) + a;
      SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()), unsigned(wire.size()));
    }
    SSL_set_connect_state(ssl_);
  }
  ~Client() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  std::string out() {
    std::string s;
    char buf[4096];
    int n;
    while ((n = BIO_read(wbio_, buf, sizeof(buf))) > 0) s.append(buf, size_t(n));
    return s;
  }
  void in(const std::string& s) { BIO_write(rbio_, s.data(), int(s.size())); }
  // Runs the handshake against `server`; true when both ends finished.
  bool handshake(ServerSession& server, std::string& serverPlain) {
    for (int i = 0; i < 10; ++i) {
      int r = SSL_do_handshake(ssl_);
      std::string toServer = out();
      std::string wire;
      bool ok = server.receive(toServer, serverPlain, wire);
      in(wire);
      if (!ok) return false;
      if (r == 1 && server.established()) {
        // TLS 1.3: the client learns of a refused certificate only after
        // its own Finished; read what the server sent last.
        char b[16];
        SSL_read(ssl_, b, 0);
        ERR_clear_error();
        return true;
      }
    }
    return false;
  }
  SSL* ssl() { return ssl_; }

 private:
  SSL_CTX* ctx_;
  SSL* ssl_;
  BIO* rbio_;
  BIO* wbio_;
};

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    serverCert_ = std::make_unique<TestCert>(
        CertOptions{.commonName = "app.example.com", .subjectAltNames = {"DNS:app.example.com"}}, &ca_);
    serverCert_->write(root() / "server");
    TestCert::writeFile((root() / "ca.crt"), ca_.certPem());
  }
  std::shared_ptr<const ServerContext> context(ServerSpec spec) {
    spec.certFile = (root() / "server/tls.crt").string();
    spec.keyFile = (root() / "server/tls.key").string();
    if (spec.mode != ServerSpec::Mode::kSimple) spec.caFile = (root() / "ca.crt").string();
    auto ctx = ServerContext::load(spec, {spec.certFile, spec.keyFile, spec.caFile});
    EXPECT_TRUE(ctx.has_value()) << ctx.error();
    return ctx ? *ctx : nullptr;
  }
  std::filesystem::path root() const { return dir_.path(); }
  config::testing::TempDir dir_;
  TestCert ca_{CertOptions{.commonName = "Test CA", .ca = true}};
  std::unique_ptr<TestCert> serverCert_;
};

TEST_F(SessionTest, SimpleHandshakeThenDataBothWays) {
  ServerSession server(context({}));
  Client client("app.example.com", nullptr, 0, {"h2", "http/1.1"});
  std::string plain;
  ASSERT_TRUE(client.handshake(server, plain));
  EXPECT_EQ(server.alpn(), "http/1.1") << "h2 is not offered by the server yet";
  EXPECT_STREQ(server.version(), "TLSv1.3");

  ASSERT_EQ(SSL_write(client.ssl(), "GET / HTTP/1.1\r\n\r\n", 18), 18);
  std::string wire;
  ASSERT_TRUE(server.receive(client.out(), plain, wire));
  EXPECT_EQ(plain, "GET / HTTP/1.1\r\n\r\n");
  server.send("HTTP/1.1 200 OK\r\n\r\n", wire);
  client.in(wire);
  char buf[64];
  int n = SSL_read(client.ssl(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), "HTTP/1.1 200 OK\r\n\r\n");
}

TEST_F(SessionTest, BytesMayArriveOneAtATime) {
  ServerSession server(context({}));
  Client client("app.example.com");
  std::string plain;
  for (int round = 0; round < 10 && !server.established(); ++round) {
    SSL_do_handshake(client.ssl());
    std::string bytes = client.out();
    std::string wire;
    for (char c : bytes) ASSERT_TRUE(server.receive(std::string_view(&c, 1), plain, wire));
    client.in(wire);
  }
  EXPECT_TRUE(server.established());
}

TEST_F(SessionTest, MutualRefusesAClientWithoutACertificate) {
  ServerSession server(context({.mode = ServerSpec::Mode::kMutual}));
  Client client("app.example.com");
  std::string plain;
  EXPECT_FALSE(client.handshake(server, plain));
  EXPECT_EQ(server.failure(), Failure::kNoCertificate) << server.failureDetail();
}

TEST_F(SessionTest, MutualAcceptsASignedClientAndChecksItsSan) {
  TestCert good({.commonName = "partner", .subjectAltNames = {"URI:spiffe://partner/ns/a/sa/b"}, .clientAuth = true},
                &ca_);
  {
    ServerSession server(context({.mode = ServerSpec::Mode::kMutual,
                                  .subjectAltNames = {"spiffe://partner/ns/a/sa/b"}}));
    Client client("app.example.com", &good);
    std::string plain;
    EXPECT_TRUE(client.handshake(server, plain)) << server.failureDetail();
    EXPECT_TRUE(server.peerCertificate());
  }
  {
    ServerSession server(context({.mode = ServerSpec::Mode::kMutual, .subjectAltNames = {"spiffe://other"}}));
    Client client("app.example.com", &good);
    std::string plain;
    EXPECT_FALSE(client.handshake(server, plain));
    EXPECT_EQ(server.failure(), Failure::kVerifySan) << server.failureDetail();
  }
  {
    // Signed by another CA: a verification failure, not a SAN one.
    TestCert otherCa({.commonName = "Other CA", .ca = true});
    TestCert stranger({.commonName = "stranger", .clientAuth = true}, &otherCa);
    ServerSession server(context({.mode = ServerSpec::Mode::kMutual}));
    Client client("app.example.com", &stranger);
    std::string plain;
    EXPECT_FALSE(client.handshake(server, plain));
    EXPECT_EQ(server.failure(), Failure::kVerify) << server.failureDetail();
  }
}

TEST_F(SessionTest, OptionalMutualTakesClientsWithAndWithout) {
  auto ctx = context({.mode = ServerSpec::Mode::kOptionalMutual});
  ServerSession without(ctx);
  Client c1("app.example.com");
  std::string plain;
  EXPECT_TRUE(c1.handshake(without, plain)) << without.failureDetail();
  EXPECT_FALSE(without.peerCertificate());
  TestCert good({.commonName = "partner", .clientAuth = true}, &ca_);
  ServerSession with(ctx);
  Client c2("app.example.com", &good);
  EXPECT_TRUE(c2.handshake(with, plain)) << with.failureDetail();
  EXPECT_TRUE(with.peerCertificate());
}

TEST_F(SessionTest, VersionLimitsApply) {
  auto only13 = context({.minVersion = TLS1_3_VERSION});
  ServerSession s1(only13);
  Client tls12("app.example.com", nullptr, TLS1_2_VERSION);
  std::string plain;
  EXPECT_FALSE(tls12.handshake(s1, plain));
  EXPECT_EQ(s1.failure(), Failure::kHandshake);

  auto only12 = context({.maxVersion = TLS1_2_VERSION});
  ServerSession s2(only12);
  Client any("app.example.com");
  EXPECT_TRUE(any.handshake(s2, plain)) << s2.failureDetail();
  EXPECT_STREQ(s2.version(), "TLSv1.2");
}

TEST_F(SessionTest, GarbageFailsTheHandshake) {
  ServerSession server(context({}));
  std::string plain, wire;
  EXPECT_FALSE(server.receive(std::string("\x16\x03\x01\x00\x05hello", 10), plain, wire));
  EXPECT_EQ(server.failure(), Failure::kHandshake);
  EXPECT_FALSE(server.receive("more", plain, wire)) << "stays failed";
}

}  // namespace
}  // namespace sluice::tls

namespace sluice::tls {
namespace {

// ClientSession (upstream TLS) against our own ServerSession.
class ClientSessionTest : public SessionTest {
 protected:
  std::shared_ptr<const ClientContext> client(ClientSpec spec, const TestCert* cert = nullptr) {
    Files f{"", "", spec.caFile};
    if (cert) {
      cert->write(root() / "client", "c.crt", "c.key");
      f.cert = (root() / "client/c.crt").string();
      f.key = (root() / "client/c.key").string();
      spec.mutual = true;
    }
    auto ctx = ClientContext::load(spec, f);
    EXPECT_TRUE(ctx.has_value()) << ctx.error();
    return ctx ? *ctx : nullptr;
  }
  // Runs both ends until neither has anything to send.
  static bool pump(ClientSession& c, ServerSession& s, std::string& serverPlain) {
    std::string toServer;
    c.start(toServer);
    for (int i = 0; i < 10; ++i) {
      std::string toClient, clientPlain, next;
      if (!s.receive(toServer, serverPlain, toClient)) return false;
      if (!c.receive(toClient, clientPlain, next)) return false;
      toServer = std::move(next);
      if (toServer.empty() && c.established() && s.established()) return true;
    }
    return c.established() && s.established();
  }
  std::string ca() { return (root() / "ca.crt").string(); }
};

TEST_F(ClientSessionTest, VerifiesTheServerAgainstTheCaAndTheName) {
  auto server = context({});
  {
    ServerSession s(server);
    ClientSession c(client({.caFile = ca(), .sni = "app.example.com"}), nullptr);
    std::string plain;
    EXPECT_TRUE(pump(c, s, plain)) << c.failureDetail();
    EXPECT_EQ(c.alpn(), "http/1.1");
  }
  {
    // The certificate is for app.example.com, not the name dialled.
    ServerSession s(server);
    ClientSession c(client({.caFile = ca(), .sni = "other.example.com"}), nullptr);
    std::string plain;
    EXPECT_FALSE(pump(c, s, plain));
    EXPECT_EQ(c.failure(), Failure::kVerify) << c.failureDetail();
  }
  {
    ServerSession s(server);
    ClientSession c(client({.caFile = ca(), .subjectAltNames = {"spiffe://nope"}, .sni = "app.example.com"}),
                    nullptr);
    std::string plain;
    EXPECT_FALSE(pump(c, s, plain));
    EXPECT_EQ(c.failure(), Failure::kVerifySan) << c.failureDetail();
  }
  {
    TestCert otherCa({.commonName = "Other CA", .ca = true});
    TestCert::writeFile(root() / "other-ca.crt", otherCa.certPem());
    ServerSession s(server);
    ClientSession c(client({.caFile = (root() / "other-ca.crt").string(), .sni = "app.example.com"}), nullptr);
    std::string plain;
    EXPECT_FALSE(pump(c, s, plain));
    EXPECT_EQ(c.failure(), Failure::kVerify);
    ServerSession s2(server);
    ClientSession skip(client({.sni = "app.example.com", .insecureSkipVerify = true}), nullptr);
    EXPECT_TRUE(pump(skip, s2, plain)) << "insecureSkipVerify checks nothing";
  }
}

TEST_F(ClientSessionTest, MutualPresentsTheClientCertificate) {
  auto server = context({.mode = ServerSpec::Mode::kMutual});
  TestCert me({.commonName = "sluice", .clientAuth = true}, &ca_);
  ServerSession s(server);
  ClientSession c(client({.caFile = ca(), .sni = "app.example.com"}, &me), nullptr);
  std::string plain;
  EXPECT_TRUE(pump(c, s, plain)) << s.failureDetail() << " / " << c.failureDetail();
  EXPECT_TRUE(s.peerCertificate());
}

TEST_F(ClientSessionTest, TheEndpointsSessionIsResumed) {
  auto server = context({});
  auto ctx = client({.caFile = ca(), .sni = "app.example.com"});
  auto slot = std::make_shared<ResumptionSlot>();
  {
    ServerSession s(server);
    ClientSession c(ctx, slot);
    std::string plain;
    ASSERT_TRUE(pump(c, s, plain));
    EXPECT_FALSE(c.resumed());
  }
  ASSERT_NE(slot->get(), nullptr) << "the server's ticket was kept";
  EXPECT_EQ(SSL_SESSION_is_resumable(slot->get()), 1) << "a connection that ended without a TLS error keeps it";
  ServerSession s(server);
  ClientSession c(ctx, slot);
  std::string plain;
  ASSERT_TRUE(pump(c, s, plain));
  EXPECT_TRUE(c.resumed());
}

}  // namespace
}  // namespace sluice::tls

namespace sluice::tls {
namespace {

TEST_F(SessionTest, ShutdownSendsCloseNotifyAndNothingAfter) {
  ServerSession server(context({}));
  Client client("app.example.com");
  std::string plain;
  ASSERT_TRUE(client.handshake(server, plain));
  std::string wire;
  server.shutdown(wire);
  ASSERT_FALSE(wire.empty());
  server.send("late", wire);  // ignored: the stream has ended
  server.shutdown(wire);      // once only
  client.in(wire);
  char buf[16];
  EXPECT_EQ(SSL_read(client.ssl(), buf, sizeof(buf)), 0);
  EXPECT_EQ(SSL_get_error(client.ssl(), 0), SSL_ERROR_ZERO_RETURN) << "a close_notify, and no data after it";
  // The other way: the client's close_notify is seen as the end.
  SSL_shutdown(client.ssl());
  std::string fromClient = client.out(), reply;
  EXPECT_TRUE(server.receive(fromClient, plain, reply));
  EXPECT_TRUE(server.closeNotified());
}

}  // namespace
}  // namespace sluice::tls
