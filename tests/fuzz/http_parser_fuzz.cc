// libFuzzer target for the HTTP/1.1 codec: request heads, response heads and
// body framing. Besides memory safety (ASan/UBSan) it checks the properties
// the proxy relies on: results stay inside the input, a prefix never
// contradicts the whole, and body framing is independent of how the bytes
// are split.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

using namespace sluice::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool inside(std::string_view v, const char* data, size_t len) {
  return v.empty() || (v.data() >= data && v.data() + v.size() <= data + len);
}

void checkHeaders(const std::vector<Header>& hs, const char* data, size_t len, const Limits& l) {
  check(hs.size() <= l.maxHeaders);
  for (const Header& h : hs) {
    check(!h.name.empty());
    check(inside(h.name, data, len) && inside(h.value, data, len));
    for (char c : h.value) check(c != '\r' && c != '\n' && c != '\0');
    if (!h.value.empty()) {
      check(h.value.front() != ' ' && h.value.front() != '\t');
      check(h.value.back() != ' ' && h.value.back() != '\t');
    }
  }
}

struct BodyResult {
  BodyFramer::Status status;
  size_t consumed;
  std::string payload;
  uint64_t payloadBytes;
};

// Runs a framer over data in pieces of `piece` bytes (0 = all at once).
BodyResult runBody(Framing f, const char* data, size_t len, size_t piece) {
  BodyFramer b(f);
  BodyResult r{BodyFramer::Status::NeedMore, 0, {}, 0};
  std::vector<std::string_view> views;
  size_t off = 0;
  if (b.done()) r.status = BodyFramer::Status::Done;
  while (off < len && r.status == BodyFramer::Status::NeedMore) {
    size_t n = piece == 0 ? len - off : std::min(piece, len - off);
    views.clear();
    BodyFramer::Step s = b.consume(data + off, n, &views);
    check(s.consumed <= n);
    if (s.status == BodyFramer::Status::NeedMore) check(s.consumed == n);
    size_t viewBytes = 0;
    for (std::string_view v : views) {
      check(inside(v, data + off, s.consumed));
      viewBytes += v.size();
      r.payload.append(v);
    }
    check(viewBytes <= s.consumed);
    off += s.consumed;
    r.status = s.status;
  }
  r.consumed = off;
  r.payloadBytes = b.payloadBytes();
  check(r.payloadBytes == r.payload.size());
  check(r.payloadBytes <= r.consumed);
  if (r.status == BodyFramer::Status::Done) check(b.done());
  return r;
}

void checkBodySplitInvariant(Framing f, const char* data, size_t len, size_t piece) {
  BodyResult whole = runBody(f, data, len, 0);
  BodyResult split = runBody(f, data, len, piece);
  BodyResult bytes = runBody(f, data, len, 1);
  for (const BodyResult* r : {&split, &bytes}) {
    check(r->status == whole.status);
    check(r->payload == whole.payload);
    // On Error the failing byte may sit at a different offset within a step,
    // but the byte where the stream went wrong is the same.
    check(r->consumed == whole.consumed);
  }
  if (f.kind == Framing::Kind::ContentLength) {
    check(whole.consumed == std::min<uint64_t>(len, f.length));
  }
}

void fuzzRequest(const char* data, size_t len, const Limits& limits, size_t cut) {
  RequestHead head;
  ParseError err;
  ParseStatus st = parseRequestHead(data, len, limits, head, err);
  switch (st) {
    case ParseStatus::Complete:
      check(head.headBytes > 0 && head.headBytes <= len && head.headBytes <= limits.maxHeadBytes);
      check(!head.method.empty() && !head.target.empty());
      check(inside(head.method, data, len) && inside(head.target, data, len));
      check(head.versionMinor == 0 || head.versionMinor == 1);
      check(inside(head.host, data, len));
      checkHeaders(head.headers, data, len, limits);
      check(head.framing.kind != Framing::Kind::UntilClose);
      break;
    case ParseStatus::Incomplete:
      check(len <= limits.maxHeadBytes);
      break;
    case ParseStatus::Error:
      check(err.status == 400 || err.status == 414 || err.status == 431 || err.status == 501 ||
            err.status == 505);
      check(!err.reason.empty());
      break;
  }

  // A prefix may only say "wait" or agree with the whole input.
  RequestHead prefixHead;
  ParseError prefixErr;
  ParseStatus pst = parseRequestHead(data, std::min(cut, len), limits, prefixHead, prefixErr);
  if (pst == ParseStatus::Complete) {
    check(st == ParseStatus::Complete && prefixHead.headBytes == head.headBytes);
  } else if (pst == ParseStatus::Error) {
    check(st == ParseStatus::Error && prefixErr.status == err.status);
  }

  if (st == ParseStatus::Complete) {
    // Exactly the head parses to the same result; one byte less is short.
    RequestHead again;
    check(parseRequestHead(data, head.headBytes, limits, again, err) == ParseStatus::Complete);
    check(again.headBytes == head.headBytes && again.headers.size() == head.headers.size());
    check(parseRequestHead(data, head.headBytes - 1, limits, again, err) == ParseStatus::Incomplete);
    checkBodySplitInvariant(head.framing, data + head.headBytes, len - head.headBytes, cut % 13 + 1);
  }
}

void fuzzResponse(const char* data, size_t len, const Limits& limits, bool isHead, size_t cut) {
  ResponseHead head;
  ParseError err;
  ParseStatus st = parseResponseHead(data, len, limits, isHead, head, err);
  if (st == ParseStatus::Complete) {
    check(head.headBytes > 0 && head.headBytes <= len && head.headBytes <= limits.maxHeadBytes);
    check(head.status >= 100 && head.status <= 599);
    check(inside(head.reason, data, len));
    checkHeaders(head.headers, data, len, limits);
    if (isHead || head.status < 200 || head.status == 204 || head.status == 304) {
      check(head.framing.kind == Framing::Kind::None);
    }
    if (head.framing.kind == Framing::Kind::UntilClose) check(!head.keepAlive);
    checkBodySplitInvariant(head.framing, data + head.headBytes, len - head.headBytes, cut % 7 + 1);
  } else if (st == ParseStatus::Error) {
    check(err.status == 502);
  } else {
    check(len <= limits.maxHeadBytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t size) {
  if (size < 2) return 0;
  // Two control bytes pick limits and a split point; the rest is the message.
  uint8_t ctl0 = raw[0];
  uint8_t ctl1 = raw[1];
  const char* data = reinterpret_cast<const char*>(raw + 2);
  size_t len = size - 2;

  Limits limits;
  if (ctl0 & 1) {
    limits.maxHeadBytes = 16 + (ctl1 % 128);
    limits.maxHeaders = ctl1 % 5;
  }
  size_t cut = len == 0 ? 0 : static_cast<size_t>(ctl1) * 7919 % (len + 1);

  fuzzRequest(data, len, limits, cut);
  fuzzResponse(data, len, limits, (ctl0 & 2) != 0, cut);
  // The input taken as a raw chunked body.
  checkBodySplitInvariant(Framing{Framing::Kind::Chunked, 0}, data, len, cut % 5 + 1);
  return 0;
}
