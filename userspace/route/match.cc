#include "route/match.h"

#include <re2/re2.h>

#include <algorithm>

#include "http/parser.h"
#include "route/table.h"

namespace sluice::route {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequalPrefix(std::string_view input, std::string_view lowerPrefix) {
  if (input.size() < lowerPrefix.size()) return false;
  for (size_t i = 0; i < lowerPrefix.size(); ++i) {
    if (lower(input[i]) != lowerPrefix[i]) return false;
  }
  return true;
}

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

}  // namespace

bool StringMatcher::matches(std::string_view input) const {
  using Kind = config::StringMatch::Kind;
  switch (kind) {
    case Kind::Present:
      return true;
    case Kind::Exact:
      if (ignoreCase) return input.size() == value.size() && iequalPrefix(input, value);
      return input == value;
    case Kind::Prefix:
      if (ignoreCase) return iequalPrefix(input, value);
      return input.starts_with(value);
    case Kind::Regex:
      return regex && RE2::FullMatch(re2::StringPiece(input.data(), input.size()), *regex);
  }
  return false;
}

std::expected<StringMatcher, std::string> compileStringMatch(const config::StringMatch& m,
                                                             bool ignoreCase) {
  StringMatcher out;
  out.kind = m.kind;
  out.ignoreCase = ignoreCase && (m.kind == config::StringMatch::Kind::Exact ||
                                  m.kind == config::StringMatch::Kind::Prefix);
  out.value = out.ignoreCase ? toLower(m.value) : m.value;
  if (m.kind == config::StringMatch::Kind::Regex) {
    if (m.regex) {
      out.regex = m.regex;
    } else {
      RE2::Options opts;
      opts.set_log_errors(false);
      auto re = std::make_shared<const RE2>(m.value, opts);
      if (!re->ok()) return std::unexpected("invalid regex \"" + m.value + "\": " + re->error());
      out.regex = std::move(re);
    }
  }
  return out;
}

std::string_view pathWithoutQuery(std::string_view path) {
  size_t end = path.find_first_of("?#");
  return end == std::string_view::npos ? path : path.substr(0, end);
}

std::optional<std::string_view> queryParam(std::string_view path, std::string_view name) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = path.substr(q + 1);
  if (size_t hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (key == name) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

std::expected<std::shared_ptr<const CompiledMatch>, std::string> CompiledMatch::compile(
    const config::HTTPMatchRequest& spec) {
  auto out = std::make_shared<CompiledMatch>();
  out->name_ = spec.name;
  auto one = [](const std::optional<config::StringMatch>& in, std::optional<StringMatcher>& dst,
                bool icase, const char* field) -> std::expected<void, std::string> {
    if (!in) return {};
    auto m = compileStringMatch(*in, icase);
    if (!m) return std::unexpected(std::string(field) + ": " + m.error());
    dst = std::move(*m);
    return {};
  };
  if (auto r = one(spec.uri, out->uri_, spec.ignoreUriCase, "uri"); !r) return std::unexpected(r.error());
  if (auto r = one(spec.scheme, out->scheme_, false, "scheme"); !r) return std::unexpected(r.error());
  if (auto r = one(spec.method, out->method_, false, "method"); !r) return std::unexpected(r.error());
  if (auto r = one(spec.authority, out->authority_, false, "authority"); !r) {
    return std::unexpected(r.error());
  }
  auto headers = [&](const std::map<std::string, config::StringMatch>& in, bool invert,
                     const char* field) -> std::expected<void, std::string> {
    for (const auto& [name, sm] : in) {
      auto m = compileStringMatch(sm);
      if (!m) return std::unexpected(std::string(field) + "." + name + ": " + m.error());
      out->headers_.push_back(HeaderCond{toLower(name), std::move(*m), invert});
    }
    return {};
  };
  if (auto r = headers(spec.headers, false, "headers"); !r) return std::unexpected(r.error());
  if (auto r = headers(spec.withoutHeaders, true, "withoutHeaders"); !r) {
    return std::unexpected(r.error());
  }
  for (const auto& [name, sm] : spec.queryParams) {
    // Istio documents prefix as unsupported for queryParams; Envoy's
    // StringMatcher would run it as a prefix, so that is what we do.
    auto m = compileStringMatch(sm);
    if (!m) return std::unexpected("queryParams." + name + ": " + m.error());
    out->query_.push_back(QueryCond{name, std::move(*m)});
  }
  out->port_ = spec.port;
  out->gateways_ = spec.gateways;
  // There is no source identity yet (no mTLS peer, no workload labels of
  // the client), so a block that requires sourceLabels or sourceNamespace
  // cannot be proven to match and never does.
  if (!spec.sourceLabels.empty() || !spec.sourceNamespace.empty()) out->never_ = true;
  return std::shared_ptr<const CompiledMatch>(std::move(out));
}

bool CompiledMatch::catchAll() const {
  using Kind = config::StringMatch::Kind;
  if (never_ || scheme_ || method_ || authority_ || !headers_.empty() || !query_.empty() || port_) return false;
  if (!uri_) return true;
  return (uri_->kind == Kind::Prefix && uri_->value == "/") ||
         (uri_->kind == Kind::Regex && (uri_->value == ".*" || uri_->value == "*"));
}

bool CompiledMatch::headerMatches(const HeaderCond& c, const RequestView& req) const {
  // Pseudo-headers name parts of the request line (HTTP/2 style), as Envoy
  // lets a header matcher address them.
  std::optional<std::string_view> value;
  if (!c.name.empty() && c.name[0] == ':') {
    if (c.name == ":authority") value = req.authority;
    else if (c.name == ":method") value = req.method;
    else if (c.name == ":path") value = req.path;
    else if (c.name == ":scheme") value = req.scheme;
  } else if (req.headers) {
    thread_local std::string joined;
    int found = 0;
    for (const http::HeaderMap::Field& h : *req.headers) {
      if (!http::iequals(h.name, c.name)) continue;
      if (found == 0) {
        value = h.value;
      } else {
        if (found == 1) joined.assign(value->data(), value->size());
        joined.push_back(',');
        joined.append(h.value.data(), h.value.size());
        value = joined;
      }
      ++found;
    }
  }
  bool positive = value.has_value() && c.match.matches(*value);
  // withoutHeaders: the block matches when the header condition fails,
  // absence included.
  return c.invert ? !positive : positive;
}

bool CompiledMatch::matches(const RequestView& req) const {
  if (never_) return false;
  if (port_ && *port_ != req.port) return false;
  if (method_ && !method_->matches(req.method)) return false;
  if (uri_ && !uri_->matches(pathWithoutQuery(req.path))) return false;
  if (scheme_ && !scheme_->matches(req.scheme)) return false;
  if (authority_ && !authority_->matches(req.authority)) return false;
  for (const HeaderCond& c : headers_) {
    if (!headerMatches(c, req)) return false;
  }
  for (const QueryCond& c : query_) {
    auto v = queryParam(req.path, c.name);
    if (!v || !c.match.matches(*v)) return false;
  }
  return true;
}

}  // namespace sluice::route
