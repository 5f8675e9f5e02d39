#include "tls/credential_store.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace sluice::tls {
namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// stat() follows symlinks, so a Kubernetes secret volume's `..data` swap
// shows as a new inode.
std::string stampOf(const std::string& path) {
  struct stat st {};
  if (path.empty()) return "-";
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return fmt::format("{}:{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

// Istio's layout for a credential: tls.crt and tls.key, the CA as ca.crt
// beside them or in a "<name>-cacert" secret.
Files credentialFiles(const std::string& dir, const std::string& name, bool wantCa) {
  const std::string base = dir + "/" + name;
  Files f{base + "/tls.crt", base + "/tls.key", ""};
  if (wantCa) {
    if (exists(base + "/ca.crt")) {
      f.ca = base + "/ca.crt";
    } else if (exists(base + "-cacert/ca.crt")) {
      f.ca = base + "-cacert/ca.crt";
    }
  }
  return f;
}

}  // namespace

Files CredentialStore::resolve(const ServerSpec& spec) const {
  if (spec.credentialName.empty()) return {spec.certFile, spec.keyFile, spec.caFile};
  return credentialFiles(dir_, spec.credentialName, spec.mode != ServerSpec::Mode::kSimple);
}

Files CredentialStore::resolve(const ClientSpec& spec) const {
  if (spec.credentialName.empty()) return {spec.certFile, spec.keyFile, spec.caFile};
  Files f = credentialFiles(dir_, spec.credentialName, true);
  if (!spec.mutual) f.cert = f.key = "";  // SIMPLE: the credential's CA only
  return f;
}

template <class Spec, class Ctx>
bool CredentialStore::refresh(Credentials<Spec, Ctx>& slot) {
  // One refresh at a time (the reloading thread and the poller): a slower
  // one can never store an older context over a newer one.
  std::lock_guard serial(refreshMu_);
  if (!slot.spec_.credentialName.empty() && dir_.empty()) {
    std::lock_guard lock(slot.mu_);
    slot.error_ = "credentialName " + slot.spec_.credentialName + ": sluiced has no --credentials-dir to find it in";
    return false;
  }
  const Files files = resolve(slot.spec_);
  const std::string stamp = files.cert + "=" + stampOf(files.cert) + " " + files.key + "=" + stampOf(files.key) +
                            " " + files.ca + "=" + stampOf(files.ca);
  {
    std::lock_guard lock(slot.mu_);
    if (stamp == slot.stamp_) return false;
  }
  auto loaded = Ctx::load(slot.spec_, files);
  std::lock_guard lock(slot.mu_);
  slot.stamp_ = stamp;
  slot.files_ = files;
  if (!loaded) {
    // A half-written rotation (key replaced, certificate not yet) keeps
    // the last good context until the pair is whole again.
    slot.error_ = loaded.error();
    return false;
  }
  slot.error_.clear();
  slot.ctx_.store(*loaded, std::memory_order_release);
  return true;
}

template <class Spec, class Ctx>
std::shared_ptr<Credentials<Spec, Ctx>> CredentialStore::slotFor(
    std::map<std::string, std::shared_ptr<Credentials<Spec, Ctx>>>& m, const Spec& spec) {
  std::shared_ptr<Credentials<Spec, Ctx>> slot;
  {
    std::lock_guard lock(mu_);
    auto& s = m[spec.key()];
    if (!s) s = std::make_shared<Credentials<Spec, Ctx>>(spec);
    slot = s;
  }
  refresh(*slot);
  return slot;
}

std::shared_ptr<ServerCredentials> CredentialStore::get(const ServerSpec& spec) { return slotFor(servers_, spec); }
std::shared_ptr<ClientCredentials> CredentialStore::get(const ClientSpec& spec) { return slotFor(clients_, spec); }

template <class Slots>
size_t CredentialStore::pollAll(Slots& m) {
  std::vector<typename Slots::mapped_type> live;
  {
    std::lock_guard lock(mu_);
    std::erase_if(m, [](const auto& kv) { return kv.second.use_count() == 1; });
    for (const auto& [key, slot] : m) live.push_back(slot);
  }
  size_t replaced = 0;
  for (const auto& slot : live) {
    const bool hadError = !slot->error().empty();
    if (refresh(*slot)) {
      ++replaced;
      const Files f = slot->files();
      fprintf(stderr, "sluiced: tls: reloaded %s\n", (f.cert.empty() ? f.ca : f.cert).c_str());
    } else if (std::string e = slot->error(); !e.empty() && !hadError) {
      fprintf(stderr, "sluiced: tls: %s (keeping the last good certificate, if any)\n", e.c_str());
    }
  }
  return replaced;
}

size_t CredentialStore::poll() { return pollAll(servers_) + pollAll(clients_); }

void CredentialStore::start(int intervalMs) {
  if (thread_.joinable()) return;
  thread_ = std::thread([this, intervalMs] {
    std::unique_lock lock(runMu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(intervalMs), [this] { return stopping_; })) {
      lock.unlock();
      poll();
      lock.lock();
    }
  });
}

void CredentialStore::stop() {
  {
    std::lock_guard lock(runMu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sluice::tls
