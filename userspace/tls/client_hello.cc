#include "tls/client_hello.h"

#include <cstdint>

namespace sluice::tls {
namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kClientHelloType = 1;
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr size_t kRecordHeader = 5;
constexpr size_t kMaxRecordPayload = (1u << 14) + 2048;  // TLSCiphertext limit

// A bounds-checked reader over the hello's body.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u8(uint8_t& v) {
    if (s_.size() < 1) return false;
    v = uint8_t(s_[0]);
    s_.remove_prefix(1);
    return true;
  }
  bool u16(uint16_t& v) {
    if (s_.size() < 2) return false;
    v = uint16_t((uint8_t(s_[0]) << 8) | uint8_t(s_[1]));
    s_.remove_prefix(2);
    return true;
  }
  bool bytes(size_t n, std::string_view& out) {
    if (s_.size() < n) return false;
    out = s_.substr(0, n);
    s_.remove_prefix(n);
    return true;
  }
  bool skip(size_t n) {
    std::string_view ignored;
    return bytes(n, ignored);
  }
  // A vector with an 8- or 16-bit length prefix.
  bool vec8(std::string_view& out) {
    uint8_t n;
    return u8(n) && bytes(n, out);
  }
  bool vec16(std::string_view& out) {
    uint16_t n;
    return u16(n) && bytes(n, out);
  }
  bool empty() const { return s_.empty(); }

 private:
  std::string_view s_;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  }
  return out;
}

bool parseServerName(std::string_view ext, std::string& out) {
  Reader r(ext);
  std::string_view list;
  if (!r.vec16(list) || !r.empty()) return false;
  Reader names(list);
  while (!names.empty()) {
    uint8_t type;
    std::string_view name;
    if (!names.u8(type) || !names.vec16(name)) return false;
    if (type != 0 || !out.empty()) continue;  // host_name, first one
    if (name.empty()) return false;
    for (char c : name) {
      // RFC 6066: a DNS name in ASCII, no trailing dot, no NUL.
      if (uint8_t(c) <= 0x20 || uint8_t(c) >= 0x7f) return false;
    }
    out = lower(name);
  }
  return true;
}

bool parseAlpn(std::string_view ext, std::vector<std::string>& out) {
  Reader r(ext);
  std::string_view list;
  if (!r.vec16(list) || !r.empty() || list.empty()) return false;
  Reader protos(list);
  while (!protos.empty()) {
    std::string_view p;
    if (!protos.vec8(p) || p.empty()) return false;
    out.emplace_back(p);
  }
  return true;
}

bool parseBody(std::string_view body, ClientHello& out) {
  Reader r(body);
  uint16_t legacyVersion;
  std::string_view sessionId, suites, compression;
  if (!r.u16(legacyVersion) || (legacyVersion >> 8) != 3 || !r.skip(32) || !r.vec8(sessionId) ||
      sessionId.size() > 32 || !r.vec16(suites) || suites.empty() || suites.size() % 2 != 0 ||
      !r.vec8(compression) || compression.empty()) {
    return false;
  }
  if (r.empty()) return true;  // no extensions (SSL 3.0-style hello)
  std::string_view extensions;
  if (!r.vec16(extensions) || !r.empty()) return false;
  Reader ext(extensions);
  bool sawSni = false, sawAlpn = false;
  while (!ext.empty()) {
    uint16_t type;
    std::string_view data;
    if (!ext.u16(type) || !ext.vec16(data)) return false;
    if (type == kExtServerName) {
      if (sawSni || !parseServerName(data, out.serverName)) return false;
      sawSni = true;
    } else if (type == kExtAlpn) {
      if (sawAlpn || !parseAlpn(data, out.alpn)) return false;
      sawAlpn = true;
    }
  }
  return true;
}

}  // namespace

ClientHello parseClientHello(std::string_view data) {
  ClientHello out;
  // Gather handshake bytes from consecutive records until the hello's
  // declared length is in.
  std::string handshake;
  size_t off = 0;
  size_t want = 0;  // the hello's total length with its 4-byte header, once known
  while (true) {
    if (data.size() - off < kRecordHeader) {
      // Judge what is there: a first byte that cannot start a handshake
      // record is not TLS, however short.
      if (off < data.size() && uint8_t(data[off]) != kHandshakeRecord) {
        out.status = off == 0 ? ClientHello::Status::kNotTls : ClientHello::Status::kInvalid;
      } else if (data.size() - off >= 2 && uint8_t(data[off + 1]) != 3) {
        out.status = off == 0 ? ClientHello::Status::kNotTls : ClientHello::Status::kInvalid;
      }
      return out;
    }
    const auto* h = reinterpret_cast<const uint8_t*>(data.data() + off);
    if (h[0] != kHandshakeRecord || h[1] != 3) {
      out.status = off == 0 ? ClientHello::Status::kNotTls : ClientHello::Status::kInvalid;
      return out;
    }
    const size_t len = (size_t(h[3]) << 8) | h[4];
    if (len == 0 || len > kMaxRecordPayload) {
      out.status = ClientHello::Status::kInvalid;
      return out;
    }
    if (data.size() - off - kRecordHeader < len) {
      if (off + kRecordHeader + len > kMaxClientHello + 8 * kRecordHeader) out.status = ClientHello::Status::kInvalid;
      return out;  // kNeedMore
    }
    handshake.append(data.substr(off + kRecordHeader, len));
    off += kRecordHeader + len;
    if (want == 0 && handshake.size() >= 4) {
      const auto* m = reinterpret_cast<const uint8_t*>(handshake.data());
      if (m[0] != kClientHelloType) {
        out.status = ClientHello::Status::kInvalid;
        return out;
      }
      want = 4 + ((size_t(m[1]) << 16) | (size_t(m[2]) << 8) | m[3]);
      if (want > kMaxClientHello) {
        out.status = ClientHello::Status::kInvalid;
        return out;
      }
    }
    if (want != 0 && handshake.size() >= want) break;
  }
  // A record may carry the next handshake message after the hello only in
  // theory (the client waits for the server); extra bytes are not ours.
  if (!parseBody(std::string_view(handshake).substr(4, want - 4), out)) {
    out.serverName.clear();
    out.alpn.clear();
    out.status = ClientHello::Status::kInvalid;
    return out;
  }
  out.status = ClientHello::Status::kOk;
  out.bytes = off;
  return out;
}

}  // namespace sluice::tls
