// Live TLS credentials: one slot per distinct spec (a Gateway server's, or
// an upstream cluster's), loaded when first asked for and reloaded when its
// files change (a rotated certificate serves new handshakes within a poll
// interval; connections already open keep the context they started with).
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

// What a compiled Gateway server or cluster holds: the context new
// handshakes use.
template <class Spec, class Ctx>
class Credentials {
 public:
  explicit Credentials(Spec spec) : spec_(std::move(spec)) {}
  // Null while the files do not load (error() says why).
  std::shared_ptr<const Ctx> current() const { return ctx_.load(std::memory_order_acquire); }
  std::string error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  const Spec& spec() const { return spec_; }
  // The files read, credential names resolved (for messages).
  Files files() const {
    std::lock_guard lock(mu_);
    return files_;
  }

 private:
  friend class CredentialStore;
  const Spec spec_;
  std::atomic<std::shared_ptr<const Ctx>> ctx_;
  mutable std::mutex mu_;
  std::string error_;
  Files files_;
  std::string stamp_;  // identity of the files last read (inode, size, mtime)
};
using ServerCredentials = Credentials<ServerSpec, ServerContext>;
using ClientCredentials = Credentials<ClientSpec, ClientContext>;

class CredentialStore {
 public:
  // `credentialsDir`: where credentialName folders are (--credentials-dir).
  explicit CredentialStore(std::string credentialsDir) : dir_(std::move(credentialsDir)) {}
  ~CredentialStore() { stop(); }
  CredentialStore(const CredentialStore&) = delete;
  CredentialStore& operator=(const CredentialStore&) = delete;

  // The slot for `spec`, shared by everything asking for the same one,
  // loaded now if new (check error() on it).
  std::shared_ptr<ServerCredentials> get(const ServerSpec& spec);
  std::shared_ptr<ClientCredentials> get(const ClientSpec& spec);
  // Reloads the slots whose files changed (or appeared); drops slots no
  // one holds. Returns how many contexts were replaced.
  size_t poll();
  // poll() on a thread every `intervalMs` until stop().
  void start(int intervalMs);
  void stop();
  const std::string& directory() const { return dir_; }

 private:
  Files resolve(const ServerSpec& spec) const;
  Files resolve(const ClientSpec& spec) const;
  // Reads the files when their stamp changed; false when nothing changed.
  template <class Spec, class Ctx>
  bool refresh(Credentials<Spec, Ctx>& slot);
  template <class Spec, class Ctx>
  std::shared_ptr<Credentials<Spec, Ctx>> slotFor(std::map<std::string, std::shared_ptr<Credentials<Spec, Ctx>>>& m,
                                                 const Spec& spec);
  template <class Slots>
  size_t pollAll(Slots& m);

  const std::string dir_;
  std::mutex mu_;  // the maps
  std::mutex refreshMu_;  // serialises refresh()
  std::map<std::string, std::shared_ptr<ServerCredentials>> servers_;
  std::map<std::string, std::shared_ptr<ClientCredentials>> clients_;
  std::thread thread_;
  std::mutex runMu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace sluice::tls
