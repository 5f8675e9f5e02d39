// Go-style durations ("30ms", "1.5s", "2h45m"), the spelling of every
// duration in Istio's YAML and of sluiced's duration flags.
#pragma once

#include <chrono>
#include <expected>
#include <string>
#include <string_view>

namespace sluice::istio {

// Istio's minimum for most fields is 1ms; that check belongs to the caller.
std::expected<std::chrono::nanoseconds, std::string> parseDuration(std::string_view text);

}  // namespace sluice::istio
