// Istio's header value templates: Envoy's %VAR% substitutions
// (%START_TIME(...)%, %DOWNSTREAM_PEER_CERT_V_START%, %REQ(x)%, ...; "%%" is
// a literal '%') parsed once and rendered per request, and the rule for
// which header names a route's operations may touch. Shared vocabulary:
// config/ validates with it, route/ compiles with it, so neither includes
// the other for it. Depends on http/ only.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "http/header_map.h"

namespace sluice::istio {

// What %VAR% substitutions read; filled by the session for each request.
struct HeaderContext {
  uint64_t startTimeRealNs = 0;  // request start, CLOCK_REALTIME nanoseconds
  const sockaddr_in* downstreamRemote = nullptr;
  const sockaddr_in* downstreamLocal = nullptr;
  const sockaddr_in* upstreamRemote = nullptr;  // known on the response side
  std::string_view protocol = "HTTP/1.1";
  std::string_view requestId;
  const http::HeaderMap* requestHeaders = nullptr;   // %REQ(x)%
  const http::HeaderMap* responseHeaders = nullptr;  // %RESP(x)%
  // Downstream TLS facts; all empty on a plaintext connection.
  std::string_view peerCertVStart, peerCertVEnd, peerUriSan, peerSubject, tlsVersion;
};

// One header value with its substitutions parsed.
class HeaderTemplate {
 public:
  // Error text names the offending variable ("unknown variable %FOO%").
  static std::expected<HeaderTemplate, std::string> parse(std::string_view text);
  bool dynamic() const { return !pieces_.empty() && !(pieces_.size() == 1 && pieces_[0].kind == Piece::Literal); }
  // The value of a template that is not dynamic (empty for an empty one).
  std::string_view literal() const { return pieces_.empty() ? std::string_view() : std::string_view(pieces_[0].arg); }
  // Appends the rendered value to `out`.
  void render(const HeaderContext& ctx, std::string& out) const;

 private:
  struct Piece {
    enum Kind : uint8_t {
      Literal, StartTime, DownstreamRemote, DownstreamRemoteNoPort, DownstreamLocal,
      DownstreamLocalNoPort, DownstreamLocalPort, UpstreamRemote, Protocol, RequestId,
      Req, Resp, PeerCertVStart, PeerCertVEnd, PeerUriSan, PeerSubject, TlsVersion, Hostname
    };
    Kind kind = Literal;
    std::string arg;  // literal text, strftime format, or header name (lower case)
  };
  std::vector<Piece> pieces_;
};

// Why header operation `op` ("set", "add" or "remove") may not name `name`,
// or empty when it may. Framing and connection headers (content-length,
// transfer-encoding, connection, keep-alive, upgrade, te, proxy-connection)
// belong to the proxy; Host may only be `set`. The loader calls this too, so
// a bad name is reported with its file and line.
std::string headerOpNameError(std::string_view op, std::string_view name);

}  // namespace sluice::istio
