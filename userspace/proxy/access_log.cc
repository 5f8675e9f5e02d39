#include "proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace sluice::proxy {

std::unique_ptr<AccessLog> AccessLog::open(const std::string& path, std::string* error) {
  if (path == "-") return std::unique_ptr<AccessLog>(new AccessLog(STDOUT_FILENO, false));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (error) *error = "cannot open access log " + path + ": " + strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<AccessLog>(new AccessLog(fd, true));
}

AccessLog::~AccessLog() {
  if (owned_) ::close(fd_);
}

void AccessLog::write(std::string_view batch) {
  while (!batch.empty()) {
    ssize_t n = ::write(fd_, batch.data(), batch.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a full disk must not stop the proxy; lines are dropped
    }
    batch.remove_prefix(size_t(n));
  }
}

}  // namespace sluice::proxy
