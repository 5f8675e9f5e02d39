#include "http/header_map.h"

#include <algorithm>
#include <cstring>

namespace sluice::http {

void HeaderMap::addCopy(std::string_view name, std::string value) {
  owned_.push_back(std::make_unique<std::string>(std::move(value)));
  fields_.push_back(Field{name, *owned_.back()});
}

size_t HeaderMap::remove(std::string_view name) {
  const size_t before = fields_.size();
  std::erase_if(fields_, [&](const Field& f) { return iequals(f.name, name); });
  return before - fields_.size();
}

const HeaderMap::Field* HeaderMap::find(std::string_view name) const {
  for (const Field& f : fields_) {
    if (iequals(f.name, name)) return &f;
  }
  return nullptr;
}

void HeaderMap::appendHttp1(std::string& out) const {
  // One size computation and plain copies: this runs twice per request.
  const size_t old = out.size(), n = http1Size();
  // The bytes written are counted from what was there before, not from the
  // callback's size argument (libstdc++ 12 may pass more than was asked).
  out.resize_and_overwrite(old + n, [&](char* buf, size_t) {
    char* p = buf + old;
    for (const Field& f : fields_) {
      std::memcpy(p, f.name.data(), f.name.size());
      p += f.name.size();
      *p++ = ':';
      *p++ = ' ';
      std::memcpy(p, f.value.data(), f.value.size());
      p += f.value.size();
      *p++ = '\r';
      *p++ = '\n';
    }
    return old + n;
  });
}

size_t HeaderMap::http1Size() const {
  size_t n = 0;
  for (const Field& f : fields_) n += f.name.size() + f.value.size() + 4;
  return n;
}

}  // namespace sluice::http
