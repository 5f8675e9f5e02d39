// VirtualService `headers` (request/response set, add, remove) and
// `rewrite`, compiled once per route so the request path only copies bytes.
//
// Header values may carry Envoy's %VAR% substitutions (%START_TIME(...)%,
// %DOWNSTREAM_PEER_CERT_V_START%, %REQ(x)%, ...; "%%" is a literal '%').
// An unknown variable is a configuration error. As in Envoy, a value that
// renders empty is not added (and a `set` whose value renders empty leaves
// the original header alone).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"
#include "http/parser.h"

namespace re2 {
class RE2;
}

namespace sluice::route {

class CompiledMatch;

// What %VAR% substitutions read; filled by the session for each request.
struct HeaderContext {
  uint64_t startTimeRealNs = 0;  // request start, CLOCK_REALTIME nanoseconds
  const sockaddr_in* downstreamRemote = nullptr;
  const sockaddr_in* downstreamLocal = nullptr;
  const sockaddr_in* upstreamRemote = nullptr;  // known on the response side
  std::string_view protocol = "HTTP/1.1";
  std::string_view requestId;
  const std::vector<http::Header>* requestHeaders = nullptr;   // %REQ(x)%
  const std::vector<http::Header>* responseHeaders = nullptr;  // %RESP(x)%
  // Downstream TLS facts; all empty on a plaintext connection.
  std::string_view peerCertVStart, peerCertVEnd, peerUriSan, peerSubject, tlsVersion;
};

// One header value with its substitutions parsed.
class HeaderTemplate {
 public:
  // Error text names the offending variable ("unknown variable %FOO%").
  static std::expected<HeaderTemplate, std::string> parse(std::string_view text);
  bool dynamic() const { return !pieces_.empty() && !(pieces_.size() == 1 && pieces_[0].kind == Piece::Literal); }
  // Appends the rendered value to `out`.
  void render(const HeaderContext& ctx, std::string& out) const;
  // Adds the request header names %REQ(...)% reads (fallbacks included).
  void requestHeaderNames(std::vector<std::string>& out) const;

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

// The effective header mutation of one direction for one (route,
// destination) pair. Levels apply in order (destination first, then route,
// so the route's operations win, as Envoy orders them); within a level,
// `remove` applies before `set` and `add`.
class HeaderMutation {
 public:
  // Null levels are skipped. Errors name the field ("set[x-a]: unknown
  // variable %FOO%").
  static std::expected<HeaderMutation, std::string> compile(
      std::span<const config::HeaderOperations* const> levels);
  bool empty() const { return drop_.empty() && entries_.empty(); }

  // Per request: dynamic values rendered once, then serialised.
  class Rendered {
   public:
    // Whether an original header named `name` (any case) is dropped.
    bool drops(std::string_view name) const;
    // Appends the generated "name: value\r\n" lines.
    void append(std::string& out) const;

   private:
    friend class HeaderMutation;
    const HeaderMutation* m_ = nullptr;
    std::vector<std::string> values_;  // one per entry; empty = not added
  };
  Rendered render(const HeaderContext& ctx) const;
  // Request headers the values read (%REQ(...)%), lower case: the response
  // side keeps their values, as the request head is gone by then.
  const std::vector<std::string>& requestHeaderNames() const { return requestHeaderNames_; }

 private:
  struct Entry {
    std::string name;  // lower case
    HeaderTemplate value;
    bool set = false;  // set: replaces originals (when it renders non-empty)
  };
  std::vector<std::string> drop_;  // removed or statically set names, lower case
  std::vector<Entry> entries_;     // in output order
  std::vector<std::string> requestHeaderNames_;
};

// `rewrite`: the path (prefix or whole-path replacement, or RE2 regex
// rewrite with \1 captures) and the authority.
class PathRewrite {
 public:
  static std::expected<PathRewrite, std::string> compile(const config::HTTPRewrite& spec);
  // The new path + query for `path` (origin form, with query) given the match
  // block that selected the route (null: the route matches everything), or
  // nullopt when the path stays as it is.
  std::optional<std::string> rewritePath(std::string_view path, const CompiledMatch* matched) const;
  const std::string& authority() const { return authority_; }
  bool rewritesPath() const { return !uri_.empty() || regex_ != nullptr; }

 private:
  std::string uri_;
  std::shared_ptr<const re2::RE2> regex_;
  std::string substitution_;
  std::string authority_;
};

}  // namespace sluice::route
