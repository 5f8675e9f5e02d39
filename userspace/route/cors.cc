#include "route/cors.h"

#include <chrono>

namespace sluice::route {

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ',';
    out += item;
  }
  return out;
}

}  // namespace

std::expected<CorsPolicy, std::string> CorsPolicy::compile(const config::CorsPolicy& spec) {
  CorsPolicy out;
  for (size_t i = 0; i < spec.allowOrigins.size(); ++i) {
    auto m = compileStringMatch(spec.allowOrigins[i]);
    if (!m) return std::unexpected("corsPolicy.allowOrigins[" + std::to_string(i) + "]: " + m.error());
    out.origins_.push_back(std::move(*m));
  }
  out.allowMethods_ = joined(spec.allowMethods);
  out.allowHeaders_ = joined(spec.allowHeaders);
  out.exposeHeaders_ = joined(spec.exposeHeaders);
  if (spec.maxAge) {
    // Access-Control-Max-Age is whole seconds; sub-second parts are dropped.
    out.maxAge_ = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(*spec.maxAge).count());
  }
  out.allowCredentials_ = spec.allowCredentials.value_or(false);
  const std::string& up = spec.unmatchedPreflights;
  if (up.empty() || up == "FORWARD" || up == "UNSPECIFIED") {
    out.forwardUnmatchedPreflights_ = true;
  } else if (up == "IGNORE") {
    out.forwardUnmatchedPreflights_ = false;
  } else {
    return std::unexpected("corsPolicy.unmatchedPreflights: \"" + up + "\" is not FORWARD or IGNORE");
  }
  return out;
}

CorsPolicy::Decision CorsPolicy::evaluate(std::string_view method,
                                          const http::HeaderMap& headers) const {
  Decision d;
  const http::HeaderMap::Field* origin = headers.find("origin");
  // An empty Origin carries nothing to echo back; Envoy treats it as absent.
  if (!origin || origin->value.empty()) return d;

  for (const auto& m : origins_) {
    if (m.matches(origin->value)) {
      d.originAllowed = true;
      break;
    }
  }

  const http::HeaderMap::Field* requestMethod = headers.find("access-control-request-method");
  bool preflight = method == "OPTIONS" && requestMethod && !requestMethod->value.empty();

  if (preflight) {
    if (!d.originAllowed) {
      d.kind = forwardUnmatchedPreflights_ ? Decision::Kind::Forward : Decision::Kind::PreflightBare;
      return d;
    }
    d.kind = Decision::Kind::Preflight;
    d.responseHeaders.add("access-control-allow-origin", origin->value);
    if (allowCredentials_) d.responseHeaders.add("access-control-allow-credentials", "true");
    if (!allowMethods_.empty()) d.responseHeaders.add("access-control-allow-methods", allowMethods_);
    if (!allowHeaders_.empty()) d.responseHeaders.add("access-control-allow-headers", allowHeaders_);
    if (!maxAge_.empty()) d.responseHeaders.add("access-control-max-age", maxAge_);
    return d;
  }

  d.kind = Decision::Kind::Forward;
  if (!d.originAllowed) return d;
  d.responseHeaders.add("access-control-allow-origin", origin->value);
  if (allowCredentials_) d.responseHeaders.add("access-control-allow-credentials", "true");
  if (!exposeHeaders_.empty()) d.responseHeaders.add("access-control-expose-headers", exposeHeaders_);
  return d;
}

}  // namespace sluice::route
