// Serialisation of sluice-upstream responses: status lines, heads and the
// JSON echo body. Hand-written rather than via nlohmann::json because this is
// the benchmark path and must cost far less than the syscalls around it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/parser.h"
#include "upstream_server/controls.h"

namespace sluice::upstream_server {

// Appends `s` as a JSON string literal. Bytes >= 0x80 are written as
// \u00XX (read as Latin-1, which is what HTTP's obs-text historically meant),
// so the output is valid JSON whatever the client sent.
void appendJsonString(std::string& out, std::string_view s);

struct EchoInfo {
  std::string_view name;
  const http::RequestHead* head = nullptr;
  TargetParts target;
  uint64_t bodyBytes = 0;
  uint64_t requestNumber = 0;
  uint64_t connectionRequest = 0;  // 1 for the first request on its connection
};

// {"name":..,"method":..,"path":..,"query":..,"headers":{..},"body_bytes":N,"request_number":N,
//  "connection_request":N}
// Header names are lower-cased; repeated headers are joined with ", ".
void appendEchoJson(std::string& out, const EchoInfo& info);

struct HeadSpec {
  int status = 200;
  std::string_view contentType;          // empty: no content-type
  std::optional<uint64_t> contentLength; // nullopt with chunked=false: no body framing header
  bool chunked = false;
  bool keepAlive = true;
  bool http10 = false;  // client spoke HTTP/1.0: keep-alive must be explicit
  std::string_view upstreamName;
  const std::vector<std::pair<std::string_view, std::string_view>>* extraHeaders = nullptr;
};

void appendHead(std::string& out, const HeadSpec& spec);

// Appends a decimal number.
void appendUint(std::string& out, uint64_t v);

}  // namespace sluice::upstream_server
