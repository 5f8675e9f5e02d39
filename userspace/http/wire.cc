#include "http/wire.h"

#include "http/chars.h"

namespace sluice::http {

namespace {

bool isControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// Control bytes are named first: they are the injection, and the message
// should say so rather than blame some other character.
std::string_view controlError(std::string_view s, bool allowTab) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\r' || c == '\n') return "contains a CR or LF";
    if (c == 0) return "contains a NUL byte";
    if (isControl(c) && !(allowTab && c == '\t')) return "contains a control character";
  }
  return {};
}

bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

std::string_view wireError(WireField field, std::string_view s) {
  if (auto e = controlError(s, field == WireField::HeaderValue); !e.empty()) return e;
  switch (field) {
    case WireField::HeaderValue:
      return {};
    case WireField::CookieAttribute:
      if (s.find(';') != std::string_view::npos) return "contains ';' (it would add a cookie attribute)";
      return {};
    case WireField::HeaderName:
      if (s.empty()) return "is empty";
      for (char c : s) {
        if (!detail::isTchar(c)) return "is not a valid header name";
      }
      return {};
    case WireField::Path:
      for (char c : s) {
        if (c == ' ') return "contains a space";
      }
      return {};
    case WireField::Authority:
      for (char c : s) {
        if (c == ' ' || c == '/' || c == '?' || c == '#' || c == '@')
          return "is not a valid authority (host[:port])";
      }
      return {};
    case WireField::Scheme:
      if (s.empty() || !isAlpha(s[0])) return "is not a valid URI scheme";
      for (char c : s) {
        if (!isAlpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.')
          return "is not a valid URI scheme";
      }
      return {};
  }
  return {};
}

}  // namespace sluice::http
