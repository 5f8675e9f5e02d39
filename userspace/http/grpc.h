// gRPC over HTTP/2, what a proxy needs of it without a protobuf in sight:
// telling a gRPC request, counting length-prefixed messages as the bytes
// pass, the grpc-timeout header, the status an HTTP error stands for, and
// grpc-message's percent-encoding.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::http {

// content-type application/grpc, application/grpc+proto, ... (not grpc-web).
bool isGrpcContentType(std::string_view contentType);

// Counts the messages of one direction of a call as its bytes go by, in any
// split: each is a 5-byte prefix (compressed flag, 32-bit big-endian
// length) and that many bytes.
class GrpcMessageCounter {
 public:
  void feed(std::string_view bytes);
  uint64_t messages() const { return messages_; }

 private:
  uint64_t messages_ = 0;
  uint64_t remaining_ = 0;  // bytes of the current message still to come
  uint8_t prefixGot_ = 0;   // bytes of the current prefix seen
  uint8_t prefix_[5] = {};
};

// grpc-timeout ("100m", "5S", "1H": at most 8 digits and a unit H M S m u
// n) in nanoseconds; nullopt when malformed.
std::optional<uint64_t> parseGrpcTimeout(std::string_view value);

// The gRPC status a proxy's HTTP answer stands for (gRPC's HTTP-to-status
// mapping: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404
// UNIMPLEMENTED, 429 502 503 504 UNAVAILABLE, else UNKNOWN).
int grpcStatusForHttp(int httpStatus);

// A grpc-status value as a code 0..16; anything else is UNKNOWN (2), as a
// client would read it (and the metrics keep a bounded label).
int grpcStatusValue(std::string_view value);

// A gRPC status name ("UNAVAILABLE", any case) or number ("14") as its
// code, or -1: what VirtualService fault.abort.grpcStatus may say.
int grpcStatusCode(std::string_view nameOrNumber);

// grpc-message: bytes outside printable ASCII, and '%', percent-encoded.
std::string grpcMessageEncode(std::string_view text);

}  // namespace sluice::http
