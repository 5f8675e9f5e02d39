#include "http/header_map.h"

#include <algorithm>

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
  for (const Field& f : fields_) out.append(f.name).append(": ").append(f.value).append("\r\n");
}

size_t HeaderMap::http1Size() const {
  size_t n = 0;
  for (const Field& f : fields_) n += f.name.size() + f.value.size() + 4;
  return n;
}

}  // namespace sluice::http
