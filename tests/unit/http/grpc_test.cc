#include "http/grpc.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice::http {
namespace {

std::string message(std::string_view payload) {
  std::string m(5, '\0');
  const uint32_t n = uint32_t(payload.size());
  m[1] = char(n >> 24);
  m[2] = char(n >> 16);
  m[3] = char(n >> 8);
  m[4] = char(n);
  return m + std::string(payload);
}

TEST(Grpc, ContentTypes) {
  EXPECT_TRUE(isGrpcContentType("application/grpc"));
  EXPECT_TRUE(isGrpcContentType("application/grpc+proto"));
  EXPECT_TRUE(isGrpcContentType("Application/GRPC;charset=utf-8"));
  EXPECT_FALSE(isGrpcContentType("application/grpc-web"));
  EXPECT_FALSE(isGrpcContentType("application/json"));
  EXPECT_FALSE(isGrpcContentType(""));
}

TEST(Grpc, MessagesAreCountedInAnySplit) {
  const std::string stream = message("hello") + message("") + message(std::string(70000, 'x')) + message("z");
  for (size_t step : {size_t(1), size_t(2), size_t(5), size_t(7), size_t(4096), stream.size()}) {
    GrpcMessageCounter c;
    for (size_t at = 0; at < stream.size(); at += step) c.feed(std::string_view(stream).substr(at, step));
    EXPECT_EQ(c.messages(), 4u) << "step " << step;
  }
  GrpcMessageCounter partial;
  partial.feed(std::string_view(stream).substr(0, 3));
  EXPECT_EQ(partial.messages(), 0u) << "a prefix not whole is not a message yet";
}

TEST(Grpc, Timeouts) {
  EXPECT_EQ(parseGrpcTimeout("100m"), 100'000'000u);
  EXPECT_EQ(parseGrpcTimeout("5S"), 5'000'000'000u);
  EXPECT_EQ(parseGrpcTimeout("1H"), 3600'000'000'000u);
  EXPECT_EQ(parseGrpcTimeout("2M"), 120'000'000'000u);
  EXPECT_EQ(parseGrpcTimeout("7u"), 7'000u);
  EXPECT_EQ(parseGrpcTimeout("99999999n"), 99999999u);
  EXPECT_EQ(parseGrpcTimeout("123456789n"), std::nullopt) << "more than 8 digits";
  EXPECT_EQ(parseGrpcTimeout("S"), std::nullopt);
  EXPECT_EQ(parseGrpcTimeout("10x"), std::nullopt);
  EXPECT_EQ(parseGrpcTimeout("-1S"), std::nullopt);
}

TEST(Grpc, StatusForHttpAndMessageEncoding) {
  EXPECT_EQ(grpcStatusForHttp(503), 14);
  EXPECT_EQ(grpcStatusForHttp(504), 14);
  EXPECT_EQ(grpcStatusForHttp(404), 12);
  EXPECT_EQ(grpcStatusForHttp(400), 13);
  EXPECT_EQ(grpcStatusForHttp(401), 16);
  EXPECT_EQ(grpcStatusForHttp(403), 7);
  EXPECT_EQ(grpcStatusForHttp(500), 2);
  EXPECT_EQ(grpcMessageEncode("no healthy upstream"), "no healthy upstream");
  EXPECT_EQ(grpcMessageEncode("100% \xc3\xa9\n"), "100%25 %C3%A9%0A");
}

}  // namespace
}  // namespace sluice::http
