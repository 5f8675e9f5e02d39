// libFuzzer target for the heads sluiced forwards (the request-smuggling
// surface): a request head that parses is rebuilt for the upstream with
// buildUpstreamHead, and a response head for the client with
// buildDownstreamHead; each result must parse again, completely, as one
// message with exactly one framing, the same framing, a single valid Host,
// and nothing after it. The first input byte picks request or response and
// the response's options (HEAD request, HTTP/1.0 client).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "proxy/request_util.h"

namespace {

using namespace sluice;

// Names the property that failed, so a crash report says which.
#define check(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "forward_fuzz: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

// sluiced adds a few headers of its own (x-request-id, x-forwarded-proto,
// the framing it writes): the rebuilt head is read with that much room.
http::Limits roomy() {
  http::Limits l;
  l.maxHeadBytes += 4096;
  l.maxHeaders += 8;
  return l;
}

size_t countNamed(const std::vector<http::Header>& hs, std::string_view name) {
  size_t n = 0;
  for (const http::Header& h : hs) n += http::iequals(h.name, name);
  return n;
}

void request(const char* text, size_t len) {
  http::RequestHead head;
  http::ParseError err;
  if (http::parseRequestHead(text, len, {}, head, err) != http::ParseStatus::Complete) return;
  proxy::TargetParts target;
  if (!proxy::splitTarget(head.target, head.host, target)) return;
  // No authority at all (HTTP/1.0 without Host) routes nowhere: 404 NR.
  if (target.authority.empty()) return;
  const http::HeaderMap fields(std::vector<http::Header>(head.headers));
  const bool websocket = proxy::wantsWebSocket(head, fields);
  std::string out = proxy::buildUpstreamHead(head, fields, target, "fuzz-request-id");
  http::RequestHead again;
  check(http::parseRequestHead(out.data(), out.size(), roomy(), again, err) == http::ParseStatus::Complete);
  check(again.headBytes == out.size());  // one head, nothing smuggled after it
  check(again.framing.kind == head.framing.kind && again.framing.length == head.framing.length);
  check(countNamed(again.headers, "content-length") + countNamed(again.headers, "transfer-encoding") ==
        (head.framing.kind == http::Framing::Kind::None ? 0u : 1u));
  check(countNamed(again.headers, "host") <= 1);
  // Hop-by-hop headers stop here, but for a WebSocket upgrade sluiced writes itself.
  check(countNamed(again.headers, "connection") == (websocket ? 1u : 0u));
  check(countNamed(again.headers, "upgrade") == (websocket ? 1u : 0u));
}

void response(uint8_t opts, const char* text, size_t len) {
  const bool isHead = opts & 2;
  const bool http10 = opts & 4;
  http::ResponseHead resp;
  http::ParseError err;
  if (http::parseResponseHead(text, len, {}, isHead, resp, err) != http::ParseStatus::Complete) return;
  if (resp.status < 200 || resp.status == 101) return;  // interim answers are never forwarded
  const bool dechunk = http10 && resp.framing.kind == http::Framing::Kind::Chunked;
  const bool close = dechunk || resp.framing.kind == http::Framing::Kind::UntilClose || !resp.keepAlive;
  const http::HeaderMap fields(std::vector<http::Header>(resp.headers));
  std::string out = proxy::buildDownstreamHead(resp, fields, "1", close, http10, dechunk);
  http::ResponseHead again;
  check(http::parseResponseHead(out.data(), out.size(), roomy(), isHead, again, err) == http::ParseStatus::Complete);
  check(again.headBytes == out.size());
  check(again.status == resp.status);
  if (dechunk) {
    check(again.framing.kind == http::Framing::Kind::UntilClose);
  } else {
    check(again.framing.kind == resp.framing.kind && again.framing.length == resp.framing.length);
  }
  check(countNamed(again.headers, "content-length") + countNamed(again.headers, "transfer-encoding") <= 1);
  if (close) check(!again.keepAlive);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const char* text = reinterpret_cast<const char*>(data + 1);
  if (data[0] & 1) {
    response(data[0], text, size - 1);
  } else {
    request(text, size - 1);
  }
  return 0;
}
