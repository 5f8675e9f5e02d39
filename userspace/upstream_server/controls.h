// Per-request behaviour controls of sluice-upstream, read from the query
// string or from x-upstream-* headers (a header beats the query parameter).
//
// Kept free of sockets and clocks so it can be tested as plain functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "http/parser.h"

namespace sluice::upstream_server {

// Before: close without answering. After: answer, then close. Mid: send the
// head and half of the body, then close (a response cut short).
enum class CloseMode { None, Before, After, Mid };

struct Controls {
  int status = 0;  // 0: not set
  std::chrono::nanoseconds delay{0};
  CloseMode close = CloseMode::None;
  std::optional<uint64_t> size;        // text/plain body of this many 'x'
  std::optional<uint64_t> failFirst;   // first N requests carrying it get 503
  bool chunked = false;
  // From repeated `x-upstream-response-header: name: value`; views into the
  // request head.
  std::vector<std::pair<std::string_view, std::string_view>> extraHeaders;
};

// A delay beyond this is refused: a test server must not park a connection
// for hours because of a typo.
inline constexpr std::chrono::nanoseconds kMaxDelay = std::chrono::minutes(5);

struct TargetParts {
  std::string_view path;   // without the query; "/" for "*" or an empty path
  std::string_view query;  // raw, without '?'
};

// Splits an origin-form or absolute-form request target.
TargetParts splitTarget(std::string_view target);


// Returns a message for the client (static storage) when a control value is
// malformed.
std::expected<Controls, std::string_view> parseControls(const http::RequestHead& head,
                                                        std::string_view query);

}  // namespace sluice::upstream_server
