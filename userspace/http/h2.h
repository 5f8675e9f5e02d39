// HTTP/2 from clients, the parts that are about the protocol and not the
// connection (nghttp2 does framing, HPACK and flow control): the server
// session sluiced runs, with its settings and defences, and a stream's
// request head as HPACK yields it, turned into the RequestHead the rest of
// sluice reads (the HTTP/1.1 parser's form). proxy/h2_session.cc drives
// them on a connection; tests/fuzz/h2_server_fuzz.cc drives them on bytes.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace sluice::http {

// What sluiced announces and enforces on a client's HTTP/2 connection.
inline constexpr uint32_t kH2MaxConcurrentStreams = 100;
inline constexpr uint32_t kH2StreamWindow = 256 * 1024;
inline constexpr uint32_t kH2ConnectionWindow = 1024 * 1024;
// SETTINGS_MAX_HEADER_LIST_SIZE, as Envoy's 60 KiB default (enforced per
// stream by H2RequestHead, against Limits::maxHeadBytes).
inline constexpr uint32_t kH2MaxHeaderList = 60 * 1024;

// One header field for nghttp2's submit functions (which copy it).
inline nghttp2_nv h2Field(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

// A server session with sluiced's options (windows opened by the caller
// as it consumes data, caps on queued SETTINGS/PING replies, SETTINGS
// entries, CONTINUATION frames and the reset rate) and its SETTINGS
// submitted. Null only when nghttp2 cannot allocate.
nghttp2_session* newH2ServerSession(const nghttp2_session_callbacks* callbacks, void* user);

// The other way, for HTTP/2 upstreams: a complete HTTP/1.1 request head
// (as the router builds it, final CRLF included) as HTTP/2 fields. Names
// are lower-cased, the pseudo-header fields come first (:scheme `scheme`),
// and what HTTP/2 does not carry is left out (RFC 9113, 8.2.2: Host, which
// becomes :authority, and the connection-specific fields), except TE:
// trailers when `teTrailers` (gRPC servers insist on it). The fields point
// into this object; reuse it for the next head.
class H2RequestFields {
 public:
  // False: `head` is not a complete request head.
  bool build(std::string_view head, std::string_view scheme, bool teTrailers);
  const std::vector<nghttp2_nv>& fields() const { return nva_; }

 private:
  RequestHead parsed_;
  std::string names_;
  std::vector<nghttp2_nv> nva_;
};

class H2RequestHead {
 public:
  static constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  explicit H2RequestHead(const Limits& limits) : limits_(limits) {
    bytes_.reserve(512);  // a typical request's fields: no reallocation while they arrive
    fields_.reserve(16);
  }
  // One field as HPACK decoded it (nghttp2 has checked names and values,
  // pseudo-header order and connection-specific fields). False once the
  // list is over the limits: the rest is dropped, overflow() says so.
  bool add(std::string_view name, std::string_view value);
  bool overflow() const { return overflow_; }
  // The head: method, target (:path), Host from :authority (else the host
  // field) placed first among the fields, several cookie fields joined
  // into one (RFC 9113, 8.2.3), and the framing an HTTP/1.1 hop would use
  // (none when `endStream`, the client's content-length, else chunked).
  // Its views point into bytes(). False: a required pseudo-header is
  // missing or content-length is not a number.
  bool build(bool endStream, RequestHead& out);
  const std::string& bytes() const { return bytes_; }
  // Frees the fields (the head has been copied).
  void release();

 private:
  struct FieldPos {
    uint32_t name, nameLen, value, valueLen;
  };
  const Limits& limits_;
  std::string bytes_;  // names and values back to back
  std::vector<FieldPos> fields_;
  bool overflow_ = false;
};

}  // namespace sluice::http
