// Requests waiting for an upstream connection on one worker. A request that
// finds its cluster at maxConnections waits here (within
// http1MaxPendingRequests) and is woken, never polled: by a connection to
// the endpoint it chose that finished a request (handed over, so queued
// requests run one after another on one keep-alive connection), or by a
// connection slot given back on this worker or another one.
#pragma once

#include <list>
#include <memory>
#include <unordered_map>

#include "route/table.h"
#include "upstream/circuit_breaker.h"

namespace sluice::proxy {

class UpstreamConn;
class Worker;
struct EndpointState;

// What an attempt got from the pool (ConnPool::newStream).
struct PoolResult {
  enum class Kind {
    Ready,       // an idle keep-alive connection, out of the pool: send now
    Connecting,  // a new connection, not connected yet: call connect()
    Queued,      // no connection and no slot: queued, woken later
    Overflow,    // ... and http1MaxPendingRequests is full too
    NoSocket,    // the process could not open a socket
  };
  Kind kind = Kind::NoSocket;
  UpstreamConn* conn = nullptr;  // Ready and Connecting
};

// The side of a request that waits: DownstreamConn today (one HTTP/1.1
// request at a time), an HTTP/2 stream later.
class PoolWaiter {
 public:
  // A pooled connection to the endpoint this waiter chose is free and now
  // attached to nothing: take it.
  virtual void onPoolConnection(UpstreamConn* c) = 0;
  // A connection slot of its cluster was given back: try again (the waiter
  // is no longer queued; it queues again, first in line, if it still
  // cannot have one).
  virtual void onPoolSlot() = 0;

 protected:
  ~PoolWaiter() = default;

 private:
  friend class ConnPool;
  upstream::ClusterLimits* cluster_ = nullptr;  // non-null while queued
  EndpointState* endpoint_ = nullptr;
  std::list<PoolWaiter*>::iterator pos_;
};

class ConnPool {
 public:
  explicit ConnPool(Worker& worker) : worker_(worker) {}
  ConnPool(const ConnPool&) = delete;
  ConnPool& operator=(const ConnPool&) = delete;

  // A stream to endpoint `ep` of `cluster` for waiter `w`: an idle
  // connection, else a new one within the cluster's maxConnections, else a
  // place in the queue within http1MaxPendingRequests (`pending` receives
  // the waiter's unit of it, kept across wake-ups). An HTTP/1.1 stream is
  // a whole connection; an HTTP/2 pool would hand out a stream on a shared
  // one. `first`: the waiter was woken and is still first in line.
  PoolResult newStream(PoolWaiter& w, const route::Endpoint& ep, EndpointState& state,
                       const route::Cluster& cluster, const std::shared_ptr<upstream::ClusterLimits>& limits,
                       upstream::LimitToken& pending, bool first);

  // Queues `w` for `limits`'s cluster, wanting a connection to `ep`.
  // `first`: it was woken and is still first in line.
  void wait(PoolWaiter& w, const std::shared_ptr<upstream::ClusterLimits>& limits, EndpointState& ep,
            bool first = false);
  void cancel(PoolWaiter& w);

  // A connection of `limits`'s cluster to `ep` finished a request and may be
  // reused. True when a waiter took it.
  bool offer(UpstreamConn& c, upstream::ClusterLimits& limits, EndpointState& ep);
  // A connection slot of `limits` was given back on this worker.
  void slotFreed(const std::shared_ptr<upstream::ClusterLimits>& limits);
  // Another worker gave back a slot of a cluster this worker waits on (or
  // this worker asked itself to look again).
  void onWake();

 private:
  struct Queue {
    std::shared_ptr<upstream::ClusterLimits> limits;  // keeps the key alive
    std::list<PoolWaiter*> waiters;
  };
  void remove(PoolWaiter& w);
  // Wakes the first waiter of `q` (it leaves the queue first).
  void wakeFirst(Queue& q);

  Worker& worker_;
  std::unordered_map<upstream::ClusterLimits*, Queue> queues_;
};

}  // namespace sluice::proxy
