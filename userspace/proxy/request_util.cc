#include "proxy/request_util.h"

#include <fmt/format.h>

#include <charconv>
#include <ctime>
#include <sys/time.h>

#include <cstring>

#include "http/status.h"
#include "http/wire.h"

namespace sluice::proxy {

namespace {

bool parsePort(std::string_view s, uint32_t& port) {
  if (s.empty() || s.size() > 5) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), port);
  return ec == std::errc() && p == s.data() + s.size() && port > 0 && port <= 65535;
}

bool splitAuthority(std::string_view authority, std::string_view& host, uint32_t& port) {
  port = 0;
  if (authority.empty()) {
    host = {};
    return true;
  }
  // It is forwarded as the Host, echoed into redirects and mirrors' Host: a
  // value that is no authority ("a/b", "a#", "a, b", "user@a") is refused.
  if (!http::wireError(http::WireField::Authority, authority).empty() ||
      authority.find(',') != std::string_view::npos) {
    return false;
  }
  if (authority.front() == '[') {  // IPv6 literal
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(0, close + 1);
    std::string_view rest = authority.substr(close + 1);
    if (rest.empty()) return true;
    return rest.front() == ':' && parsePort(rest.substr(1), port);
  }
  size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos) {
    host = authority;
    return true;
  }
  host = authority.substr(0, colon);
  return !host.empty() && parsePort(authority.substr(colon + 1), port);
}

bool startsWithCi(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && http::iequals(s.substr(0, prefix.size()), prefix);
}

// Header names listed in Connection are hop-by-hop for this message.
bool namedInConnection(const http::HeaderMap& headers, std::string_view name) {
  for (const http::HeaderMap::Field& h : headers) {
    if (http::iequals(h.name, "connection") && http::headerHasToken(h.value, name)) return true;
  }
  return false;
}

// Framing is never subject to header operations (compile refuses to name
// these), so a drop can only ever hit an ordinary end-to-end header.
bool dropped(const route::HeaderMutation::Rendered* headers, std::string_view name) {
  return headers != nullptr && headers->drops(name);
}

bool isFramingHeader(std::string_view name) {
  return http::iequals(name, "content-length") || http::iequals(name, "transfer-encoding");
}

// The one place a forwarded message's framing is written: from what the
// parser decided, never copied from the peer, so no header the peer chose
// (a second Content-Length, "chunked," or a Connection that names one) can
// make the next hop read the body differently. `noChunked` when the body is
// sent decoded (to an HTTP/1.0 client) and ends with the connection.
void appendFraming(const http::Framing& f, bool noChunked, std::string& out) {
  switch (f.kind) {
    case http::Framing::Kind::ContentLength:
      out.append("content-length: ").append(std::to_string(f.length)).append("\r\n");
      break;
    case http::Framing::Kind::Chunked:
      if (!noChunked) out.append("transfer-encoding: chunked\r\n");
      break;
    case http::Framing::Kind::None:
    case http::Framing::Kind::UntilClose:
      break;
  }
}

}  // namespace

bool splitTarget(std::string_view target, std::string_view hostHeader, TargetParts& out) {
  out = TargetParts{};
  if (!target.empty() && target.front() == '/') {
    out.authority = hostHeader;
    out.path = target;
  } else if (target == "*") {
    out.authority = hostHeader;
    out.path = target;
  } else if (startsWithCi(target, "http://") || startsWithCi(target, "https://")) {
    std::string_view rest = target.substr(target.find("//") + 2);
    size_t end = rest.find_first_of("/?");
    out.authority = rest.substr(0, end);
    out.absolute = true;
    if (out.authority.empty() || out.authority.find('@') != std::string_view::npos) return false;
    if (end == std::string_view::npos) {
      out.path = "/";
    } else if (rest[end] == '?') {
      out.pathStorage = "/" + std::string(rest.substr(end));
      out.path = out.pathStorage;
    } else {
      out.path = rest.substr(end);
    }
  } else {
    return false;
  }
  return splitAuthority(out.authority, out.host, out.port);
}

std::string lowerHost(std::string_view host) {
  std::string s(host);
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  }
  if (!s.empty() && s.back() == '.') s.pop_back();  // FQDN with root dot
  return s;
}

std::string newRequestId(core::Rng& rng) {
  char out[36];
  newRequestId(rng, out);
  return std::string(out, sizeof(out));
}

void newRequestId(core::Rng& rng, char (&out)[36]) {
  // UUID version 4 (RFC 9562): 122 random bits, hex in 8-4-4-4-12 groups.
  uint64_t a = rng.next(), b = rng.next();
  a = (a & 0xffffffffffff0fffull) | 0x0000000000004000ull;  // version 4
  b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull;  // variant 10
  static constexpr char kHex[] = "0123456789abcdef";
  std::memset(out, '-', sizeof(out));
  int pos = 0;
  auto put = [&](uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) out[pos++] = kHex[(v >> (4 * i)) & 0xf];
  };
  put(a >> 32, 8);
  ++pos;
  put(a >> 16, 4);
  ++pos;
  put(a, 4);
  ++pos;
  put(b >> 48, 4);
  ++pos;
  put(b, 12);
}

bool wantsWebSocket(const http::RequestHead& head, const http::HeaderMap& headers) {
  return head.upgrade && http::headerHasToken(headers.get("upgrade"), "websocket");
}

bool acceptsWebSocket(const http::ResponseHead& resp) {
  const http::Header* u = resp.find("upgrade");
  return resp.status == 101 && u != nullptr && http::headerHasToken(u->value, "websocket");
}

void upstreamHeaders(const http::HeaderMap& request, const TargetParts& target, std::string_view requestId,
                     const HeadMutation& mutation, http::HeaderMap& out) {
  const route::HeaderMutation::Rendered* ops = mutation.headers;
  const bool rewriteHost = !mutation.authority.empty();
  bool hostSeen = false, ridPresent = false, protoPresent = false;
  for (const http::HeaderMap::Field& h : request) {
    if (http::iequals(h.name, "host")) {
      if (target.absolute || rewriteHost) continue;  // the URI's authority wins (RFC 9112 3.2.2)
      hostSeen = true;
    } else if (isFramingHeader(h.name) || http::isHopByHop(h.name) || http::iequals(h.name, "expect") ||
               namedInConnection(request, h.name)) {
      continue;  // framing is written by the codec from what the parser decided
    } else if (!mutation.originalPath.empty() && http::iequals(h.name, "x-envoy-original-path")) {
      continue;  // ours replaces the client's
    } else if (http::iequals(h.name, "x-request-id")) {
      if (h.value.empty()) continue;
      ridPresent = true;
    } else if (http::iequals(h.name, "x-forwarded-proto")) {
      if (!mutation.forwardedProto.empty()) continue;  // ours replaces the client's
      protoPresent = true;
    }
    out.add(h.name, h.value);
  }
  if (!hostSeen && !rewriteHost && !target.authority.empty()) out.add("host", target.authority);
  if (ops != nullptr) ops->applyTo(out);
  // A rewritten authority wins over a `set host` of the header operations,
  // as Envoy applies host_rewrite after request_headers_to_add.
  if (rewriteHost) out.set("host", mutation.authority);
  if (!mutation.originalPath.empty()) out.add("x-envoy-original-path", mutation.originalPath);
  // A header the operations set or remove is theirs: the proxy adds no second one.
  if (!ridPresent && !dropped(ops, "x-request-id")) out.add("x-request-id", requestId);
  if (!protoPresent && !dropped(ops, "x-forwarded-proto"))
    out.add("x-forwarded-proto", mutation.forwardedProto.empty() ? std::string_view("http") : mutation.forwardedProto);
}

std::string http1RequestHead(std::string_view method, std::string_view path, const http::HeaderMap& fields,
                             const http::Framing& framing, bool websocket) {
  std::string out;
  out.reserve(method.size() + path.size() + fields.http1Size() + 96);
  out.append(method).append(" ").append(path).append(" HTTP/1.1\r\n");
  fields.appendHttp1(out);
  appendFraming(framing, false, out);
  // The one hop-by-hop request header sluiced passes on: a WebSocket
  // upgrade, which it then tunnels once the upstream answers 101.
  if (websocket) out.append("upgrade: websocket\r\nconnection: upgrade\r\n");
  out.append("\r\n");
  return out;
}

std::string buildUpstreamHead(const http::RequestHead& head, const http::HeaderMap& headers,
                              const TargetParts& target, std::string_view requestId, const HeadMutation& mutation) {
  // The fields live only until they are serialised: one list per thread,
  // its capacity reused, instead of an allocation per request.
  thread_local http::HeaderMap fields;
  fields.clear();
  upstreamHeaders(headers, target, requestId, mutation, fields);
  std::string_view path = mutation.path.empty() ? target.path : mutation.path;
  return http1RequestHead(head.method, path, fields, head.framing, wantsWebSocket(head, headers));
}

void downstreamHeaders(const http::HeaderMap& response, std::string_view serviceTime, const http::HeaderMap* extra,
                       const route::HeaderMutation::Rendered* ops, http::HeaderMap& out) {
  for (const http::HeaderMap::Field& h : response) {
    if (isFramingHeader(h.name) || http::isHopByHop(h.name) || namedInConnection(response, h.name)) continue;
    out.add(h.name, h.value);
  }
  if (ops != nullptr) ops->applyTo(out);
  // What the proxy's own filters add (CORS, a generated hash cookie) comes
  // after the route's operations, which do not see it (Envoy's order).
  if (extra != nullptr) {
    for (const http::HeaderMap::Field& h : *extra) out.add(h.name, h.value);
  }
  if (!serviceTime.empty() && !dropped(ops, "x-envoy-upstream-service-time"))
    out.add("x-envoy-upstream-service-time", serviceTime);
}

std::string http1ResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields, bool close,
                              bool http10, bool dechunk) {
  std::string out;
  out.reserve(fields.http1Size() + 96);
  out.append("HTTP/1.1 ").append(std::to_string(resp.status)).append(" ");
  out.append(resp.reason.empty() ? http::reasonPhrase(resp.status) : resp.reason).append("\r\n");
  fields.appendHttp1(out);
  if (resp.framing.kind != http::Framing::Kind::None) {
    appendFraming(resp.framing, dechunk, out);
  } else if (resp.status >= 200 && resp.status != 204) {
    // No body follows (HEAD, 304), but the headers still tell the client
    // what a GET would have carried.
    appendFraming(resp.declared, dechunk || http10, out);
  }
  if (close) {
    out.append("connection: close\r\n");
  } else if (http10) {
    out.append("connection: keep-alive\r\n");
  }
  out.append("\r\n");
  return out;
}

std::string buildDownstreamHead(const http::ResponseHead& resp, const http::HeaderMap& headers,
                                std::string_view serviceTime, bool close, bool http10, bool dechunk,
                                const http::HeaderMap* extra, const route::HeaderMutation::Rendered* ops) {
  thread_local http::HeaderMap fields;  // as in buildUpstreamHead
  fields.clear();
  downstreamHeaders(headers, serviceTime, extra, ops, fields);
  return http1ResponseHead(resp, fields, close, http10, dechunk);
}

void appendChunks(const std::vector<std::string_view>& payload, bool last, std::string& out) {
  for (std::string_view p : payload) {
    if (p.empty()) continue;
    char size[20];
    auto [end, ec] = std::to_chars(size, size + sizeof(size), p.size(), 16);
    out.append(size, end).append("\r\n").append(p).append("\r\n");
  }
  if (last) out.append("0\r\n\r\n");
}

std::string buildLocalReply(int status, std::string_view body, bool close, bool isHead,
                            const http::HeaderMap* extraHeaders) {
  bool noBody = status == 204 || status == 304 || (status >= 100 && status < 200);
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", status, http::reasonPhrase(status));
  if (!noBody) {
    out += fmt::format("content-length: {}\r\n", body.size());
    if (!body.empty() && !(extraHeaders && extraHeaders->has("content-type"))) out += "content-type: text/plain\r\n";
  }
  if (extraHeaders != nullptr) extraHeaders->appendHttp1(out);
  if (close) out += "connection: close\r\n";
  out += "\r\n";
  if (!isHead && !noBody) out.append(body);
  return out;
}

std::string redirectLocation(const route::Redirect& r, const TargetParts& target,
                             uint32_t requestPort, std::string_view requestScheme) {
  std::string scheme(r.scheme.empty() ? requestScheme : std::string_view(r.scheme));
  std::string host = r.authority.empty() ? std::string(target.host) : r.authority;
  uint32_t port = target.port;
  if (!r.authority.empty()) port = 0;
  if (r.port) port = *r.port;
  if (r.derivePort == route::Redirect::DerivePort::FromRequestPort) port = requestPort;
  if (r.derivePort == route::Redirect::DerivePort::FromProtocolDefault) port = 0;
  if ((scheme == "http" && port == 80) || (scheme == "https" && port == 443)) port = 0;
  std::string path;
  if (r.uri.empty()) {
    path = target.path;
  } else {
    path = r.uri;
    size_t q = target.path.find('?');
    if (path.find('?') == std::string::npos && q != std::string_view::npos) path += target.path.substr(q);
  }
  std::string out = scheme + "://" + host;
  if (port) out += ":" + std::to_string(port);
  return out + path;
}

std::string formatLogTime() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char buf[40];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &t);
  return fmt::format("{}.{:03d}Z", std::string_view(buf, n), int(tv.tv_usec / 1000));
}

}  // namespace sluice::proxy
