// The stop signals of a process that waits for them on its main thread:
// call blockStopSignals() before starting any thread, so every thread
// inherits the mask and only sigwait() on the returned set sees them.
#pragma once

#include <signal.h>

#include <initializer_list>

namespace sluice::core {

// Blocks SIGTERM, SIGINT and `extra` in the calling thread and ignores
// SIGPIPE (a peer that went away is an error return, not a death).
inline sigset_t blockStopSignals(std::initializer_list<int> extra = {}) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  for (int s : extra) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

}  // namespace sluice::core
