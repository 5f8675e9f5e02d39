// Owns the configuration life cycle of the daemon: load the directory,
// validate, compile, publish to the engine; on failure keep the last good
// snapshot serving and remember why, for /config_dump and the log.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/loader.h"
#include "proxy/engine.h"
#include "route/table.h"
#include "tls/credential_store.h"

namespace sluice::daemon {

class ConfigManager {
 public:
  // `credentials`: loads and rotates HTTPS servers' certificates (null:
  // HTTPS gateway servers compile without them and refuse handshakes).
  ConfigManager(std::string dir, proxy::Engine& engine, tls::CredentialStore* credentials = nullptr);

  // Loads, compiles and publishes. A file with errors keeps its last good
  // version (or stays out) while the other files apply
  // (config::loadDirectoryIsolated); the errors are logged and kept for
  // /config_dump. Returns false when nothing new was published. Reloads
  // from the watcher thread and from SIGHUP run one at a time.
  bool reload();

  // Called after each successful publish, on the reloading thread (the
  // watcher's or main's), with the snapshot the engine now serves.
  void setOnPublish(std::function<void(const route::Snapshot&)> fn);

  bool loadedOnce() const;
  uint64_t version() const;
  std::string lastError() const;
  std::shared_ptr<const route::Snapshot> snapshot() const;
  // JSON text for /config_dump.
  std::string dumpJson() const;
  // JSON text for /clusters.
  std::string clustersJson() const;

 private:
  std::string dir_;
  proxy::Engine& engine_;
  tls::CredentialStore* credentials_;
  mutable std::mutex mu_;
  std::shared_ptr<const route::Snapshot> snapshot_;
  uint64_t version_ = 0;
  bool loaded_ = false;
  std::string lastError_;
  std::string lastErrorTime_;
  std::string loadedAt_;
  std::function<void(const route::Snapshot&)> onPublish_;  // guarded by mu_
  std::mutex reloadMu_;  // serialises reload(): versions publish in order
  config::GoodFiles goodFiles_;  // what each file serves now; reload() only
  std::vector<std::string> heldBack_, leftOut_;  // guarded by mu_
};

}  // namespace sluice::daemon
