// The HTTP/2 server side as sluiced configures it (http::newH2ServerSession)
// fed a client's bytes after the preface, in pieces of a size the first
// input byte chooses. Every request head that completes is built as the
// proxy builds it (http::H2RequestHead) and checked: its views lie inside
// its bytes, Host comes first and once, no pseudo-header is left among the
// fields, at most one cookie field, and the framing agrees with the
// content-length. Each stream is answered with a body and trailers, as the
// proxy answers a gRPC call, so the sending side runs too.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "http/h2.h"

namespace {

using sluice::http::Framing;
using sluice::http::H2RequestHead;
using sluice::http::RequestHead;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Ctx {
  nghttp2_session* session = nullptr;
  sluice::http::Limits limits;
  std::map<int32_t, std::unique_ptr<H2RequestHead>> heads;
  std::map<int32_t, int> bodyLeft;  // response DATA reads left per stream
};

bool within(std::string_view v, const std::string& bytes) {
  if (v.empty()) return true;
  return v.data() >= bytes.data() && v.data() + v.size() <= bytes.data() + bytes.size();
}

ssize_t readBody(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                 nghttp2_data_source*, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  int& left = ctx->bodyLeft[id];
  if (left-- <= 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    const nghttp2_nv trailers[] = {sluice::http::h2Field("grpc-status", "0")};
    if (nghttp2_submit_trailer(session, id, trailers, 1) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    return 0;
  }
  const size_t n = length < 100 ? length : 100;
  std::memset(buf, 'b', n);
  return ssize_t(n);
}

int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
    ctx->heads[frame->hd.stream_id] = std::make_unique<H2RequestHead>(ctx->limits);
  return 0;
}

int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen, const uint8_t* value,
             size_t valuelen, uint8_t, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto it = ctx->heads.find(frame->hd.stream_id);
  if (it == ctx->heads.end()) return 0;
  it->second->add(std::string_view(reinterpret_cast<const char*>(name), namelen),
                  std::string_view(reinterpret_cast<const char*>(value), valuelen));
  return 0;
}

void checkHead(const H2RequestHead& h, const RequestHead& head, bool endStream) {
  const std::string& bytes = h.bytes();
  check(!head.method.empty() && !head.target.empty() && !head.host.empty());
  check(within(head.method, bytes) && within(head.target, bytes) && within(head.host, bytes));
  check(!head.headers.empty() && head.headers.front().name == "host" && head.headers.front().value == head.host);
  int hosts = 0, cookies = 0;
  const sluice::http::Header* contentLength = nullptr;
  for (const auto& f : head.headers) {
    check(!f.name.empty() && f.name.front() != ':');
    check(f.name == "host" ? true : within(f.name, bytes));
    check(within(f.value, bytes));
    hosts += f.name == "host";
    cookies += f.name == "cookie";
    if (f.name == "content-length") contentLength = &f;
  }
  check(hosts == 1 && cookies <= 1);
  if (endStream) {
    check(head.framing.kind == Framing::Kind::None);
  } else if (contentLength) {
    check(head.framing.kind == Framing::Kind::ContentLength &&
          std::to_string(head.framing.length) == std::string(contentLength->value));
  } else {
    check(head.framing.kind == Framing::Kind::Chunked);
  }
}

int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto it = ctx->heads.find(frame->hd.stream_id);
  if (it == ctx->heads.end()) return 0;
  const bool endStream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  RequestHead head;
  if (!it->second->overflow() && it->second->build(endStream, head)) checkHead(*it->second, head, endStream);
  ctx->bodyLeft[frame->hd.stream_id] = 3;
  const nghttp2_nv response[] = {sluice::http::h2Field(":status", "200"), sluice::http::h2Field("content-type", "application/grpc")};
  nghttp2_data_provider provider{};
  provider.read_callback = readBody;
  nghttp2_submit_response(session, frame->hd.stream_id, response, 2, &provider);
  return 0;
}

int onDataChunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t*, size_t len, void*) {
  nghttp2_session_consume(session, id, len);  // as the proxy does once the upstream took it
  return 0;
}

int onStreamClose(nghttp2_session*, int32_t id, uint32_t, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  ctx->heads.erase(id);
  ctx->bodyLeft.erase(id);
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t piece = 1 + data[0] % 64;
  std::string input(sluice::http::H2RequestHead::kClientPreface);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, onStreamClose);
  Ctx ctx;
  ctx.session = sluice::http::newH2ServerSession(cbs, &ctx);
  nghttp2_session_callbacks_del(cbs);
  check(ctx.session != nullptr);
  for (size_t at = 0; at < input.size(); at += piece) {
    const size_t n = std::min(piece, input.size() - at);
    const ssize_t rv = nghttp2_session_mem_recv(ctx.session, reinterpret_cast<const uint8_t*>(input.data() + at), n);
    if (rv < 0) break;  // a fatal error: sluiced closes the connection here
    check(size_t(rv) == n);
    for (int i = 0; i < 64; ++i) {
      const uint8_t* out = nullptr;
      if (nghttp2_session_mem_send(ctx.session, &out) <= 0) break;
    }
  }
  nghttp2_session_del(ctx.session);
  return 0;
}
