#include "route/header_ops.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <ctime>
#include <optional>

#include "route/match.h"

namespace sluice::route {

namespace {

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) {
    if (ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
  }
  return out;
}

// Entry i is emitted when it has a value and no later dynamic `set` of the
// same name rendered non-empty (static sets already erased what they replace).
template <typename Entries, typename Values>
bool liveEntry(const Entries& entries, const Values& values, size_t i) {
  auto hasValue = [&](size_t k) { return !entries[k].value.dynamic() || !values[k].empty(); };
  if (!hasValue(i)) return false;
  for (size_t j = i + 1; j < entries.size(); ++j) {
    if (entries[j].set && entries[j].value.dynamic() && entries[j].name == entries[i].name && hasValue(j))
      return false;
  }
  return true;
}

}  // namespace

std::expected<HeaderMutation, std::string> HeaderMutation::compile(
    std::span<const config::HeaderOperations* const> levels) {
  HeaderMutation m;
  auto eraseEntries = [&](const std::string& name) {
    std::erase_if(m.entries_, [&](const Entry& e) { return e.name == name; });
  };
  auto staticEmpty = [](const istio::HeaderTemplate& t) {
    std::string v;
    t.render(istio::HeaderContext{}, v);
    return v.empty();
  };
  auto addDrop = [&](const std::string& name) {
    if (std::find(m.drop_.begin(), m.drop_.end(), name) == m.drop_.end()) m.drop_.push_back(name);
  };
  for (const config::HeaderOperations* level : levels) {
    if (level == nullptr) continue;
    for (const std::string& raw : level->remove) {
      std::string name = toLower(raw);
      if (auto e = istio::headerOpNameError("remove", name); !e.empty()) return std::unexpected("remove[" + raw + "]: " + e);
      eraseEntries(name);
      addDrop(name);
    }
    for (const auto& [raw, value] : level->set) {
      std::string name = toLower(raw);
      if (auto e = istio::headerOpNameError("set", name); !e.empty()) return std::unexpected("set[" + raw + "]: " + e);
      auto t = istio::HeaderTemplate::parse(value);
      if (!t) return std::unexpected("set[" + raw + "]: " + t.error());
      if (!t->dynamic()) {
        if (staticEmpty(*t)) continue;  // an empty set changes nothing, as in Envoy
        eraseEntries(name);
        addDrop(name);
      }
      // A dynamic set only replaces what came before when it renders
      // non-empty; Rendered decides that per request.
      m.entries_.push_back(Entry{std::move(name), std::move(*t), true});
    }
    for (const auto& [raw, value] : level->add) {
      std::string name = toLower(raw);
      if (auto e = istio::headerOpNameError("add", name); !e.empty()) return std::unexpected("add[" + raw + "]: " + e);
      auto t = istio::HeaderTemplate::parse(value);
      if (!t) return std::unexpected("add[" + raw + "]: " + t.error());
      if (!t->dynamic() && staticEmpty(*t)) continue;  // an empty value is never added
      m.entries_.push_back(Entry{std::move(name), std::move(*t), false});
    }
  }
  return m;
}

HeaderMutation::Rendered HeaderMutation::render(const istio::HeaderContext& ctx) const {
  Rendered r;
  r.m_ = this;
  bool anyDynamic = std::any_of(entries_.begin(), entries_.end(), [](const Entry& e) { return e.value.dynamic(); });
  if (!anyDynamic) return r;  // literals are copied straight from the templates
  r.values_.resize(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].value.dynamic()) entries_[i].value.render(ctx, r.values_[i]);
  }
  return r;
}

bool HeaderMutation::Rendered::drops(std::string_view name) const {
  if (m_ == nullptr) return false;
  for (const std::string& d : m_->drop_) {
    if (http::iequals(d, name)) return true;
  }
  for (size_t i = 0; i < m_->entries_.size(); ++i) {
    const Entry& e = m_->entries_[i];
    if (e.set && e.value.dynamic() && !values_[i].empty() && http::iequals(e.name, name)) return true;
  }
  return false;
}

void HeaderMutation::Rendered::applyTo(http::HeaderMap& headers) const {
  if (m_ == nullptr) return;
  for (const std::string& d : m_->drop_) headers.remove(d);
  for (size_t i = 0; i < m_->entries_.size(); ++i) {
    const Entry& e = m_->entries_[i];
    if (e.set && e.value.dynamic() && !values_[i].empty()) headers.remove(e.name);
  }
  for (size_t i = 0; i < m_->entries_.size(); ++i) {
    const Entry& e = m_->entries_[i];
    if (!liveEntry(m_->entries_, values_, i)) continue;
    if (e.value.dynamic()) {
      headers.addCopy(e.name, values_[i]);
    } else {
      headers.add(e.name, e.value.literal());
    }
  }
}

std::expected<PathRewrite, std::string> PathRewrite::compile(const config::HTTPRewrite& spec) {
  PathRewrite r;
  r.uri_ = spec.uri;
  r.authority_ = spec.authority;
  if (spec.uriRegexRewrite) {
    if (!r.uri_.empty()) return std::unexpected("only one of uri or uriRegexRewrite may be set");
    const config::RegexRewrite& rr = *spec.uriRegexRewrite;
    std::shared_ptr<const re2::RE2> re = rr.regex;
    if (!re) {
      RE2::Options opt;
      opt.set_log_errors(false);
      re = std::make_shared<const re2::RE2>(rr.match, opt);
    }
    if (!re->ok()) return std::unexpected("uriRegexRewrite.match: invalid regex \"" + rr.match + "\": " + re->error());
    std::string err;
    if (!re->CheckRewriteString(rr.rewrite, &err))
      return std::unexpected("uriRegexRewrite.rewrite: " + err);
    r.regex_ = std::move(re);
    r.substitution_ = rr.rewrite;
  }
  return r;
}

std::optional<std::string> PathRewrite::rewritePath(std::string_view path, const CompiledMatch* matched) const {
  std::string_view bare = pathWithoutQuery(path);
  std::string_view query = path.substr(bare.size());
  std::string out;
  if (regex_) {
    out.assign(bare);
    if (RE2::GlobalReplace(&out, *regex_, substitution_) == 0) return std::nullopt;
  } else if (!uri_.empty()) {
    const StringMatcher* um = matched != nullptr ? matched->uri() : nullptr;
    size_t replaced = 1;  // a route without a uri condition matches the prefix "/"
    if (um != nullptr && um->kind == config::StringMatch::Kind::Prefix) {
      replaced = um->value.size();
    } else if (um != nullptr && (um->kind == config::StringMatch::Kind::Exact ||
                                 um->kind == config::StringMatch::Kind::Regex)) {
      replaced = bare.size();
    } else if (bare.empty() || bare.front() != '/') {
      return std::nullopt;  // "*" and the like have no prefix to replace
    }
    if (replaced > bare.size()) return std::nullopt;
    out.reserve(uri_.size() + path.size() - replaced);
    out.append(uri_).append(bare.substr(replaced));
  } else {
    return std::nullopt;
  }
  out.append(query);
  if (out == path) return std::nullopt;
  return out;
}

}  // namespace sluice::route
