// VirtualService `corsPolicy`, compiled, and the per-request decision Envoy's
// CORS filter makes under Istio.
#pragma once

#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/model.h"
#include "http/header_map.h"
#include "route/match.h"

namespace sluice::route {

class CorsPolicy {
 public:
  static std::expected<CorsPolicy, std::string> compile(const config::CorsPolicy& spec);

  struct Decision {
    enum class Kind {
      NotCors,        // no Origin header: the policy does nothing
      Forward,        // forward; add `responseHeaders` to the upstream's response
      Preflight,      // answer 200 locally with `responseHeaders`
      PreflightBare,  // unmatched preflight under unmatchedPreflights IGNORE: 200, no CORS headers
    };
    Kind kind = Kind::NotCors;
    bool originAllowed = false;
    // access-control-allow-origin echoing the request's Origin,
    // -allow-credentials, -expose-headers for actual requests;
    // -allow-methods, -allow-headers, -max-age for preflights. Views into
    // the request's headers and this policy: valid while both are.
    http::HeaderMap responseHeaders;
  };
  // `method` and `headers` of the downstream request.
  Decision evaluate(std::string_view method, const http::HeaderMap& headers) const;

 private:
  std::vector<StringMatcher> origins_;
  std::string allowMethods_, allowHeaders_, exposeHeaders_, maxAge_;  // joined with ","
  bool allowCredentials_ = false;
  bool forwardUnmatchedPreflights_ = true;  // unmatchedPreflights FORWARD (default)
};

}  // namespace sluice::route
