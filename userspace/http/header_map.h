// The headers of one request or response above the codec: an ordered list
// of fields with case-insensitive lookup, what routing reads and what
// header operations, CORS and the router add, set or remove. A codec fills
// one from what it parsed and serialises one into its wire form (HTTP/1.1
// "name: value" lines here; an HTTP/2 codec hands the same fields to HPACK).
//
// Fields are views. A view must outlive the map's last use: the parser's
// views point into the message's own bytes (a stream's copy of its head,
// an upstream response still in its input buffer), literals into compiled
// configuration the request's snapshot keeps alive. A value made on the
// spot goes in with addCopy(), which the map keeps.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace sluice::http {

class HeaderMap {
 public:
  // name as received, or lower case when sluiced adds it; value trimmed.
  using Field = Header;

  HeaderMap() = default;
  HeaderMap(std::initializer_list<Field> fields) : fields_(fields) {}
  // Takes a parsed head's header list (views into its bytes).
  explicit HeaderMap(std::vector<Header>&& parsed) : fields_(std::move(parsed)) {}
  // Gives the list back for its capacity (the next head is parsed into it):
  // fields that viewed addCopy values do not survive, so a caller reuses
  // the storage, never the fields.
  std::vector<Header> takeFields() {
    owned_.clear();
    return std::move(fields_);
  }
  HeaderMap(HeaderMap&&) noexcept = default;
  HeaderMap& operator=(HeaderMap&&) noexcept = default;
  HeaderMap(const HeaderMap&) = delete;
  HeaderMap& operator=(const HeaderMap&) = delete;

  void add(std::string_view name, std::string_view value) {
    if (fields_.size() == fields_.capacity()) [[unlikely]] fields_.reserve(fields_.empty() ? 16 : 2 * fields_.size());
    fields_.push_back(Field{name, value});
  }
  void addCopy(std::string_view name, std::string value);
  // Every field named `name` (any case) goes, then one is added.
  void set(std::string_view name, std::string_view value) {
    remove(name);
    add(name, value);
  }
  // Removes every field named `name` (any case); how many there were.
  size_t remove(std::string_view name);
  // The first field named `name` (any case), or null.
  const Field* find(std::string_view name) const;
  // Its value, or empty when absent.
  std::string_view get(std::string_view name) const {
    const Field* f = find(name);
    return f ? f->value : std::string_view();
  }
  bool has(std::string_view name) const { return find(name) != nullptr; }

  auto begin() const { return fields_.begin(); }
  auto end() const { return fields_.end(); }
  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  void reserve(size_t n) { fields_.reserve(n); }
  void clear() {
    fields_.clear();
    owned_.clear();
  }

  // HTTP/1.1: appends "name: value\r\n" per field, in order.
  void appendHttp1(std::string& out) const;
  // Bytes appendHttp1 writes.
  size_t http1Size() const;

 private:
  std::vector<Header> fields_;
  std::vector<std::unique_ptr<std::string>> owned_;  // backs addCopy values
};

}  // namespace sluice::http
