// Readers for the Envoy protobuf messages EnvoyFilter patches carry, shared
// by the filters Sluice understands (parse_envoy_filter.cc,
// parse_rate_limit.cc): protobuf JSON field names and envoy.type.v3 codes.
#include <cctype>

#include "config/parse_util.h"

namespace sluice::config::detail {

namespace {

// Envoy's HTTP status code names (envoy.type.v3.StatusCode).
constexpr std::pair<std::string_view, uint32_t> kStatusCodes[] = {
    {"Continue", 100}, {"OK", 200}, {"Created", 201}, {"Accepted", 202},
    {"NonAuthoritativeInformation", 203}, {"NoContent", 204}, {"ResetContent", 205},
    {"PartialContent", 206}, {"MultiStatus", 207}, {"AlreadyReported", 208}, {"IMUsed", 226},
    {"MultipleChoices", 300}, {"MovedPermanently", 301}, {"Found", 302}, {"SeeOther", 303},
    {"NotModified", 304}, {"UseProxy", 305}, {"TemporaryRedirect", 307}, {"PermanentRedirect", 308},
    {"BadRequest", 400}, {"Unauthorized", 401}, {"PaymentRequired", 402}, {"Forbidden", 403},
    {"NotFound", 404}, {"MethodNotAllowed", 405}, {"NotAcceptable", 406},
    {"ProxyAuthenticationRequired", 407}, {"RequestTimeout", 408}, {"Conflict", 409}, {"Gone", 410},
    {"LengthRequired", 411}, {"PreconditionFailed", 412}, {"PayloadTooLarge", 413}, {"URITooLong", 414},
    {"UnsupportedMediaType", 415}, {"RangeNotSatisfiable", 416}, {"ExpectationFailed", 417},
    {"MisdirectedRequest", 421}, {"UnprocessableEntity", 422}, {"Locked", 423}, {"FailedDependency", 424},
    {"UpgradeRequired", 426}, {"PreconditionRequired", 428}, {"TooManyRequests", 429},
    {"RequestHeaderFieldsTooLarge", 431}, {"InternalServerError", 500}, {"NotImplemented", 501},
    {"BadGateway", 502}, {"ServiceUnavailable", 503}, {"GatewayTimeout", 504},
    {"HTTPVersionNotSupported", 505}, {"VariantAlsoNegotiates", 506}, {"InsufficientStorage", 507},
    {"LoopDetected", 508}, {"NotExtended", 510}, {"NetworkAuthenticationRequired", 511},
};

}  // namespace

std::string snakeCase(std::string_view key) {
  std::string out;
  out.reserve(key.size() + 4);
  for (char ch : key) {
    if (ch >= 'A' && ch <= 'Z') {
      out += '_';
      out += char(ch + 32);
    } else {
      out += ch;
    }
  }
  return out;
}

void forProtoFields(Ctx& c, const Node& n, const std::string& path, const FieldFn& fn) {
  forFields(c, n, path, [&](const std::string& key, const Node& v, const std::string& p) {
    return fn(snakeCase(key), v, p);
  });
}

void parseHttpStatus(Ctx& c, const Node& n, const std::string& path, uint32_t& out) {
  if (!expectMap(c, n, path)) return;
  forProtoFields(c, n, path, [&](const std::string& k, const Node& sv, const std::string& sp) {
    if (k != "code") return false;
    if (sv.isScalar() && !sv.scalar().empty() && std::isdigit(static_cast<unsigned char>(sv.scalar()[0]))) {
      uint32_t code = 0;
      if (!readInt(c, sv, sp, code, 100, 599)) return true;
      bool known = false;
      for (const auto& [name, value] : kStatusCodes) known = known || value == code;
      if (known) out = code;
      else c.error(sv, sp, "status code " + sv.scalar() + " is not one of Envoy's StatusCode values");
      return true;
    }
    for (const auto& [name, value] : kStatusCodes) {
      if (name == sv.scalar()) {
        out = value;
        return true;
      }
    }
    c.error(sv, sp, "unknown status code \"" + sv.scalar() + "\"");
    return true;
  });
}

}  // namespace sluice::config::detail
