// sluice-upstream: the HTTP/1.1 test server used by tests, the demo and the
// benchmarks. Flags only; the server lives in server.cc.
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "core/stop_signals.h"
#include "istio/duration.h"
#include "upstream_server/server.h"
#include "version.h"

int main(int argc, char** argv) {
  sluice::upstream_server::ServerOptions options;
  CLI::App app{"sluice-upstream: a small, fast HTTP/1.1 test server"};
  app.set_version_flag("--version", SLUICE_VERSION);
  app.add_option("--listen", options.listen, "ADDR:PORT to listen on")->required();
  app.add_option("--name", options.name, "name echoed in every response")->required();
  app.add_option("--threads", options.threads, "worker threads, each with its own SO_REUSEPORT listener")
      ->check(CLI::Range(1, 256));
  app.add_option("--status", options.status, "status of answers without a status control (default 200)")
      ->check(CLI::Range(200, 599));
  std::string delay;
  app.add_option("--delay", delay, "delay of answers without a delay control, e.g. 2s (default none)");
  CLI11_PARSE(app, argc, argv);
  if (!delay.empty()) {
    auto d = sluice::istio::parseDuration(delay);
    if (!d || d->count() < 0) {
      std::fprintf(stderr, "sluice-upstream: --delay: not a duration: %s\n", delay.c_str());
      return 2;
    }
    options.delay = *d;
  }

  // Block the stop signals before any thread starts so that every worker
  // inherits the mask and only sigwait() below sees them.
  sigset_t stopSignals = sluice::core::blockStopSignals();
  // Benchmarks open many connections; take every descriptor we are allowed.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  sluice::upstream_server::UpstreamServer server(options);
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "sluice-upstream: %s\n", r.error().c_str());
    return 1;
  }
  std::fprintf(stderr, "sluice-upstream %s listening on %s\n", options.name.c_str(),
               server.boundAddress().c_str());
  int sig = 0;
  sigwait(&stopSignals, &sig);
  server.stop();
  return 0;
}
