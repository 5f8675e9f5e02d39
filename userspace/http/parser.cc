// Request/response head parsing. One forward pass over the bytes: lines are
// validated as they are split, and the few headers that decide framing and
// connection reuse are noted as they are pushed, so nothing is re-read.
#include "http/parser.h"

#include <algorithm>

#include "http/chars.h"

namespace sluice::http {

using detail::isOws;
using detail::isTchar;
using detail::lower;

namespace {

// Longer targets are answered 414 before the head limit (431) is reached.
constexpr size_t kMaxTargetBytes = 8 * 1024;

// What the framing/connection headers said, gathered while parsing.
struct Facts {
  bool contentLengthSeen = false;
  bool contentLengthBad = false;  // not digits, overflow, or values disagree
  uint64_t contentLength = 0;

  uint32_t transferEncodingHeaders = 0;
  uint32_t codings = 0;
  bool chunkedSeen = false;
  bool codingAfterChunked = false;  // "chunked, gzip" or chunked twice
  bool otherCoding = false;
  bool lastIsChunked = false;

  bool connClose = false;
  bool connKeepAlive = false;
  bool connUpgrade = false;
  bool upgradeHeader = false;
  // Connection named a header that frames or routes the message: a hop that
  // honours it would drop the header and read the body differently.
  bool connNamesFraming = false;

  uint32_t hostHeaders = 0;
  std::string_view host;
  bool expect100 = false;
};

std::string_view trimOws(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && isOws(s[b])) ++b;
  while (e > b && isOws(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Calls fn(element) for each comma-separated, OWS-trimmed list element.
// Empty elements are passed too, so callers decide whether they matter.
template <class Fn>
void forEachElement(std::string_view list, Fn&& fn) {
  for (;;) {
    size_t comma = list.find(',');
    fn(trimOws(list.substr(0, comma)));
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// Several values (repeated headers or a list) are tolerated only when they all
// agree (RFC 9112 6.3); anything else could be read two ways.
void noteContentLength(std::string_view value, Facts& f) {
  forEachElement(value, [&](std::string_view e) {
    uint64_t v = 0;
    bool ok = !e.empty();
    for (char c : e) {
      uint64_t d = static_cast<uint64_t>(c - '0');
      if (c < '0' || c > '9' || v > (UINT64_MAX - d) / 10) {
        ok = false;
        break;
      }
      v = v * 10 + d;
    }
    if (!ok || (f.contentLengthSeen && v != f.contentLength)) {
      f.contentLengthBad = true;
    }
    f.contentLength = v;
    f.contentLengthSeen = true;
  });
}

void noteTransferEncoding(std::string_view value, Facts& f) {
  ++f.transferEncodingHeaders;
  forEachElement(value, [&](std::string_view e) {
    if (e.empty()) return;  // RFC 9110 5.6.1: empty list elements are ignored
    ++f.codings;
    if (f.chunkedSeen) f.codingAfterChunked = true;
    if (iequals(e, "chunked")) {
      f.chunkedSeen = true;
      f.lastIsChunked = true;
    } else {
      f.otherCoding = true;
      f.lastIsChunked = false;
    }
  });
}

void noteConnection(std::string_view value, Facts& f) {
  forEachElement(value, [&](std::string_view e) {
    if (iequals(e, "close")) {
      f.connClose = true;
    } else if (iequals(e, "keep-alive")) {
      f.connKeepAlive = true;
    } else if (iequals(e, "upgrade")) {
      f.connUpgrade = true;
    } else if (iequals(e, "content-length") || iequals(e, "transfer-encoding") || iequals(e, "host")) {
      f.connNamesFraming = true;
    }
  });
}

// Dispatch on length first: most headers are rejected by one compare.
void noteHeader(std::string_view name, std::string_view value, Facts& f) {
  switch (name.size()) {
    case 4:
      if (iequals(name, "host")) {
        ++f.hostHeaders;
        f.host = value;
      }
      break;
    case 6:
      if (iequals(name, "expect")) f.expect100 = iequals(value, "100-continue");
      break;
    case 7:
      if (iequals(name, "upgrade")) f.upgradeHeader = true;
      break;
    case 10:
      if (iequals(name, "connection")) noteConnection(value, f);
      break;
    case 14:
      if (iequals(name, "content-length")) {
        noteContentLength(value, f);
      }
      break;
    case 17:
      if (iequals(name, "transfer-encoding")) noteTransferEncoding(value, f);
      break;
    default:
      break;
  }
}

enum class Result { Ok, Incomplete, Bad, TooLarge };

// Parses header lines from p up to and including the empty line. On Ok,
// *headEnd points just past it.
Result parseFields(const char* p, const char* end, const Limits& limits,
                   std::vector<Header>& headers, Facts& f, const char** headEnd,
                   std::string_view& reason) {
  for (;;) {
    if (p >= end) return Result::Incomplete;
    char c = *p;
    if (c == '\r') {
      if (p + 1 >= end) return Result::Incomplete;
      if (p[1] != '\n') {
        reason = "bare CR in head";
        return Result::Bad;
      }
      *headEnd = p + 2;
      return Result::Ok;
    }
    if (!isTchar(c)) {
      reason = isOws(c)    ? "obs-fold or whitespace before header name"
               : c == '\n' ? "bare LF in head"
                           : "invalid header name";
      return Result::Bad;
    }
    const char* nameStart = p++;
    p = detail::scanTchars(p, end);
    if (p >= end) return Result::Incomplete;
    if (*p != ':') {
      reason = isOws(*p) ? "whitespace before colon" : "invalid character in header name";
      return Result::Bad;
    }
    std::string_view name(nameStart, static_cast<size_t>(p - nameStart));
    ++p;
    while (p < end && isOws(*p)) ++p;
    const char* valueStart = p;
    p = detail::scanFieldValue(p, end);
    if (p >= end) return Result::Incomplete;
    if (*p != '\r') {
      reason = *p == '\n' ? "bare LF in head" : "invalid character in header value";
      return Result::Bad;
    }
    if (p + 1 >= end) return Result::Incomplete;
    if (p[1] != '\n') {
      reason = "bare CR in head";
      return Result::Bad;
    }
    const char* valueEnd = p;
    while (valueEnd > valueStart && isOws(valueEnd[-1])) --valueEnd;
    if (headers.size() >= limits.maxHeaders) {
      reason = "too many headers";
      return Result::TooLarge;
    }
    std::string_view value(valueStart, static_cast<size_t>(valueEnd - valueStart));
    headers.push_back(Header{name, value});
    noteHeader(name, value, f);
    p += 2;
  }
}

enum class Version { Ok, Incomplete, Bad, Unsupported };

// Checks "HTTP/d.d" against however many bytes are there, so garbage is
// rejected without waiting for more input.
Version parseVersion(const char* p, const char* end, int& minor) {
  static constexpr std::string_view kPrefix = "HTTP/";
  size_t avail = static_cast<size_t>(end - p);
  size_t n = std::min(avail, kPrefix.size());
  if (std::string_view(p, n) != kPrefix.substr(0, n)) return Version::Bad;
  if (avail > 5 && (p[5] < '0' || p[5] > '9')) return Version::Bad;
  if (avail > 6 && p[6] != '.') return Version::Bad;
  if (avail > 7 && (p[7] < '0' || p[7] > '9')) return Version::Bad;
  if (avail < 8) return Version::Incomplete;
  if (p[5] != '1' || (p[7] != '0' && p[7] != '1')) return Version::Unsupported;
  minor = p[7] - '0';
  return Version::Ok;
}

// Expects CRLF at p. Returns Ok (p advanced), Incomplete or Bad.
Result expectCrlf(const char*& p, const char* end, std::string_view& reason) {
  if (p >= end) return Result::Incomplete;
  if (*p != '\r') {
    reason = *p == '\n' ? "bare LF in head" : "malformed start line";
    return Result::Bad;
  }
  if (p + 1 >= end) return Result::Incomplete;
  if (p[1] != '\n') {
    reason = "bare CR in head";
    return Result::Bad;
  }
  p += 2;
  return Result::Ok;
}

// absolute-form starts with a URI scheme followed by "://".
bool isAbsoluteForm(std::string_view t) {
  if (t.empty() || lower(t[0]) < 'a' || lower(t[0]) > 'z') return false;
  size_t i = 1;
  while (i < t.size()) {
    unsigned char c = lower(t[i]);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.') {
      ++i;
      continue;
    }
    break;
  }
  return t.substr(i, 3) == "://";
}

bool keepAliveFor(int versionMinor, const Facts& f) {
  if (f.connClose) return false;
  return versionMinor >= 1 || f.connKeepAlive;
}

}  // namespace

ParseStatus parseRequestHead(const char* data, size_t len, const Limits& limits, RequestHead& out,
                             ParseError& err) {
  out.headers.clear();
  out.method = {};
  out.target = {};
  out.versionMinor = 1;
  out.headBytes = 0;
  out.framing = Framing{};
  out.keepAlive = true;
  out.expectContinue = false;
  out.host = {};
  out.upgrade = false;

  auto fail = [&](int status, std::string_view reason) {
    err.status = status;
    err.reason = reason;
    return ParseStatus::Error;
  };
  // Scanning stops at the head limit; if the head has not ended by then it
  // never will within limits, so the caller must not keep waiting.
  const char* end = data + std::min(len, limits.maxHeadBytes);
  auto incomplete = [&] {
    if (len > limits.maxHeadBytes) return fail(431, "request head too large");
    return ParseStatus::Incomplete;
  };
  std::string_view reason;
  auto fromResult = [&](Result r) {
    if (r == Result::Incomplete) return incomplete();
    if (r == Result::TooLarge) return fail(431, reason);
    return fail(400, reason);
  };

  const char* p = data;
  // RFC 9112 2.2: one empty line before the request line is tolerated.
  if (p < end && (*p == '\r' || *p == '\n')) {
    if (Result r = expectCrlf(p, end, reason); r != Result::Ok) return fromResult(r);
  }

  const char* methodStart = p;
  p = detail::scanTchars(p, end);
  if (p >= end) return incomplete();
  if (p == methodStart || *p != ' ') return fail(400, "malformed method");
  out.method = std::string_view(methodStart, static_cast<size_t>(p - methodStart));
  ++p;

  const char* targetStart = p;
  p = detail::scanTarget(p, end);
  if (static_cast<size_t>(p - targetStart) > kMaxTargetBytes) return fail(414, "request target too long");
  if (p >= end) return incomplete();
  if (p == targetStart || *p != ' ') return fail(400, "malformed request target");
  out.target = std::string_view(targetStart, static_cast<size_t>(p - targetStart));
  ++p;

  switch (parseVersion(p, end, out.versionMinor)) {
    case Version::Ok:
      break;
    case Version::Incomplete:
      return incomplete();
    case Version::Bad:
      return fail(400, "malformed HTTP version");
    case Version::Unsupported:
      return fail(505, "HTTP version not supported");
  }
  p += 8;
  if (Result r = expectCrlf(p, end, reason); r != Result::Ok) return fromResult(r);

  Facts f;
  const char* headEnd = nullptr;
  if (Result r = parseFields(p, end, limits, out.headers, f, &headEnd, reason); r != Result::Ok) {
    return fromResult(r);
  }
  out.headBytes = static_cast<size_t>(headEnd - data);

  if (f.hostHeaders > 1) return fail(400, "multiple Host headers");
  if (f.connNamesFraming) return fail(400, "Connection names Host, Content-Length or Transfer-Encoding");
  if (out.versionMinor == 1 && f.hostHeaders == 0 && !isAbsoluteForm(out.target)) {
    return fail(400, "missing Host header");
  }
  out.host = f.host;

  // Smuggling defence: a message whose length two hops could read differently
  // is refused outright rather than repaired (RFC 9112 6.1, 6.3).
  if (f.transferEncodingHeaders > 0) {
    if (out.versionMinor == 0) return fail(400, "Transfer-Encoding in HTTP/1.0 request");
    if (f.contentLengthSeen) {
      return fail(400, "both Transfer-Encoding and Content-Length");
    }
    if (f.codings == 0) return fail(400, "empty Transfer-Encoding");
    if (f.codingAfterChunked) return fail(400, "chunked is not the final transfer coding");
    if (f.otherCoding) return fail(501, "unsupported transfer coding");
    out.framing.kind = Framing::Kind::Chunked;
  } else if (f.contentLengthBad) {
    return fail(400, "invalid Content-Length");
  } else if (f.contentLengthSeen) {
    out.framing.kind = Framing::Kind::ContentLength;
    out.framing.length = f.contentLength;
  }

  out.keepAlive = keepAliveFor(out.versionMinor, f);
  out.expectContinue = out.versionMinor == 1 && f.expect100;
  out.upgrade = f.connUpgrade && f.upgradeHeader;
  return ParseStatus::Complete;
}

ParseStatus parseResponseHead(const char* data, size_t len, const Limits& limits,
                              bool requestMethodHead, ResponseHead& out, ParseError& err) {
  out.headers.clear();
  out.status = 0;
  out.reason = {};
  out.versionMinor = 1;
  out.headBytes = 0;
  out.framing = Framing{};
  out.declared = Framing{};
  out.keepAlive = true;

  // Whatever is wrong with an upstream's response, the client sees 502.
  auto fail = [&](std::string_view reason) {
    err.status = 502;
    err.reason = reason;
    return ParseStatus::Error;
  };
  const char* end = data + std::min(len, limits.maxHeadBytes);
  auto incomplete = [&] {
    if (len > limits.maxHeadBytes) return fail("response head too large");
    return ParseStatus::Incomplete;
  };
  std::string_view reason;
  auto fromResult = [&](Result r) {
    if (r == Result::Incomplete) return incomplete();
    return fail(reason);
  };

  const char* p = data;
  switch (parseVersion(p, end, out.versionMinor)) {
    case Version::Ok:
      break;
    case Version::Incomplete:
      return incomplete();
    case Version::Bad:
      return fail("malformed HTTP version in response");
    case Version::Unsupported:
      return fail("unsupported HTTP version in response");
  }
  p += 8;
  for (int i = 0; i < 4; ++i) {
    if (p + i >= end) return incomplete();
    char c = p[i];
    bool ok = i == 0 ? c == ' ' : (c >= '0' && c <= '9');
    if (!ok) return fail("malformed status code");
  }
  out.status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
  if (out.status < 100 || out.status > 599) return fail("status code out of range");
  p += 4;
  // The reason phrase is optional, and so (leniently) is the SP before it.
  if (p >= end) return incomplete();
  if (*p == ' ') {
    const char* reasonStart = ++p;
    p = detail::scanFieldValue(p, end);
    out.reason = std::string_view(reasonStart, static_cast<size_t>(p - reasonStart));
  }
  if (Result r = expectCrlf(p, end, reason); r != Result::Ok) return fromResult(r);

  Facts f;
  const char* headEnd = nullptr;
  if (Result r = parseFields(p, end, limits, out.headers, f, &headEnd, reason); r != Result::Ok) {
    return fromResult(r);
  }
  out.headBytes = static_cast<size_t>(headEnd - data);
  out.keepAlive = keepAliveFor(out.versionMinor, f);

  // What the headers declare, checked whether or not a body follows: the
  // proxy writes the response's framing itself from this, never copies it.
  // Anything another hop could read two ways is refused (502, Envoy's UPE).
  if (f.transferEncodingHeaders > 0) {
    if (f.contentLengthSeen) return fail("both Transfer-Encoding and Content-Length in response");
    if (f.codings == 0) return fail("empty Transfer-Encoding in response");
    if (f.codingAfterChunked) return fail("chunked is not the final transfer coding in response");
    if (f.otherCoding) return fail("unsupported transfer coding in response");
    out.declared.kind = Framing::Kind::Chunked;
    if (out.versionMinor == 0) out.keepAlive = false;  // chunked from an HTTP/1.0 server is suspect
  } else if (f.contentLengthBad) {
    return fail("invalid Content-Length in response");
  } else if (f.contentLengthSeen) {
    out.declared.kind = Framing::Kind::ContentLength;
    out.declared.length = f.contentLength;
  } else {
    out.declared.kind = Framing::Kind::UntilClose;
  }

  if (requestMethodHead || out.status < 200 || out.status == 204 || out.status == 304) {
    out.framing.kind = Framing::Kind::None;
  } else {
    out.framing = out.declared;
    if (out.framing.kind == Framing::Kind::UntilClose) out.keepAlive = false;
  }
  return ParseStatus::Complete;
}

const Header* RequestHead::find(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h;
  }
  return nullptr;
}

const Header* ResponseHead::find(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h;
  }
  return nullptr;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool headerHasToken(std::string_view list, std::string_view token) {
  bool found = false;
  forEachElement(list, [&](std::string_view e) { found = found || iequals(e, token); });
  return found;
}

bool isHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2:
      return iequals(name, "te");
    case 7:
      return iequals(name, "upgrade");
    case 10:
      return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16:
      return iequals(name, "proxy-connection");
    case 17:
      return iequals(name, "transfer-encoding");
    default:
      return false;
  }
}

bool isHopByHop(std::string_view name, std::string_view connectionValue) {
  return isHopByHop(name) || headerHasToken(connectionValue, name);
}

}  // namespace sluice::http
