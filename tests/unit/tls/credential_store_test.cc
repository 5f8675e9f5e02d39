// CredentialStore: credential names resolved as Istio lays out secrets,
// errors that name the file, rotation picked up by poll(), a bad rotation
// keeping the last good certificate.
#include "tls/credential_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../../common/test_pki.h"
#include "../config/test_util.h"

namespace sluice::tls {
namespace {

using ::testing::HasSubstr;
using sluice::testing::CertOptions;
using sluice::testing::TestCert;

class CredentialStoreTest : public ::testing::Test {
 protected:
  std::filesystem::path root() const { return dir_.path(); }
  config::testing::TempDir dir_;
  TestCert ca_{CertOptions{.commonName = "Test CA", .ca = true}};
};

TEST_F(CredentialStoreTest, CredentialNameReadsTlsCrtAndKeyAndTheCaBesideOrInCacert) {
  TestCert leaf({.commonName = "app.example.com"}, &ca_);
  leaf.write(root() / "production-tls");
  leaf.write(root() / "partner");
  TestCert::writeFile(root() / "partner-cacert/ca.crt", ca_.certPem());
  CredentialStore store(dir_.path());

  auto simple = store.get(ServerSpec{.credentialName = "production-tls"});
  ASSERT_TRUE(simple->current()) << simple->error();
  EXPECT_EQ(simple->current()->info().subject, "CN=app.example.com");
  EXPECT_EQ(simple->files().ca, "");

  auto mutual = store.get(ServerSpec{.mode = ServerSpec::Mode::kMutual, .credentialName = "partner"});
  ASSERT_TRUE(mutual->current()) << mutual->error();
  EXPECT_EQ(mutual->files().ca, (root() / "partner-cacert/ca.crt").string());
  // ca.crt in the credential itself wins.
  TestCert::writeFile(root() / "partner/ca.crt", ca_.certPem());
  store.poll();
  EXPECT_EQ(mutual->files().ca, (root() / "partner/ca.crt").string());

  EXPECT_EQ(store.get(ServerSpec{.credentialName = "production-tls"}), simple) << "one slot per spec";
}

TEST_F(CredentialStoreTest, ErrorsNameTheFileAndNeverTheKey) {
  CredentialStore store(dir_.path());
  auto missing = store.get(ServerSpec{.credentialName = "nope"});
  EXPECT_FALSE(missing->current());
  EXPECT_THAT(missing->error(), HasSubstr((root() / "nope/tls.crt").string()));

  auto noCa = store.get(ServerSpec{.mode = ServerSpec::Mode::kMutual, .credentialName = "nope"});
  EXPECT_FALSE(noCa->current());
  {
    // OPTIONAL_MUTUAL with a certificate but no CA: refused, as Istio does
    // (an empty trust store would turn away every client certificate).
    TestCert leaf({.commonName = "opt"}, &ca_);
    leaf.write(root() / "optional");
    auto optional = store.get(ServerSpec{.mode = ServerSpec::Mode::kOptionalMutual, .credentialName = "optional"});
    EXPECT_FALSE(optional->current());
    EXPECT_THAT(optional->error(), HasSubstr("needs a CA"));
  }

  TestCert a({.commonName = "a"}, &ca_), b({.commonName = "b"}, &ca_);
  std::filesystem::create_directories(root() / "mixed");
  TestCert::writeFile(root() / "mixed/tls.crt", a.certPem());
  TestCert::writeFile(root() / "mixed/tls.key", b.keyPem());
  auto mixed = store.get(ServerSpec{.credentialName = "mixed"});
  EXPECT_FALSE(mixed->current());
  EXPECT_THAT(mixed->error(), HasSubstr("does not match certificate"));
  EXPECT_THAT(mixed->error(), ::testing::Not(HasSubstr("PRIVATE KEY")));

  TestCert old({.commonName = "old", .notBeforeSeconds = -7200, .notAfterSeconds = -3600}, &ca_);
  old.write(root() / "expired");
  auto expired = store.get(ServerSpec{.credentialName = "expired"});
  EXPECT_FALSE(expired->current());
  EXPECT_THAT(expired->error(), HasSubstr("expired on"));

  CredentialStore noDir("");
  EXPECT_THAT(noDir.get(ServerSpec{.credentialName = "x"})->error(),
              HasSubstr("credentialName x: sluiced has no --credentials-dir"));

  TestCert::writeFile(root() / "junk.crt", "not a certificate");
  auto junk = store.get(ServerSpec{.certFile = (root() / "junk.crt").string(), .keyFile = (root() / "junk.key").string()});
  EXPECT_THAT(junk->error(), HasSubstr("junk.key"));
}

TEST_F(CredentialStoreTest, RotationAndAMissingSecretThatAppears) {
  TestCert first({.commonName = "first"}, &ca_);
  first.write(root() / "rot");
  CredentialStore store(dir_.path());
  auto slot = store.get(ServerSpec{.credentialName = "rot"});
  auto before = slot->current();
  ASSERT_TRUE(before);
  EXPECT_EQ(store.poll(), 0u) << "nothing changed";

  TestCert second({.commonName = "second"}, &ca_);
  second.write(root() / "rot");
  EXPECT_EQ(store.poll(), 1u);
  ASSERT_TRUE(slot->current());
  EXPECT_EQ(slot->current()->info().subject, "CN=second");
  EXPECT_EQ(before->info().subject, "CN=first") << "a context in use is never changed";

  // Half a rotation (a new key, the old certificate): the last good stays.
  TestCert third({.commonName = "third"}, &ca_);
  TestCert::writeFile(root() / "rot/tls.key", third.keyPem());
  EXPECT_EQ(store.poll(), 0u);
  EXPECT_EQ(slot->current()->info().subject, "CN=second");
  EXPECT_THAT(slot->error(), HasSubstr("does not match"));
  TestCert::writeFile(root() / "rot/tls.crt", third.certPem());
  EXPECT_EQ(store.poll(), 1u);
  EXPECT_EQ(slot->current()->info().subject, "CN=third");
  EXPECT_EQ(slot->error(), "");

  auto later = store.get(ServerSpec{.credentialName = "later"});
  EXPECT_FALSE(later->current());
  first.write(root() / "later");
  store.poll();
  ASSERT_TRUE(later->current());
  EXPECT_EQ(later->current()->info().subject, "CN=first");
}

TEST_F(CredentialStoreTest, SlotsNoServerHoldsAreDropped) {
  TestCert leaf({.commonName = "x"}, &ca_);
  leaf.write(root() / "x");
  CredentialStore store(dir_.path());
  std::weak_ptr<ServerCredentials> weak = store.get(ServerSpec{.credentialName = "x"});
  store.poll();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace sluice::tls
