// Live TLS server credentials: one slot per distinct ServerSpec, loaded
// when first asked for and reloaded when its files change (a rotated
// certificate serves new handshakes within a poll interval; connections
// already open keep the context they started with).
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tls/context.h"

namespace sluice::tls {

// What a compiled Gateway server holds: the context new handshakes use.
class ServerCredentials {
 public:
  explicit ServerCredentials(ServerSpec spec) : spec_(std::move(spec)) {}
  // Null while the files do not load (error() says why).
  std::shared_ptr<const ServerContext> current() const { return ctx_.load(std::memory_order_acquire); }
  std::string error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  const ServerSpec& spec() const { return spec_; }
  // The files read, credential names resolved (for messages).
  Files files() const {
    std::lock_guard lock(mu_);
    return files_;
  }

 private:
  friend class CredentialStore;
  const ServerSpec spec_;
  std::atomic<std::shared_ptr<const ServerContext>> ctx_;
  mutable std::mutex mu_;
  std::string error_;
  Files files_;
  std::string stamp_;  // identity of the files last read (inode, size, mtime)
};

class CredentialStore {
 public:
  // `credentialsDir`: where credentialName folders are (--credentials-dir).
  explicit CredentialStore(std::string credentialsDir) : dir_(std::move(credentialsDir)) {}
  ~CredentialStore() { stop(); }
  CredentialStore(const CredentialStore&) = delete;
  CredentialStore& operator=(const CredentialStore&) = delete;

  // The slot for `spec`, shared by every server asking for the same one,
  // loaded now if new (check error() on it).
  std::shared_ptr<ServerCredentials> get(const ServerSpec& spec);
  // Reloads the slots whose files changed (or appeared); drops slots no
  // server holds. Returns how many contexts were replaced.
  size_t poll();
  // poll() on a thread every `intervalMs` until stop().
  void start(int intervalMs);
  void stop();
  const std::string& directory() const { return dir_; }

 private:
  Files resolve(const ServerSpec& spec) const;
  // Reads the files when their stamp changed; false when nothing changed.
  bool refresh(ServerCredentials& slot);

  const std::string dir_;
  std::mutex mu_;  // slots_
  std::map<std::string, std::shared_ptr<ServerCredentials>> slots_;
  std::thread thread_;
  std::mutex runMu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace sluice::tls
