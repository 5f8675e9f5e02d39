// libFuzzer target for the first bytes a TLS gateway port reads from a
// stranger: the ClientHello parser. Besides memory safety it checks the
// parser's promises: an accepted hello lies within the input, and a
// prefix of an accepted hello is never judged invalid (a client whose
// hello arrives in pieces is not refused).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tls/client_hello.h"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  using Status = sluice::tls::ClientHello::Status;
  const sluice::tls::ClientHello h = sluice::tls::parseClientHello(in);
  if (h.status != Status::kOk) return 0;
  check(h.bytes > 0 && h.bytes <= size);
  check(h.serverName.size() < 65536);
  for (size_t cut = 0; cut < h.bytes; cut += 1 + cut / 8) {
    check(sluice::tls::parseClientHello(in.substr(0, cut)).status == Status::kNeedMore);
  }
  return 0;
}
