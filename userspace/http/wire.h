// What may be written into an HTTP/1.1 head. Every string that comes from
// configuration and reaches a request line, a status line or a header is
// checked here once, when the configuration loads; values built at run time
// from such strings (a regex rewrite, a redirect target) are checked here
// again before they are written. A CR, LF or NUL that got through would let
// a config (or a request feeding a substitution) start header lines of its
// own.
#pragma once

#include <string_view>

namespace sluice::http {

enum class WireField {
  Path,         // request-target path and query: no space, no control byte
  Authority,    // host[:port]: as Path, and none of "/?#@"
  Scheme,       // RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
  HeaderName,   // RFC 9110 token
  HeaderValue,  // no control byte but HTAB (obs-text allowed)
  CookieAttribute,  // a Set-Cookie attribute value: a header value without ';'
};

// Empty when `s` may be written as `field`; otherwise why not, for an error
// message ("contains a CR, LF or other control character").
std::string_view wireError(WireField field, std::string_view s);

}  // namespace sluice::http
