#include "proxy/engine.h"

#include <malloc.h>

#include "proxy/access_log.h"
#include "proxy/worker.h"

#include <chrono>

#include "core/clock.h"

namespace sluice::proxy {

Engine::Engine(EngineOptions opts) : opts_(std::move(opts)) {}

Engine::~Engine() {
  stop();
  join();
}

std::expected<void, std::string> Engine::start() {
  if (!opts_.accessLogPath.empty()) {
    std::string err;
    accessLog_ = AccessLog::open(opts_.accessLogPath, &err);
    if (!accessLog_) return std::unexpected(err);
  }
  int n = opts_.workers > 0 ? opts_.workers : 1;
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>(*this, i);
    if (auto r = w->init(opts_.outbound); !r) return std::unexpected(r.error());
    registry_.add(&w->stats());
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) threads_.emplace_back([wp = w.get()] { wp->run(); });
  // Ejections are immediate (made by the worker that sees the failure);
  // returns are this thread's job. 20 ms bounds how late past its interval
  // a host comes back.
  sweeper_ = std::thread([this] {
    core::SteadyClock clock;
    for (uint64_t tick = 0; !stopping(); ++tick) {
      health_.sweep(clock.nowNs());
      if (opts_.maxHeapBytes && tick % 5 == 0) sampleHeap();
      if (uint64_t at = trimAtNs_.load(std::memory_order_relaxed); at && clock.nowNs() >= at &&
          trimAtNs_.compare_exchange_strong(at, 0, std::memory_order_relaxed)) {
        // The snapshot a publish replaced is freed by now (workers adopt
        // the new one within 50 ms): give its pages back to the kernel, or
        // RSS keeps the high-water mark of two snapshots at once.
        malloc_trim(0);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  return {};
}

// malloc's bytes in use (small blocks and mmapped ones): what the daemon
// itself holds, which RSS would blur with freed pages not yet returned.
void Engine::sampleHeap() {
  struct mallinfo2 mi = mallinfo2();
  const bool over = mi.uordblks + mi.hblkhd > opts_.maxHeapBytes;
  overloaded_.store(over, std::memory_order_relaxed);
  if (over) shedEpoch_.fetch_add(1, std::memory_order_relaxed);
}

void Engine::publish(std::shared_ptr<const route::Snapshot> s) {
  Published p;
  if (s) {
    p.health = health_.adopt(*s, opts_.onEjection);
    p.limits = limits_.adopt(*s);
  }
  p.snapshot = std::move(s);
  {
    std::lock_guard lock(snapMu_);
    published_ = std::move(p);
  }
  version_.fetch_add(1, std::memory_order_acq_rel);
  trimAtNs_.store(core::SteadyClock().nowNs() + kTrimAfterPublishNs, std::memory_order_relaxed);
}

Published Engine::published() const {
  std::lock_guard lock(snapMu_);
  return published_;
}

std::optional<ConnectionSlot> Engine::admit() {
  uint64_t now = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (opts_.maxConnections && now > opts_.maxConnections) {
    connections_.fetch_sub(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  return ConnectionSlot(&connections_);
}

void Engine::wakeWorker(int index) {
  if (index >= 0 && size_t(index) < workers_.size()) workers_[size_t(index)]->wake();
}

void Engine::join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  if (sweeper_.joinable()) sweeper_.join();
  // Workers (and their stats shards) stay until the engine is destroyed:
  // the admin thread may still read them.
}

std::unordered_map<std::string, uint64_t> Engine::activeRequests() const {
  std::unordered_map<std::string, uint64_t> out;
  for (const auto& w : workers_) w->collectActive(out);
  return out;
}

}  // namespace sluice::proxy
