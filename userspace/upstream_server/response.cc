#include "upstream_server/response.h"

#include "http/status.h"

#include <charconv>

namespace sluice::upstream_server {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

void appendLowerJsonKey(std::string& out, std::string_view name) {
  // Header names are tokens (no quotes, controls or high bytes), so lower-casing
  // is the only transformation needed.
  out.push_back('"');
  for (char c : name) out.push_back(lower(c));
  out.push_back('"');
}

}  // namespace

void appendUint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;  // 24 bytes always fit a uint64_t
  out.append(buf, end);
}

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t run = 0;  // start of the pending run of bytes that need no escaping
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(esc, 6);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

void appendEchoJson(std::string& out, const EchoInfo& info) {
  const http::RequestHead& head = *info.head;
  out.append("{\"name\":");
  appendJsonString(out, info.name);
  out.append(",\"method\":");
  appendJsonString(out, head.method);
  out.append(",\"path\":");
  appendJsonString(out, info.target.path);
  out.append(",\"query\":");
  appendJsonString(out, info.target.query);
  out.append(",\"headers\":{");
  bool first = true;
  const auto& hs = head.headers;
  // Quadratic in the header count, which the parser caps at ~100; the common
  // case (a handful of distinct headers) never finds a duplicate.
  for (size_t i = 0; i < hs.size(); ++i) {
    bool seen = false;
    for (size_t j = 0; j < i && !seen; ++j) seen = http::iequals(hs[j].name, hs[i].name);
    if (seen) continue;
    if (!first) out.push_back(',');
    first = false;
    appendLowerJsonKey(out, hs[i].name);
    out.push_back(':');
    bool repeated = false;
    for (size_t j = i + 1; j < hs.size() && !repeated; ++j) repeated = http::iequals(hs[j].name, hs[i].name);
    if (!repeated) {
      appendJsonString(out, hs[i].value);
      continue;
    }
    std::string joined(hs[i].value);
    for (size_t j = i + 1; j < hs.size(); ++j) {
      if (!http::iequals(hs[j].name, hs[i].name)) continue;
      joined.append(", ");
      joined.append(hs[j].value);
    }
    appendJsonString(out, joined);
  }
  out.append("},\"body_bytes\":");
  appendUint(out, info.bodyBytes);
  out.append(",\"request_number\":");
  appendUint(out, info.requestNumber);
  out.append(",\"connection_request\":");
  appendUint(out, info.connectionRequest);
  out.push_back('}');
}

void appendHead(std::string& out, const HeadSpec& spec) {
  out.append("HTTP/1.1 ");
  appendUint(out, static_cast<uint64_t>(spec.status));
  out.push_back(' ');
  out.append(http::reasonPhrase(spec.status));
  out.append("\r\n");
  if (!spec.contentType.empty()) {
    out.append("content-type: ");
    out.append(spec.contentType);
    out.append("\r\n");
  }
  out.append("x-upstream-name: ");
  out.append(spec.upstreamName);
  out.append("\r\n");
  if (spec.chunked) {
    out.append("transfer-encoding: chunked\r\n");
  } else if (spec.contentLength) {
    out.append("content-length: ");
    appendUint(out, *spec.contentLength);
    out.append("\r\n");
  }
  if (!spec.keepAlive) {
    out.append("connection: close\r\n");
  } else if (spec.http10) {
    out.append("connection: keep-alive\r\n");
  }
  if (spec.extraHeaders) {
    for (const auto& [n, v] : *spec.extraHeaders) {
      out.append(n);
      out.append(": ");
      out.append(v);
      out.append("\r\n");
    }
  }
  out.append("\r\n");
}

}  // namespace sluice::upstream_server
