#include "upstream_server/controls.h"

#include "istio/duration.h"

#include <charconv>
#include <cmath>

namespace sluice::upstream_server {
namespace {

constexpr std::string_view kHeaderPrefix = "x-upstream-";

bool parseUint(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool isTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// One control, named without prefix ("status", "fail-first"); query names
// use '_' where header names use '-', so names are compared with both mapped
// to '-'.
bool sameControl(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] == '_' ? '-' : a[i];
    char y = b[i] == '_' ? '-' : b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Applies one control; unknown names are ignored so ordinary query strings
// pass through untouched.
std::optional<std::string_view> apply(std::string_view name, std::string_view value, Controls& c) {
  uint64_t n = 0;
  if (sameControl(name, "status")) {
    if (!parseUint(value, n) || n < 200 || n > 599) return "status must be an integer in 200..599";
    c.status = static_cast<int>(n);
  } else if (sameControl(name, "delay")) {
    auto d = istio::parseDuration(value);
    if (!d) return "delay must be a duration like 100ms or 2s";
    if (*d > kMaxDelay) return "delay is capped at 5m";
    c.delay = *d;
  } else if (sameControl(name, "close")) {
    if (http::iequals(value, "before")) {
      c.close = CloseMode::Before;
    } else if (http::iequals(value, "after")) {
      c.close = CloseMode::After;
    } else if (http::iequals(value, "mid")) {
      c.close = CloseMode::Mid;
    } else {
      return "close must be before, after or mid";
    }
  } else if (sameControl(name, "size")) {
    if (!parseUint(value, n)) return "size must be a non-negative integer";
    c.size = n;
  } else if (sameControl(name, "fail-first")) {
    if (!parseUint(value, n)) return "fail_first must be a non-negative integer";
    c.failFirst = n;
  } else if (sameControl(name, "chunked")) {
    if (value == "1" || http::iequals(value, "true")) {
      c.chunked = true;
    } else if (value == "0" || http::iequals(value, "false")) {
      c.chunked = false;
    } else {
      return "chunked must be 1/0/true/false";
    }
  }
  return std::nullopt;
}

}  // namespace

TargetParts splitTarget(std::string_view target) {
  // absolute-form: drop scheme and authority.
  if (auto scheme = target.find("://"); scheme != std::string_view::npos && !target.starts_with('/')) {
    auto rest = target.substr(scheme + 3);
    auto slash = rest.find_first_of("/?");
    target = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  }
  TargetParts parts;
  auto q = target.find('?');
  if (q == std::string_view::npos) {
    parts.path = target;
  } else {
    parts.path = target.substr(0, q);
    parts.query = target.substr(q + 1);
  }
  if (parts.path.empty() || parts.path == "*") parts.path = "/";
  return parts;
}


std::expected<Controls, std::string_view> parseControls(const http::RequestHead& head,
                                                        std::string_view query) {
  Controls c;
  // Query first, then headers, so a header overrides the same query control.
  // Bounded by the query length: every round removes at least one byte.
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (auto err = apply(name, value, c)) return std::unexpected(*err);
  }
  for (const auto& h : head.headers) {
    if (h.name.size() <= kHeaderPrefix.size() ||
        !http::iequals(h.name.substr(0, kHeaderPrefix.size()), kHeaderPrefix)) {
      continue;
    }
    std::string_view name = h.name.substr(kHeaderPrefix.size());
    if (http::iequals(name, "response-header")) {
      auto colon = h.value.find(':');
      if (colon == std::string_view::npos) return std::unexpected("x-upstream-response-header must be 'name: value'");
      std::string_view hn = trim(h.value.substr(0, colon));
      std::string_view hv = trim(h.value.substr(colon + 1));
      if (hn.empty()) return std::unexpected("x-upstream-response-header needs a header name");
      for (char ch : hn) {
        if (!isTokenChar(ch)) return std::unexpected("x-upstream-response-header name is not a token");
      }
      c.extraHeaders.emplace_back(hn, hv);
      continue;
    }
    if (auto err = apply(name, h.value, c)) return std::unexpected(*err);
  }
  return c;
}

}  // namespace sluice::upstream_server
