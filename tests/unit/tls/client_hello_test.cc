// parseClientHello on ClientHellos OpenSSL writes, cut and corrupted.
#include "tls/client_hello.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include "../../common/test_pki.h"

namespace sluice::tls {
namespace {

using sluice::testing::clientHello;

TEST(ClientHello, ReadsSniAndAlpn) {
  const std::string hello = clientHello("App.Example.COM", std::string("\x02h2\x08http/1.1", 12));
  ClientHello h = parseClientHello(hello);
  ASSERT_EQ(h.status, ClientHello::Status::kOk);
  EXPECT_EQ(h.serverName, "app.example.com") << "lower case";
  EXPECT_EQ(h.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(h.bytes, hello.size());
}

TEST(ClientHello, NoSniIsFine) {
  ClientHello h = parseClientHello(clientHello(""));
  ASSERT_EQ(h.status, ClientHello::Status::kOk);
  EXPECT_EQ(h.serverName, "");
  EXPECT_TRUE(h.alpn.empty());
}

TEST(ClientHello, EveryPrefixAsksForMore) {
  const std::string hello = clientHello("a.example.com");
  for (size_t n = 0; n < hello.size(); ++n) {
    EXPECT_EQ(parseClientHello(std::string_view(hello).substr(0, n)).status, ClientHello::Status::kNeedMore) << n;
  }
}

TEST(ClientHello, SplitAcrossRecords) {
  // The same handshake message in two records (RFC 8446 allows it).
  const std::string hello = clientHello("split.example.com");
  const std::string body = hello.substr(5);
  const size_t cut = 40;
  auto record = [](std::string_view payload) {
    std::string r = "\x16\x03\x01";
    r += char(payload.size() >> 8);
    r += char(payload.size() & 0xff);
    r.append(payload);
    return r;
  };
  const std::string two = record(std::string_view(body).substr(0, cut)) + record(std::string_view(body).substr(cut));
  ClientHello h = parseClientHello(two);
  ASSERT_EQ(h.status, ClientHello::Status::kOk);
  EXPECT_EQ(h.serverName, "split.example.com");
  EXPECT_EQ(parseClientHello(std::string_view(two).substr(0, two.size() - 1)).status,
            ClientHello::Status::kNeedMore);
}

TEST(ClientHello, PlaintextAndGarbageAreNotTls) {
  EXPECT_EQ(parseClientHello("GET / HTTP/1.1\r\n").status, ClientHello::Status::kNotTls);
  EXPECT_EQ(parseClientHello("G").status, ClientHello::Status::kNotTls);
  EXPECT_EQ(parseClientHello(std::string("\x16\x07", 2)).status, ClientHello::Status::kNotTls);
  // A handshake record that is not a ClientHello.
  EXPECT_EQ(parseClientHello(std::string("\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9)).status,
            ClientHello::Status::kInvalid);
  // A zero-length record.
  EXPECT_EQ(parseClientHello(std::string("\x16\x03\x01\x00\x00", 5)).status, ClientHello::Status::kInvalid);
}

TEST(ClientHello, CorruptedLengthsAreInvalidNeverOutOfBounds) {
  const std::string hello = clientHello("a.example.com", std::string("\x08http/1.1", 9));
  // Flip each byte after the record header in turn: the parser must give
  // an answer (any) without reading past the input (ASan builds check).
  for (size_t i = 5; i < hello.size(); ++i) {
    std::string bad = hello;
    bad[i] = char(bad[i] ^ 0xff);
    ClientHello h = parseClientHello(bad);
    if (h.status == ClientHello::Status::kOk) {
      EXPECT_LE(h.bytes, bad.size());
    }
  }
  // An SNI length past its extension.
  std::string bad = hello;
  size_t at = bad.find("a.example.com");
  ASSERT_NE(at, std::string::npos);
  bad[at - 1] = char(0x7f);
  EXPECT_EQ(parseClientHello(bad).status, ClientHello::Status::kInvalid);
}

}  // namespace
}  // namespace sluice::tls
