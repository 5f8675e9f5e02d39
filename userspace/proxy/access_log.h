// Envoy/Istio-style text access log. Each worker formats lines into its own
// buffer and appends them to the shared file in batches (O_APPEND keeps whole
// writes together).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace sluice::proxy {

class AccessLog {
 public:
  // path "-" means stdout.
  static std::unique_ptr<AccessLog> open(const std::string& path, std::string* error);
  ~AccessLog();
  void write(std::string_view batch);

 private:
  explicit AccessLog(int fd, bool owned) : fd_(fd), owned_(owned) {}
  int fd_;
  bool owned_;
};

}  // namespace sluice::proxy
