// Reads the server name and ALPN protocols out of a TLS ClientHello without
// terminating anything: what a listener needs to pick the server (the
// certificate, or the passthrough route) before a handshake begins.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sluice::tls {

struct ClientHello {
  enum class Status {
    kNeedMore,  // a valid prefix: wait for more bytes
    kNotTls,    // not a TLS handshake record (plaintext, random bytes)
    kInvalid,   // a handshake record, but a malformed or oversized ClientHello
    kOk,
  };
  Status status = Status::kNeedMore;
  std::string serverName;          // SNI host_name, lower case; empty when absent
  std::vector<std::string> alpn;   // offered protocols, in the client's order
  size_t bytes = 0;                // kOk: the records the hello spans
};

// The largest ClientHello accepted (a post-quantum key share and many
// extensions fit well within it).
inline constexpr size_t kMaxClientHello = 64 * 1024;

// `data` is what the peer sent first. The hello may span several
// handshake records (RFC 8446 5.1); anything after it is ignored.
ClientHello parseClientHello(std::string_view data);

}  // namespace sluice::tls
