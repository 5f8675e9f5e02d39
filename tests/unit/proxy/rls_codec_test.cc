// The rate limit service's messages, as sluiced writes and reads them by
// hand: RateLimitRequest bytes checked field by field against
// envoy.service.ratelimit.v3 (domain 1, descriptors 2 with entries 1 of
// key 1 / value 2, hits_addend 3), and RateLimitResponse's overall_code
// found among fields it does not know.
#include <gtest/gtest.h>

#include "proxy/rls_client.h"

namespace sluice::proxy {
namespace {

TEST(RlsCodec, TheRequestIsTheProtoEncoding) {
  const std::string got =
      encodeRateLimitRequest("production", {{{"header_match", "api"}}, {{"k", "v"}, {"a", "b"}}});
  std::string want;
  want += "\x0a\x0a" "production";
  // descriptor 1: one entry {header_match, api}
  want += "\x12\x15" "\x0a\x13" "\x0a\x0c" "header_match" "\x12\x03" "api";
  // descriptor 2: entries {k, v} and {a, b}
  want += "\x12\x10" "\x0a\x06" "\x0a\x01" "k" "\x12\x01" "v" "\x0a\x06" "\x0a\x01" "a" "\x12\x01" "b";
  want += "\x18\x01";  // hits_addend 1
  EXPECT_EQ(got, want);
}

TEST(RlsCodec, TheOverallCodeAmongOtherFields) {
  EXPECT_EQ(decodeRateLimitOverallCode(std::string("\x08\x02", 2)), kRlsOverLimit);
  // statuses (2, a message), response_headers_to_add... then the code.
  EXPECT_EQ(decodeRateLimitOverallCode(std::string("\x12\x02\x08\x01" "\x08\x01", 6)), kRlsOk);
  // A fixed64 and a fixed32 field skipped.
  EXPECT_EQ(decodeRateLimitOverallCode(std::string("\x29" "12345678" "\x35" "1234" "\x08\x02", 16)), kRlsOverLimit);
  EXPECT_EQ(decodeRateLimitOverallCode(""), 0);  // absent: UNKNOWN
  EXPECT_EQ(decodeRateLimitOverallCode(std::string("\x12\x05\x08", 3)), -1);  // cut short
  EXPECT_EQ(decodeRateLimitOverallCode(std::string("\x0b", 1)), -1);          // wire type 3
}

}  // namespace
}  // namespace sluice::proxy
