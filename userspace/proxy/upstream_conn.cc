// UpstreamConn: one pooled HTTP/1.1 connection to an endpoint, serving the
// requests of exchanges (HttpExchange, either protocol downstream) one at a
// time (http_session.h).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

#include <arpa/inet.h>

#include "proxy/engine.h"
#include "proxy/tls_transport.h"
#include "tls/credential_store.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

// tcp.tcpKeepalive on an upstream socket: probes after `time` idle, every
// `interval`, `probes` of them; unset fields keep the kernel's values.
UpstreamConn::UpstreamConn(Worker& worker, int fd, const route::Endpoint& ep, EndpointState& state,
                           upstream::LimitToken connToken, const route::UpstreamSettings& settings)
    : OutboundConnection(worker, fd),
      state_(state),
      connToken_(std::move(connToken)),
      settings_(settings),
      createdNs_(worker.clock().nowNs()),
      addr_(ep.sockaddr),
      key_(ep.key) {
  worker_.stats().inc(Counter::UpstreamCxTotal);
  worker_.stats().inc(Counter::UpstreamCxActive);
}

void UpstreamConn::connect() { connectTo(addr_, settings_.connectTimeoutNs); }

void UpstreamConn::onConnected() {
  if (settings_.tls) {
    startTls();
    return;
  }
  if (owner_) owner_->onUpstreamConnected();
}

void UpstreamConn::startTls() {
  std::unique_ptr<TlsClientTransport> t = makeClientTls(worker_, settings_, state_, addr_);
  if (!t) {
    // Never plaintext to an upstream that wants TLS.
    worker_.stats().inc(Counter::UpstreamSslHandshakeError);
    onConnectFailed(false);
    return;
  }
  tlsPending_ = true;
  OutboundConnection::startTls(std::move(t), handshakeTimer_, settings_.connectTimeoutNs);
}

void UpstreamConn::onTransportReady() {
  if (!tlsPending_) return;
  tlsPending_ = false;
  handshakeTimer_.cancel();
  if (owner_) owner_->onUpstreamConnected();
}

void UpstreamConn::onHandshakeTimeout() {
  if (!tlsPending_ || closing()) return;
  tlsPending_ = false;
  worker_.stats().inc(Counter::UpstreamSslHandshakeError);
  onConnectFailed(true);
}

void UpstreamConn::onConnectFailed(bool timedOut) {
  if (timedOut) worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
  worker_.stats().inc(Counter::UpstreamCxConnectFail);
  HttpExchange* o = owner_;
  owner_ = nullptr;
  close();
  if (o) o->onUpstreamConnectFailed(timedOut);
}

void UpstreamConn::attach(HttpExchange* owner) {
  if (pooled_) removeFromPool();
  idleTimer_.cancel();
  owner_ = owner;
  if (requestsServed > 0) {
    reused_ = true;
    worker_.stats().inc(Counter::UpstreamCxReused);
  }
}

void UpstreamConn::release() {
  owner_ = nullptr;
  ++requestsServed;
  upstream::ClusterLimits* l = connToken_.limits();
  // maxRequestsPerConnection used up: close, so the slot is free.
  if (l && l->limits().maxRequestsPerConnection && requestsServed >= l->limits().maxRequestsPerConnection) {
    close();
    return;
  }
  // tcp.maxConnectionDuration: an old connection is not reused.
  if (settings_.maxConnectionDurationNs &&
      worker_.clock().nowNs() - createdNs_ >= settings_.maxConnectionDurationNs) {
    close();
    return;
  }
  if (l) {
    // A request queued on this worker for this endpoint takes it at once.
    if (worker_.pool().offer(*this, *l, state_)) return;
    // Requests of this cluster wait for another endpoint or on another
    // worker, neither of which can use this connection: give the slot back.
    if (l->inUse(upstream::ClusterLimits::kPending) > 0) {
      close();
      return;
    }
  }
  pooled_ = true;
  state_.idle.push_back(this);
  // Keep reading while idle: a close from the server (or stray bytes) must
  // take the connection out of the pool before a request is sent on it.
  startReading();
  worker_.timers().schedule(idleTimer_, settings_.idleTimeoutNs ? settings_.idleTimeoutNs
                                                                : worker_.engine().options().idleTimeoutNs);
}

void UpstreamConn::removeFromPool() {
  auto& idle = state_.idle;
  for (size_t i = 0; i < idle.size(); ++i) {
    if (idle[i] == this) {
      idle[i] = idle.back();
      idle.pop_back();
      break;
    }
  }
  pooled_ = false;
}

void UpstreamConn::onIdleTimeout() {
  if (pooled_) {
    removeFromPool();
    close();
  }
}

void UpstreamConn::onData() {
  if (owner_) {
    owner_->onUpstreamData();
  } else if (pooled_) {
    // An idle HTTP/1.1 connection must be silent; bytes here mean the
    // server is confused. Drop the connection rather than mis-attribute them.
    removeFromPool();
    close();
  }
}

void UpstreamConn::onPeerClosed(int err) {
  if (tlsPending_) {
    // The handshake failed (or the server hung up during it): a connection
    // failure, as Envoy reports it (UF), retried as one.
    tlsPending_ = false;
    handshakeTimer_.cancel();
    onConnectFailed(false);
    return;
  }
  if (pooled_) removeFromPool();
  HttpExchange* o = owner_;
  owner_ = nullptr;
  close();
  if (o) o->onUpstreamClosed(err);
}

void UpstreamConn::onSendProgress() {
  if (owner_) owner_->touchStream();
}

void UpstreamConn::onDrained() {
  if (owner_) owner_->onUpstreamDrained();
}

void UpstreamConn::onDestroy() {
  if (pooled_) removeFromPool();
  worker_.stats().dec(Counter::UpstreamCxActive);
  if (connToken_) {
    // The maxConnections slot goes back now, and a request waiting for one
    // is woken (here or on another worker).
    std::shared_ptr<upstream::ClusterLimits> limits = connToken_.shared();
    connToken_.reset();
    worker_.pool().slotFreed(limits);
  }
}

}  // namespace sluice::proxy
