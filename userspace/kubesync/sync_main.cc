// sluice-kube-sync: mirrors the Kubernetes objects sluiced reads (Services,
// EndpointSlices, Pods, Istio networking resources) from the API server into
// a directory sluiced watches. One reflector thread per kind, one writer.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <set>
#include <thread>

#include "core/stop_signals.h"
#include "kubesync/api_client.h"
#include "kubesync/mirror.h"
#include "kubesync/reflector.h"
#include "version.h"

int main(int argc, char** argv) {
  using namespace sluice::kubesync;
  CLI::App app{"sluice-kube-sync: mirror Kubernetes Services, EndpointSlices, Pods and Istio resources "
               "into sluiced's config directory"};
  app.set_version_flag("--version", SLUICE_VERSION);
  std::string out, apiServer, tokenFile, caFile, ns, kindsFlag, istioVersion = "v1";
  int quietMs = 50, maxDelayMs = 500;
  app.add_option("--out", out, "directory to write into (sluiced's --config-dir or a folder below it)")
      ->required();
  app.add_option("--api-server", apiServer,
                 "http(s)://HOST:PORT (default: in-cluster, from KUBERNETES_SERVICE_HOST/PORT and the "
                 "service account)");
  app.add_option("--token-file", tokenFile, "bearer token file (default in-cluster: the service account's)");
  app.add_option("--ca-file", caFile, "CA bundle for an https API server (default in-cluster: the service account's)");
  app.add_option("--namespace", ns, "mirror one namespace only (default: all)");
  app.add_option("--kinds", kindsFlag,
                 "comma-separated subset of services,endpointslices,pods,virtualservices,destinationrules,"
                 "gateways,serviceentries,workloadentries,envoyfilters (default: all)");
  app.add_option("--istio-api-version", istioVersion, "networking.istio.io version to read: v1 or v1beta1")
      ->check(CLI::IsMember({"v1", "v1beta1"}));
  app.add_option("--quiet-ms", quietMs, "write a burst of changes once they pause this long")
      ->check(CLI::Range(0, 10000));
  app.add_option("--max-delay-ms", maxDelayMs, "but never hold a change longer than this")
      ->check(CLI::Range(0, 60000));
  CLI11_PARSE(app, argc, argv);

  auto server = apiServer.empty() ? ApiServer::inCluster() : ApiServer::parse(apiServer);
  if (!server) {
    fprintf(stderr, "sluice-kube-sync: %s\n", server.error().c_str());
    return 2;
  }
  if (!tokenFile.empty()) server->tokenFile = tokenFile;
  if (!caFile.empty()) server->caFile = caFile;
  ApiClient api(*server);
  if (!api.setupError().empty()) {
    fprintf(stderr, "sluice-kube-sync: %s\n", api.setupError().c_str());
    return 2;
  }

  std::vector<Kind> kinds = mirroredKinds(istioVersion);
  if (!kindsFlag.empty()) {
    std::set<std::string> want;
    for (size_t start = 0; start <= kindsFlag.size();) {
      size_t comma = kindsFlag.find(',', start);
      if (comma == std::string::npos) comma = kindsFlag.size();
      want.insert(kindsFlag.substr(start, comma - start));
      start = comma + 1;
    }
    std::vector<Kind> chosen;
    for (const Kind& k : kinds)
      if (want.erase(k.dir)) chosen.push_back(k);
    if (!want.empty()) {
      fprintf(stderr, "sluice-kube-sync: --kinds: unknown kind %s\n", want.begin()->c_str());
      return 2;
    }
    kinds = std::move(chosen);
  }

  Mirror mirror(out, std::chrono::milliseconds(quietMs), std::chrono::milliseconds(maxDelayMs));
  if (auto r = mirror.scan(); !r) {
    fprintf(stderr, "sluice-kube-sync: %s\n", r.error().c_str());
    return 1;
  }

  // Stop signals go to sigwait below only.
  sigset_t stopSignals = sluice::core::blockStopSignals();

  fprintf(stderr, "sluice-kube-sync %s: %s -> %s (%zu kinds%s)\n", SLUICE_VERSION, server->url().c_str(),
          out.c_str(), kinds.size(), ns.empty() ? ", all namespaces" : (", namespace " + ns).c_str());
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Reflector>> reflectors;
  std::vector<std::thread> threads;
  threads.emplace_back([&] { mirror.run(stop); });
  for (const Kind& k : kinds) {
    reflectors.push_back(std::make_unique<Reflector>(api, k, ns, mirror));
    threads.emplace_back([&, r = reflectors.back().get()] { r->run(stop); });
  }
  int sig = 0;
  sigwait(&stopSignals, &sig);
  stop = true;
  for (auto& t : threads) t.join();
  auto c = mirror.counters();
  fprintf(stderr, "sluice-kube-sync: stopped (%lu files written, %lu removed in %lu batches)\n",
          static_cast<unsigned long>(c.written), static_cast<unsigned long>(c.removed),
          static_cast<unsigned long>(c.batches));
  return 0;
}
