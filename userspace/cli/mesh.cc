#include "cli/mesh.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <system_error>
#include <vector>

#include "bpf/cgroup.h"
#include "bpf/datapath.h"

namespace sluice::cli {
namespace {

namespace fs = std::filesystem;

// id -> path for every cgroup under the cgroup2 mount, so status can name
// what it lists. Bounded: a host has thousands of cgroups, not millions.
std::map<std::uint64_t, std::string> cgroupPaths(const std::string& mount) {
  std::map<std::uint64_t, std::string> out;
  std::error_code ec;
  if (auto id = bpf::cgroupIdOfPath(mount)) out[*id] = mount;
  fs::recursive_directory_iterator it(mount, fs::directory_options::skip_permission_denied, ec);
  std::size_t seen = 0;
  for (; !ec && it != fs::recursive_directory_iterator() && seen < 200000; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    ++seen;
    if (auto id = bpf::cgroupIdOfPath(it->path().string())) out[*id] = it->path().string();
  }
  return out;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "sluicectl mesh: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int meshEnable(const std::string& cgroupPath, const std::string& pinDir) {
  auto id = bpf::cgroupIdOfPath(cgroupPath);
  if (!id) return fail(id.error());
  auto m = bpf::EnabledCgroups::open(pinDir, /*create=*/true);
  if (!m) return fail(m.error());
  if (auto r = m->enable(*id); !r) return fail(r.error());
  std::printf("enabled %s (cgroup id %llu): its processes' connections to service VIPs are "
              "captured\n",
              cgroupPath.c_str(), static_cast<unsigned long long>(*id));
  return 0;
}

int meshDisable(const std::string& cgroupPath, const std::string& pinDir) {
  auto id = bpf::cgroupIdOfPath(cgroupPath);
  if (!id) return fail(id.error());
  auto m = bpf::EnabledCgroups::open(pinDir, /*create=*/false);
  if (!m) return fail(m.error());
  auto r = m->disable(*id);
  if (!r) return fail(r.error());
  std::printf("%s %s (cgroup id %llu)\n", *r ? "disabled" : "was not enabled:",
              cgroupPath.c_str(), static_cast<unsigned long long>(*id));
  return 0;
}

namespace {
std::expected<std::string, std::string> rootOrMount(const std::string& cgroupRoot) {
  if (!cgroupRoot.empty()) return cgroupRoot;
  return bpf::findCgroup2Mount();
}
}  // namespace

int meshStatus(const std::string& pinDir, const std::string& cgroupRoot) {
  auto m = bpf::EnabledCgroups::open(pinDir, /*create=*/false);
  if (!m) return fail(m.error());
  auto ids = m->list();
  if (!ids) return fail(ids.error());
  std::printf("pin dir: %s\n", pinDir.c_str());
  if (ids->empty()) {
    std::printf("no cgroup enabled\n");
    return 0;
  }
  std::map<std::uint64_t, std::string> paths;
  if (auto root = rootOrMount(cgroupRoot)) paths = cgroupPaths(*root);
  for (std::uint64_t id : *ids) {
    auto it = paths.find(id);
    std::printf("enabled  %-60s id %llu\n",
                it == paths.end() ? "(cgroup no longer exists)" : it->second.c_str(),
                static_cast<unsigned long long>(id));
  }
  return 0;
}

int meshPrune(const std::string& pinDir, const std::string& cgroupRoot) {
  auto root = rootOrMount(cgroupRoot);
  if (!root) return fail(root.error());
  auto m = bpf::EnabledCgroups::open(pinDir, /*create=*/false);
  if (!m) return fail(m.error());
  auto ids = m->list();
  if (!ids) return fail(ids.error());
  std::map<std::uint64_t, std::string> paths = cgroupPaths(*root);
  std::vector<std::uint64_t> gone;
  for (std::uint64_t id : *ids)
    if (!paths.contains(id)) gone.push_back(id);
  // Looking at the wrong tree (a pod's own cgroup namespace, say) would make
  // every entry look stale: refuse rather than disable everything.
  if (!ids->empty() && gone.size() == ids->size())
    return fail("none of the " + std::to_string(ids->size()) + " enabled cgroups exists under " +
                *root + "; refusing to prune them all (wrong --cgroup-root?)");
  for (std::uint64_t id : gone) {
    if (auto r = m->disable(id); !r) return fail(r.error());
    std::printf("pruned cgroup id %llu (its cgroup no longer exists)\n",
                static_cast<unsigned long long>(id));
  }
  std::printf("%zu pruned, %zu enabled\n", gone.size(), ids->size() - gone.size());
  return 0;
}

}  // namespace sluice::cli
