#include "proxy/conn_pool.h"

#include <atomic>
#include <vector>

#include "proxy/engine.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"

namespace sluice::proxy {

namespace {
uint64_t workerBit(int index) { return uint64_t(1) << (unsigned(index) % 64); }
}  // namespace

PoolResult ConnPool::newStream(PoolWaiter& w, const route::Endpoint& ep, EndpointState& state,
                               const route::Cluster& cluster,
                               const std::shared_ptr<upstream::ClusterLimits>& limits,
                               upstream::LimitToken& pending, bool first) {
  // An idle connection made the way this cluster connects: plaintext, or
  // TLS with the same client credentials. Two clusters may share an
  // endpoint (and a DestinationRule may just have turned TLS on): a
  // connection of another kind is never handed over.
  for (auto it = state.idle.rbegin(); it != state.idle.rend(); ++it) {
    if ((*it)->sameTransport(cluster.upstream)) return {PoolResult::Kind::Ready, *it};
  }
  auto slot = upstream::acquire(limits, upstream::ClusterLimits::kConnections);
  if (!slot) {
    limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
    worker_.stats().inc(stats::Counter::UpstreamCxOverflow);
    if (!pending) {
      auto p = upstream::acquire(limits, upstream::ClusterLimits::kPending);
      if (!p) return {PoolResult::Kind::Overflow, nullptr};
      pending = std::move(*p);
    }
    wait(w, limits, state, first);
    return {PoolResult::Kind::Queued, nullptr};
  }
  int fd = OutboundConnection::openSocket(cluster.upstream);
  if (fd < 0) {
    // The slot goes back at once, and a request waiting for one hears of it.
    if (limits) {
      slot->reset();
      slotFreed(limits);
    }
    return {PoolResult::Kind::NoSocket, nullptr};
  }
  return {PoolResult::Kind::Connecting, new UpstreamConn(worker_, fd, ep, state, std::move(*slot), cluster.upstream)};
}

void ConnPool::wait(PoolWaiter& w, const std::shared_ptr<upstream::ClusterLimits>& limits, EndpointState& ep,
                    bool first) {
  if (w.cluster_) remove(w);
  Queue& q = queues_[limits.get()];
  if (!q.limits) q.limits = limits;
  const bool wasEmpty = q.waiters.empty();
  w.pos_ = q.waiters.insert(first ? q.waiters.begin() : q.waiters.end(), &w);
  w.cluster_ = limits.get();
  w.endpoint_ = &ep;
  if (!wasEmpty) return;
  // From here on a slot given back on any worker wakes this one. One given
  // back between the caller's failed acquire and this line woke nobody:
  // the fences pair with slotFreed's, so one of the two sides sees the
  // other, and this side looks again on the next loop turn.
  limits->waitingWorkers.fetch_or(workerBit(worker_.index()), std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (limits->hasRoom(upstream::ClusterLimits::kConnections)) worker_.wake();
}

void ConnPool::cancel(PoolWaiter& w) {
  if (w.cluster_) remove(w);
}

void ConnPool::remove(PoolWaiter& w) {
  auto it = queues_.find(w.cluster_);
  w.cluster_ = nullptr;
  w.endpoint_ = nullptr;
  if (it == queues_.end()) return;
  Queue& q = it->second;
  q.waiters.erase(w.pos_);
  if (q.waiters.empty()) {
    q.limits->waitingWorkers.fetch_and(~workerBit(worker_.index()), std::memory_order_seq_cst);
    queues_.erase(it);
  }
}

void ConnPool::wakeFirst(Queue& q) {
  PoolWaiter* w = q.waiters.front();
  remove(*w);  // may erase q
  w->onPoolSlot();
}

bool ConnPool::offer(UpstreamConn& c, upstream::ClusterLimits& limits, EndpointState& ep) {
  auto it = queues_.find(&limits);
  if (it == queues_.end()) return false;
  for (PoolWaiter* w : it->second.waiters) {
    if (w->endpoint_ != &ep) continue;
    remove(*w);
    w->onPoolConnection(&c);
    return true;
  }
  return false;
}

void ConnPool::slotFreed(const std::shared_ptr<upstream::ClusterLimits>& limits) {
  if (auto it = queues_.find(limits.get()); it != queues_.end()) wakeFirst(it->second);
  // Whatever this worker's waiter did (it may have found an idle connection
  // instead), a slot still free goes to the others.
  if (!limits->hasRoom(upstream::ClusterLimits::kConnections)) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint64_t others = limits->waitingWorkers.load(std::memory_order_seq_cst) & ~workerBit(worker_.index());
  for (int i = 0; others != 0; ++i, others >>= 1) {
    if (others & 1) worker_.engine().wakeWorker(i);
  }
}

void ConnPool::onWake() {
  // Each queue's first waiter tries once; one that still finds no room
  // queues again, first in line, and waits for the next wake.
  std::vector<upstream::ClusterLimits*> keys;
  keys.reserve(queues_.size());
  for (const auto& [key, q] : queues_) keys.push_back(key);
  for (upstream::ClusterLimits* key : keys) {
    auto it = queues_.find(key);
    if (it != queues_.end() && key->hasRoom(upstream::ClusterLimits::kConnections)) wakeFirst(it->second);
  }
}

}  // namespace sluice::proxy
