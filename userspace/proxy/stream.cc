#include "proxy/stream.h"

namespace sluice::proxy {

void Stream::adoptHead(const http::RequestHead& parsed, const char* base) {
  headBytes.assign(base, parsed.headBytes);
  head = parsed;
  const char* end = base + parsed.headBytes;
  const char* to = headBytes.data();
  // Views into the parsed bytes move to the copy; any other (a constant
  // the parser chose) stays as it is.
  auto rebase = [&](std::string_view& v) {
    if (v.data() >= base && v.data() < end) v = std::string_view(to + (v.data() - base), v.size());
  };
  rebase(head.method);
  rebase(head.target);
  rebase(head.host);
  for (http::Header& h : head.headers) {
    rebase(h.name);
    rebase(h.value);
  }
}

}  // namespace sluice::proxy
