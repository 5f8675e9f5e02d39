// Mirror: desired files -> atomic writes, coalesced (mirror.h).
#include "kubesync/mirror.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace sluice::kubesync {

namespace fs = std::filesystem;

namespace {

uint64_t hashOf(std::string_view s) { return XXH3_64bits(s.data(), s.size()); }

// What desired_ holds for a file whose last write or removal failed: it
// matches no content, so the next put of it writes again.
constexpr uint64_t kUnknown = 0;

// Writes `content` to `path` through a dot-named temporary in the same
// folder (a short name: an object's own can take the whole 255 bytes).
std::string writeAtomically(const fs::path& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return "cannot create " + path.parent_path().string() + ": " + ec.message();
  const fs::path tmp = path.parent_path() / ".sluice-kube-sync.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot write " + tmp.string() + ": " + std::strerror(errno);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string err = "cannot write " + tmp.string() + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return err;
    }
    off += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = "cannot replace " + path.string() + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

}  // namespace

Mirror::Mirror(std::string dir, std::chrono::milliseconds quiet, std::chrono::milliseconds maxDelay)
    : dir_(std::move(dir)), quiet_(quiet), maxDelay_(maxDelay) {}

std::expected<void, std::string> Mirror::scan() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return std::unexpected("cannot create " + dir_ + ": " + ec.message());
  std::lock_guard lock(mu_);
  for (auto it = fs::recursive_directory_iterator(dir_, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (name.starts_with(".")) {
      std::error_code rmEc;
      // A temporary left by a sync that died mid-write.
      if (it->is_regular_file(rmEc) && name.ends_with(".tmp")) fs::remove(p, rmEc);
      if (it->is_directory(rmEc)) it.disable_recursion_pending();  // not ours (a ConfigMap's ..data)
      continue;
    }
    if (!it->is_regular_file() || !name.ends_with(".json")) continue;
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    desired_[fs::relative(p, dir_).string()] = hashOf(ss.str());
  }
  if (ec) return std::unexpected("cannot read " + dir_ + ": " + ec.message());
  return {};
}

void Mirror::put(const std::string& rel, std::string content) {
  std::lock_guard lock(mu_);
  const uint64_t h = hashOf(content);
  auto [it, inserted] = desired_.try_emplace(rel, h);
  if (!inserted && it->second == h) return;  // no change
  it->second = h;
  if (pending_.empty()) firstChange_ = std::chrono::steady_clock::now();
  lastChange_ = std::chrono::steady_clock::now();
  pending_[rel] = std::move(content);
  cv_.notify_all();
}

void Mirror::remove(const std::string& rel) {
  std::lock_guard lock(mu_);
  if (desired_.erase(rel) == 0) return;
  if (pending_.empty()) firstChange_ = std::chrono::steady_clock::now();
  lastChange_ = std::chrono::steady_clock::now();
  pending_[rel] = std::nullopt;
  cv_.notify_all();
}

void Mirror::replaceUnder(const std::string& prefix, const std::map<std::string, std::string>& files) {
  const std::string p = prefix + "/";
  std::vector<std::string> gone;
  {
    std::lock_guard lock(mu_);
    for (const auto& [rel, h] : desired_)
      if (rel.starts_with(p) && !files.contains(rel)) gone.push_back(rel);
  }
  for (const auto& rel : gone) remove(rel);
  for (const auto& [rel, content] : files) put(rel, content);
}

bool Mirror::flush() {
  std::map<std::string, std::optional<std::string>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return true;
  bool ok = true;
  Counters c;
  // A failed write or removal goes back in the queue (unless a newer change
  // of that file came meanwhile), to be tried with the next batch.
  auto retry = [&](const std::string& rel, const std::optional<std::string>& content) {
    ok = false;
    ++c.failures;
    std::lock_guard lock(mu_);
    if (pending_.contains(rel)) return;
    if (pending_.empty()) firstChange_ = lastChange_ = std::chrono::steady_clock::now();
    pending_.emplace(rel, content);
    if (content) desired_[rel] = kUnknown;
  };
  for (const auto& [rel, content] : batch) {
    const fs::path path = fs::path(dir_) / rel;
    if (content) {
      if (std::string err = writeAtomically(path, *content); !err.empty()) {
        fprintf(stderr, "sluice-kube-sync: %s\n", err.c_str());
        retry(rel, content);
        continue;
      }
      ++c.written;
    } else {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        fprintf(stderr, "sluice-kube-sync: cannot remove %s: %s\n", path.c_str(), std::strerror(errno));
        retry(rel, content);
        continue;
      }
      ++c.removed;
    }
  }
  std::lock_guard lock(mu_);
  counters_.written += c.written;
  counters_.removed += c.removed;
  counters_.failures += c.failures;
  ++counters_.batches;
  return ok;
}

void Mirror::run(const std::atomic<bool>& stop) {
  while (!stop) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return !pending_.empty() || stop; });
      if (pending_.empty()) continue;
      // Until the changes pause for `quiet_`, or `maxDelay_` after the first.
      while (!stop) {
        const auto now = std::chrono::steady_clock::now();
        const auto quietAt = lastChange_ + quiet_, capAt = firstChange_ + maxDelay_;
        const auto until = std::min(quietAt, capAt);
        if (now >= until) break;
        cv_.wait_until(lock, until);
      }
    }
    // After a failure (a full disk, say), wait before trying again.
    if (!flush()) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop.load(); });
    }
  }
  flush();
}

Mirror::Counters Mirror::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

}  // namespace sluice::kubesync
