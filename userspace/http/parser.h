// HTTP/1.1 message-head parsing and body framing, written for a proxy.
//
// The parser never allocates for the bytes it parses: names and values are
// string_views into the caller's buffer, which must stay unchanged until the
// head has been used. It is strict where laxness lets a request be read two
// ways by two hops (RFC 9112 section 6.3, request smuggling): obs-fold, bare
// CR, whitespace before the colon, conflicting Content-Length, CL together
// with Transfer-Encoding and unknown transfer codings are all errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace sluice::http {

struct Header {
  std::string_view name;   // as received (case preserved)
  std::string_view value;  // leading/trailing OWS trimmed
};

struct Limits {
  size_t maxHeadBytes = 60 * 1024;  // request line + headers (Envoy: 60 KiB)
  size_t maxHeaders = 100;
};

enum class ParseStatus { Complete, Incomplete, Error };

struct ParseError {
  int status = 400;         // 400, 414, 431, 501, 505 (request); 502 (response)
  std::string_view reason;  // static string, for logs
};

// How the body that follows a head is delimited.
struct Framing {
  enum class Kind { None, ContentLength, Chunked, UntilClose };
  Kind kind = Kind::None;
  uint64_t length = 0;  // for ContentLength
};

struct RequestHead {
  std::string_view method;
  std::string_view target;  // origin-form "/p?q", absolute-form "http://h/p", authority-form, "*"
  int versionMinor = 1;     // HTTP/1.0 -> 0, HTTP/1.1 -> 1
  std::vector<Header> headers;
  size_t headBytes = 0;  // bytes consumed, including the final CRLF CRLF

  // Filled by parseRequestHead from the headers:
  Framing framing;
  bool keepAlive = true;         // HTTP/1.1 default, Connection: close/keep-alive honoured
  bool expectContinue = false;   // Expect: 100-continue
  std::string_view host;         // Host header value (empty if absent)
  bool upgrade = false;          // Connection: upgrade + Upgrade header present

  // Case-insensitive lookup of the first header named `name`.
  const Header* find(std::string_view name) const;
};

struct ResponseHead {
  int status = 0;
  std::string_view reason;
  int versionMinor = 1;
  std::vector<Header> headers;
  size_t headBytes = 0;
  Framing framing;       // how this body is delimited; None after HEAD, 1xx, 204, 304
  Framing declared;      // what the headers say (a HEAD answer's length, say)
  bool keepAlive = true; // upstream allows reuse of the connection
  const Header* find(std::string_view name) const;
};

// Parses a request head from data[0..len). On Incomplete, call again with more
// bytes (from the same start). On Error, `err` says which status to answer.
ParseStatus parseRequestHead(const char* data, size_t len, const Limits& limits, RequestHead& out,
                             ParseError& err);

// Parses a response head. `requestMethodHead` makes the framing None (a
// response to HEAD has no body), as do 1xx, 204 and 304.
ParseStatus parseResponseHead(const char* data, size_t len, const Limits& limits,
                              bool requestMethodHead, ResponseHead& out, ParseError& err);

// Walks a body byte stream and says where it ends, without buffering it.
// Chunked bodies are validated (hex sizes, CRLFs, trailers) while passing
// through so the proxy can forward them unchanged.
class BodyFramer {
 public:
  enum class Status { NeedMore, Done, Error };
  struct Step {
    size_t consumed = 0;  // bytes of the input that belong to this body
    Status status = Status::NeedMore;
  };

  explicit BodyFramer(Framing f = {});
  void reset(Framing f);
  // Consumes up to len bytes. For UntilClose it consumes everything and only
  // finish() ends it. For Chunked, `payload` (if non-null) receives the
  // decoded data bytes of this step (views into data) -- used by the test
  // server, which counts body bytes.
  // Views are appended to `payload` (never cleared here) for every framing
  // that carries a body, not only Chunked.
  Step consume(const char* data, size_t len, std::vector<std::string_view>* payload = nullptr);
  // The peer closed the stream. Ends an UntilClose body (Done); for any other
  // framing that has not finished, the body was truncated (Error).
  Status finish();
  bool done() const { return state_ == State::Done; }
  Framing framing() const { return framing_; }
  uint64_t payloadBytes() const { return payloadBytes_; }

 private:
  enum class State { Length, ChunkSize, ChunkExt, ChunkSizeLf, ChunkData, ChunkDataCr, ChunkDataLf,
                     TrailerStart, TrailerLine, TrailerLf, FinalLf, Done, Failed,
                     Close, TrailerName };
  Step consumeChunked(const char* data, size_t len, std::vector<std::string_view>* payload);
  Framing framing_;
  State state_ = State::Done;
  uint64_t remaining_ = 0;
  uint64_t payloadBytes_ = 0;
  size_t lineBytes_ = 0;  // bounds chunk-size lines and trailers
  int sizeDigits_ = 0;
};

// Case-insensitive ASCII comparison of header names / tokens.
bool iequals(std::string_view a, std::string_view b);

// True if the comma-separated `list` contains `token` (case-insensitive).
bool headerHasToken(std::string_view list, std::string_view token);

// Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), plus any
// named in Connection.
bool isHopByHop(std::string_view name);
// Same, also true when `name` is listed in the message's Connection value.
bool isHopByHop(std::string_view name, std::string_view connectionValue);

}  // namespace sluice::http
