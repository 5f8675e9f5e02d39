// The one way sluiced opens a connection to an upstream endpoint, for the
// router's pooled connections, mirrors and TCP routes alike: a socket with
// the cluster's options (TCP_NODELAY, tcp.tcpKeepalive) and a connect on
// the ring bounded by the cluster's tcp.connectTimeout.
#pragma once

#include <netinet/in.h>

#include <cstdint>

#include "core/timer_wheel.h"
#include "proxy/connection.h"
#include "route/table.h"

namespace sluice::proxy {

class OutboundConnection : public Connection {
 public:
  // A non-blocking socket set up for cluster `settings`; -1 (errno set)
  // when none could be made.
  static int openSocket(const route::UpstreamSettings& settings);
  bool connected() const { return connected_; }

 protected:
  OutboundConnection(Worker& worker, int fd) : Connection(worker, fd) {}
  // Connects to `addr` within `timeoutNs` (0: the daemon's
  // --connect-timeout). One of onConnected / onConnectFailed follows,
  // unless the connection closes first.
  void connectTo(const sockaddr_in& addr, uint64_t timeoutNs);
  // TCP is up and the cluster wants TLS: `t` speaks it from now on, its
  // handshake bounded by the connect timeout (`timeoutNs`, 0: the daemon's
  // --connect-timeout) on `handshakeTimer`; reading starts for the
  // server's flight.
  void startTls(std::unique_ptr<Transport> t, core::Timer& handshakeTimer, uint64_t timeoutNs);
  virtual void onConnected() = 0;
  virtual void onConnectFailed(bool timedOut) = 0;
  // Completions of a subclass's own operations (other than the connect).
  virtual void onOwnCompletion(uint8_t, int32_t) {}

 private:
  void onOtherCompletion(uint8_t op, int32_t res) final;
  void onConnectTimer();

  sockaddr_in addr_{};  // read by the kernel while the connect is in flight
  core::IoOp connectOp_{this, kConnect};
  core::MemberTimer<OutboundConnection, &OutboundConnection::onConnectTimer> connectTimer_{this};
  bool connected_ = false;
};

}  // namespace sluice::proxy
