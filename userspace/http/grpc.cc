#include "http/grpc.h"

#include <array>
#include <cstdio>

#include "http/parser.h"

namespace sluice::http {

bool isGrpcContentType(std::string_view ct) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (ct.size() < kGrpc.size()) return false;
  for (size_t i = 0; i < kGrpc.size(); ++i) {
    char c = ct[i];
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
    if (c != kGrpc[i]) return false;
  }
  if (ct.size() == kGrpc.size()) return true;
  // "+proto", ";charset=...": gRPC; "-web": another protocol.
  return ct[kGrpc.size()] == '+' || ct[kGrpc.size()] == ';';
}

void GrpcMessageCounter::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    if (remaining_ > 0) {
      const uint64_t n = std::min<uint64_t>(remaining_, bytes.size());
      remaining_ -= n;
      bytes.remove_prefix(size_t(n));
      continue;
    }
    prefix_[prefixGot_++] = uint8_t(bytes.front());
    bytes.remove_prefix(1);
    if (prefixGot_ < 5) continue;
    prefixGot_ = 0;
    ++messages_;  // counted at its prefix: an empty message has no bytes after it
    remaining_ = (uint64_t(prefix_[1]) << 24) | (uint64_t(prefix_[2]) << 16) | (uint64_t(prefix_[3]) << 8) |
                 uint64_t(prefix_[4]);
  }
}

std::optional<uint64_t> parseGrpcTimeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) return std::nullopt;
  uint64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + uint64_t(c - '0');
  }
  uint64_t unit = 0;
  switch (v.back()) {
    case 'H': unit = 3600'000'000'000ull; break;
    case 'M': unit = 60'000'000'000ull; break;
    case 'S': unit = 1'000'000'000ull; break;
    case 'm': unit = 1'000'000ull; break;
    case 'u': unit = 1'000ull; break;
    case 'n': unit = 1; break;
    default: return std::nullopt;
  }
  // 99999999H does not fit in 64 bits of nanoseconds: as good as forever.
  constexpr uint64_t kForever = UINT64_MAX / 2;
  return n > kForever / unit ? kForever : n * unit;
}

int grpcStatusForHttp(int s) {
  switch (s) {
    case 400: return 13;  // INTERNAL
    case 401: return 16;  // UNAUTHENTICATED
    case 403: return 7;   // PERMISSION_DENIED
    case 404: return 12;  // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504: return 14;  // UNAVAILABLE
    default: return 2;    // UNKNOWN
  }
}

int grpcStatusValue(std::string_view v) {
  int code = 0;
  if (v.empty() || v.size() > 2) return 2;
  for (char c : v) {
    if (c < '0' || c > '9') return 2;
    code = code * 10 + (c - '0');
  }
  return code <= 16 ? code : 2;
}

std::string grpcMessageEncode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out += char(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

int grpcStatusCode(std::string_view name) {
  // Index is the code, in gRPC's canonical numbering.
  static constexpr std::array<std::string_view, 17> kNames = {
      "OK",                 "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",  "NOT_FOUND",      "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",      "OUT_OF_RANGE",
      "UNIMPLEMENTED",      "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED",
  };
  if (name.empty()) return -1;
  if (name.size() <= 2 && name.find_first_not_of("0123456789") == std::string_view::npos) {
    int code = 0;
    for (char c : name) code = code * 10 + (c - '0');
    return code < static_cast<int>(kNames.size()) ? code : -1;
  }
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (iequals(name, kNames[i])) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace sluice::http
