// Pure helpers of the HTTP session: request-target parsing and the
// serialisation of the heads a proxy writes. Kept free of I/O so they are
// unit-tested directly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
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
};

// The request asks for a WebSocket upgrade (Connection: upgrade and an
// Upgrade header naming websocket), which Istio allows on every route.
bool wantsWebSocket(const http::RequestHead& head);
bool acceptsWebSocket(const http::ResponseHead& resp);

// The head sent upstream: origin-form target, hop-by-hop headers removed,
// Host set from an absolute-form target, x-request-id added when absent.
// `mutation` applies the route's rewrite and request header operations; a
// header the operations remove or set is not re-added by the proxy.
std::string buildUpstreamHead(const http::RequestHead& head, const TargetParts& target,
                              std::string_view requestId, const HeadMutation& mutation = {});
// The head sent downstream for an upstream response.
// `extraHeaders`: whole "name: value\r\n" lines the proxy adds (set-cookie).
// `headers`: the route's response header operations, or null.
std::string buildDownstreamHead(const http::ResponseHead& resp, uint64_t serviceTimeMs, bool close,
                                bool http10, bool dechunk, std::string_view extraHeaders = {},
                                const route::HeaderMutation::Rendered* headers = nullptr);
// Appends the chunked encoding of `payload` (one chunk per non-empty view:
// size in hex, no extensions) and, when `last`, the last chunk with no
// trailers. A chunked body is forwarded re-encoded, never as the peer
// wrote it: extensions, odd size spellings and trailers (which could name
// framing headers) stop here, as in Envoy.
void appendChunks(const std::vector<std::string_view>& payload, bool last, std::string& out);
// A response the proxy answers itself (errors, direct responses, redirects).
std::string buildLocalReply(int status, std::string_view body, bool close, bool isHead,
                            std::string_view extraHeaders);
std::string redirectLocation(const route::Redirect& r, const TargetParts& target,
                             uint32_t requestPort);
// "2026-11-27T03:13:49.123Z", as Envoy's %START_TIME%.
std::string formatLogTime();

}  // namespace sluice::proxy
