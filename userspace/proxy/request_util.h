// Pure helpers of the HTTP session: request-target parsing and the
// serialisation of the heads a proxy writes. Kept free of I/O so they are
// unit-tested directly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "http/header_map.h"
#include "http/parser.h"
#include "route/header_ops.h"
#include "route/table.h"

namespace sluice::proxy {

struct TargetParts {
  std::string_view authority;  // "reviews:9080" as sent (URI authority or Host)
  std::string_view host;       // "reviews"
  uint32_t port = 0;           // 0 when the authority names none
  std::string_view path;       // origin-form path + query
  bool absolute = false;       // request-target was absolute-form
  std::string pathStorage;     // backs `path` when it had to be synthesised
};

// Splits a request target (origin, absolute or asterisk form) and the Host
// header into authority/host/port/path. False for authority-form (CONNECT)
// and malformed authorities.
bool splitTarget(std::string_view target, std::string_view hostHeader, TargetParts& out);

std::string lowerHost(std::string_view host);
std::string newRequestId(core::Rng& rng);
// The same, written into `out` (36 characters, no allocation).
void newRequestId(core::Rng& rng, char (&out)[36]);

// What the route changes in the head sent upstream. Views must outlive the
// buildUpstreamHead call only.
struct HeadMutation {
  std::string_view path;          // rewritten path + query; empty = target.path
  std::string_view originalPath;  // non-empty: sent as x-envoy-original-path
  std::string_view authority;     // rewritten Host; empty = keep
  const route::HeaderMutation::Rendered* headers = nullptr;
  // Non-empty: x-forwarded-proto is this, whatever the client sent.
  std::string_view forwardedProto;
};

// The request asks for a WebSocket upgrade (Connection: upgrade and an
// Upgrade header naming websocket), which Istio allows on every route.
bool wantsWebSocket(const http::RequestHead& head, const http::HeaderMap& headers);
bool acceptsWebSocket(const http::ResponseHead& resp);

// The header fields sent upstream for a request with fields `request`:
// hop-by-hop and framing fields removed, Host from an absolute-form target,
// the route's request header operations, x-request-id and
// x-forwarded-proto added when absent (a header the operations remove or
// set is not re-added), appended to `out`. Views into `request`, `target`,
// `requestId`, `mutation` and the route: used before any of them goes.
void upstreamHeaders(const http::HeaderMap& request, const TargetParts& target, std::string_view requestId,
                     const HeadMutation& mutation, http::HeaderMap& out);
// The HTTP/1.1 codec's request head: request line, `fields`, the framing
// the parser decided (never a peer's), the WebSocket upgrade when asked.
std::string http1RequestHead(std::string_view method, std::string_view path, const http::HeaderMap& fields,
                             const http::Framing& framing, bool websocket);
// Both: the head sent upstream for a request (its method and framing from
// `head`, its fields `headers`).
std::string buildUpstreamHead(const http::RequestHead& head, const http::HeaderMap& headers,
                              const TargetParts& target, std::string_view requestId,
                              const HeadMutation& mutation = {});
// The header fields sent downstream for an upstream response's `response`
// fields: hop-by-hop and framing removed, the route's response operations
// (`ops`, or null), then `extra` (what the proxy's filters add: CORS, a
// hash cookie), then x-envoy-upstream-service-time (`serviceTime` ms as
// text; empty: none), appended to `out`.
void downstreamHeaders(const http::HeaderMap& response, std::string_view serviceTime, const http::HeaderMap* extra,
                       const route::HeaderMutation::Rendered* ops, http::HeaderMap& out);
// The HTTP/1.1 codec's response head: status line, `fields`, framing
// (decoded for an HTTP/1.0 client), connection.
std::string http1ResponseHead(const http::ResponseHead& resp, const http::HeaderMap& fields, bool close,
                              bool http10, bool dechunk);
// Both.
std::string buildDownstreamHead(const http::ResponseHead& resp, const http::HeaderMap& headers,
                                std::string_view serviceTime, bool close, bool http10, bool dechunk,
                                const http::HeaderMap* extra = nullptr,
                                const route::HeaderMutation::Rendered* ops = nullptr);
// Appends the chunked encoding of `payload` (one chunk per non-empty view:
// size in hex, no extensions) and, when `last`, the last chunk with no
// trailers. A chunked body is forwarded re-encoded, never as the peer
// wrote it: extensions, odd size spellings and trailers (which could name
// framing headers) stop here, as in Envoy.
void appendChunks(const std::vector<std::string_view>& payload, bool last, std::string& out);
// A response the proxy answers itself (errors, direct responses, redirects).
// `extraHeaders`: fields it carries besides the framing (or null).
std::string buildLocalReply(int status, std::string_view body, bool close, bool isHead,
                            const http::HeaderMap* extraHeaders = nullptr);
// A redirect's Location; without a scheme of its own, the request's.
std::string redirectLocation(const route::Redirect& r, const TargetParts& target,
                             uint32_t requestPort, std::string_view requestScheme = "http");
// "2026-11-27T03:13:49.123Z", as Envoy's %START_TIME%.
std::string formatLogTime();

}  // namespace sluice::proxy
