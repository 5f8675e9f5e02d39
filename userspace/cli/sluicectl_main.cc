// sluicectl: offline checks and inspection of Istio YAML as Sluice reads it.
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bpf/datapath.h"
#include "cli/mesh.h"
#include "config/loader.h"
#include "route/table.h"
#include "version.h"

namespace {

namespace fs = std::filesystem;
using sluice::config::ConfigError;

int printErrors(const std::vector<ConfigError>& errs) {
  for (const auto& e : errs) fprintf(stderr, "%s\n", e.str().c_str());
  fprintf(stderr, "%zu error(s)\n", errs.size());
  return 1;
}

// Validates and compiles a directory exactly as sluiced would.
int analyze(const std::string& dir) {
  auto loaded = sluice::config::loadDirectory(dir);
  if (!loaded) return printErrors(loaded.error());
  for (const auto& w : loaded->warnings) fprintf(stderr, "warning: %s\n", w.c_str());
  size_t n = loaded->resources.virtualServices.size() + loaded->resources.destinationRules.size() +
             loaded->resources.serviceEntries.size() + loaded->resources.workloadEntries.size() +
             loaded->resources.gateways.size() + loaded->resources.envoyFilters.size() +
             loaded->resources.rateLimitDomains.size() + loaded->resources.kubeServices.size() +
             loaded->resources.endpointSlices.size() + loaded->resources.pods.size();
  auto snap = sluice::route::compile(std::move(loaded->resources), 1);
  if (!snap) return printErrors(snap.error());
  for (const auto& w : (*snap)->warnings) fprintf(stderr, "warning: %s\n", w.c_str());
  printf("%s: %zu resources, no errors\n", dir.c_str(), n);
  return 0;
}

int routes(const std::string& dir) {
  auto loaded = sluice::config::loadDirectory(dir);
  if (!loaded) return printErrors(loaded.error());
  auto snap = sluice::route::compile(std::move(loaded->resources), 1);
  if (!snap) return printErrors(snap.error());
  for (const auto& vh : (*snap)->virtualHosts) {
    printf("%s\n", vh->name.c_str());
    for (const auto& r : vh->routes) {
      printf("  route %s%s\n", r.name.c_str(), r.matches.empty() ? " (match all)" : "");
      for (const auto& wc : r.clusters) {
        printf("    -> %s weight %u/%lu, %zu endpoint(s)\n", wc.cluster->name.c_str(), wc.weight,
               static_cast<unsigned long>(r.totalWeight), wc.cluster->endpoints.size());
      }
      // The actions, Istio's default retry policy included: what a request
      // on this route will go through.
      std::string actions = "retries " + std::to_string(r.retry.numRetries);
      if (r.retry.perTryTimeoutNs) actions += " (per try " + std::to_string(r.retry.perTryTimeoutNs / 1'000'000) + "ms)";
      if (r.retry.idempotentOnly) actions += " idempotent-only";
      if (r.timeout && r.timeout->count() > 0) actions += ", timeout " + std::to_string(r.timeout->count() / 1'000'000) + "ms";
      if (r.rewrite) actions += ", rewrite";
      if (r.cors) actions += ", cors";
      if (r.fault && r.fault->hasDelay()) actions += ", fault delay";
      if (r.fault && r.fault->hasAbort()) actions += ", fault abort";
      for (const auto& m : r.mirrors) {
        char pct[32];
        snprintf(pct, sizeof(pct), " %.4g%%", m.ppm / 10'000.0);
        actions += ", mirror " + (m.cluster ? m.cluster->name : std::string("?")) + pct;
      }
      if (r.spec && r.spec->redirect) actions += ", redirect";
      if (r.spec && r.spec->directResponse) actions += ", direct response";
      printf("    actions: %s\n", actions.c_str());
    }
  }
  return 0;
}

// Validates FILE together with what DIR already holds (on a scratch copy of
// DIR), then moves it into DIR atomically, so a watching sluiced never sees a
// half-written or rejected file.
int applyFile(const std::string& file, const std::string& dir) {
  std::ifstream in(file);
  if (!in) {
    fprintf(stderr, "cannot read %s\n", file.c_str());
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  fs::path name = fs::path(file).filename();
  std::error_code ec;
  char tmpl[] = "/tmp/sluicectl-apply-XXXXXX";
  if (!mkdtemp(tmpl)) {
    fprintf(stderr, "cannot create a scratch directory: %s\n", strerror(errno));
    return 1;
  }
  fs::path scratch(tmpl);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } cleanup{scratch};
  fs::copy(dir, scratch, fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
  if (ec) {
    fprintf(stderr, "cannot read %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  {
    std::ofstream out(scratch / name);
    out << ss.str();
  }
  auto trial = sluice::config::loadDirectory(scratch.string());
  if (!trial) {
    // Point errors at the user's file, not the scratch copy.
    auto errs = trial.error();
    for (auto& e : errs) {
      if (e.file.rfind(scratch.string(), 0) == 0) {
        e.file = fs::path(e.file).filename() == name ? file : dir + e.file.substr(scratch.string().size());
      }
    }
    return printErrors(errs);
  }
  fs::path target = fs::path(dir) / name;
  fs::path tmp = fs::path(dir) / ("." + name.string() + ".tmp");
  {
    std::ofstream out(tmp);
    out << ss.str();
    if (!out) {
      fprintf(stderr, "cannot write %s\n", tmp.c_str());
      return 1;
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fprintf(stderr, "cannot move into %s: %s\n", target.c_str(), ec.message().c_str());
    return 1;
  }
  printf("applied %s -> %s\n", file.c_str(), target.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluicectl: inspect and change Sluice configuration"};
  app.set_version_flag("--version", SLUICE_VERSION);
  app.require_subcommand(1);
  std::string dir = "/etc/sluice/config";
  std::string file;
  auto* an = app.add_subcommand("analyze", "validate a config directory as sluiced would");
  an->add_option("dir", dir, "config directory")->required();
  auto* ro = app.add_subcommand("routes", "print the compiled virtual hosts, routes and clusters");
  ro->add_option("dir", dir, "config directory")->required();
  auto* ap = app.add_subcommand("apply", "validate a file and move it into the config directory atomically");
  ap->add_option("-f,--file", file, "YAML file")->required();
  ap->add_option("--config-dir", dir, "config directory sluiced watches");
  auto* mesh = app.add_subcommand("mesh", "which cgroups' traffic the kernel captures (needs root)");
  mesh->require_subcommand(1);
  std::string pinDir = sluice::bpf::kDefaultPinDir;
  std::string cgroup;
  mesh->add_option("--bpf-pin-dir", pinDir, "the daemon's --bpf-pin-dir");
  auto* me = mesh->add_subcommand("enable", "capture the processes of a cgroup and its descendants");
  me->add_option("--cgroup", cgroup, "cgroup v2 directory (a pod's, or a namespace's parent)")
      ->required();
  auto* md = mesh->add_subcommand("disable", "stop capturing a cgroup's new connections");
  md->add_option("--cgroup", cgroup, "cgroup v2 directory")->required();
  auto* ms = mesh->add_subcommand("status", "list enabled cgroups");
  auto* mp = mesh->add_subcommand("prune", "disable enabled ids whose cgroup is gone (deleted pods)");
  std::string cgroupRoot;
  mesh->add_option("--cgroup-root", cgroupRoot,
                   "where the host's cgroup2 tree is mounted (default: the first cgroup2 mount)");
  for (auto* sub : {me, md, ms, mp}) sub->fallthrough();  // mesh options after the verb too
  CLI11_PARSE(app, argc, argv);
  if (*me) return sluice::cli::meshEnable(cgroup, pinDir);
  if (*md) return sluice::cli::meshDisable(cgroup, pinDir);
  if (*ms) return sluice::cli::meshStatus(pinDir, cgroupRoot);
  if (*mp) return sluice::cli::meshPrune(pinDir, cgroupRoot);
  if (*an) return analyze(dir);
  if (*ro) return routes(dir);
  if (*ap) return applyFile(file, dir);
  return 2;
}
