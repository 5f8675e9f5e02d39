#include "proxy/stream.h"

#include <new>
#include <vector>

namespace sluice::proxy {

namespace {
// Blocks kept per thread: a worker has one stream per connection with a
// request in flight; more than this many freed at once go back to malloc.
constexpr size_t kKeepFree = 256;

struct FreeList {
  std::vector<void*> blocks;
  ~FreeList() {
    for (void* p : blocks) ::operator delete(p);
  }
};
thread_local FreeList tFree;
}  // namespace

void* Stream::operator new(size_t size) {
  if (size == sizeof(Stream) && !tFree.blocks.empty()) {
    void* p = tFree.blocks.back();
    tFree.blocks.pop_back();
    return p;
  }
  return ::operator new(size);
}

void Stream::operator delete(void* p, size_t size) {
  if (size == sizeof(Stream) && tFree.blocks.size() < kKeepFree) {
    tFree.blocks.push_back(p);
    return;
  }
  ::operator delete(p);
}

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
  headers = http::HeaderMap(std::move(head.headers));
  head.headers.clear();
}

}  // namespace sluice::proxy
