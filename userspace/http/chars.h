// Character classes and scanners shared by the head parser and the body
// framer. Internal to http/: other subsystems use parser.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sluice::http::detail {

// RFC 9110 5.6.2 tchar: what a method, header name or transfer coding may hold.
inline constexpr std::array<bool, 256> kTchar = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

inline constexpr std::array<unsigned char, 256> kLower = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return t;
}();

inline bool isTchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }
inline unsigned char lower(char c) { return kLower[static_cast<unsigned char>(c)]; }
inline bool isOws(char c) { return c == ' ' || c == '\t'; }

inline int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  unsigned char l = lower(c);
  if (l >= 'a' && l <= 'f') return l - 'a' + 10;
  return -1;
}

// Returns the first non-tchar byte in [p, end), or end. Four bytes a step
// halves the loop branches on typical 10-20 byte header names.
inline const char* scanTchars(const char* p, const char* end) {
  while (end - p >= 4 && isTchar(p[0]) && isTchar(p[1]) && isTchar(p[2]) && isTchar(p[3])) p += 4;
  while (p < end && isTchar(*p)) ++p;
  return p;
}

// Field values and reason phrases may hold HTAB, SP, VCHAR and obs-text; every
// other control byte (NUL, CR, LF, DEL, ...) ends the scan so the caller can
// decide whether it is the CRLF or an error.
inline bool isFieldValueStop(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }
// A request-target holds no whitespace or control bytes at all.
inline bool isTargetStop(unsigned char c) { return c <= 0x20 || c == 0x7f; }

// Returns the first byte in [p, end) for which isFieldValueStop holds, or end.
// Header values are the bulk of a head, so they are scanned 16 bytes a step.
inline const char* scanFieldValue(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i k1f = _mm_set1_epi8(0x1f);
  const __m128i kDel = _mm_set1_epi8(0x7f);
  const __m128i kTab = _mm_set1_epi8('\t');
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, k1f), v);  // unsigned v <= 0x1f
    ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, kTab), ctl);
    ctl = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, kDel));
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(ctl));
    if (mask != 0) return p + __builtin_ctz(mask);
    p += 16;
  }
#endif
  while (p < end && !isFieldValueStop(static_cast<unsigned char>(*p))) ++p;
  return p;
}

// Returns the first byte in [p, end) for which isTargetStop holds, or end.
inline const char* scanTarget(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i k20 = _mm_set1_epi8(0x20);
  const __m128i kDel = _mm_set1_epi8(0x7f);
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i stop = _mm_cmpeq_epi8(_mm_min_epu8(v, k20), v);  // unsigned v <= 0x20
    stop = _mm_or_si128(stop, _mm_cmpeq_epi8(v, kDel));
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(stop));
    if (mask != 0) return p + __builtin_ctz(mask);
    p += 16;
  }
#endif
  while (p < end && !isTargetStop(static_cast<unsigned char>(*p))) ++p;
  return p;
}

}  // namespace sluice::http::detail
