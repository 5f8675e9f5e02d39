#include "proxy/outbound.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

#include "proxy/engine.h"
#include "proxy/worker.h"

namespace sluice::proxy {

int OutboundConnection::openSocket(const route::UpstreamSettings& s) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (s.keepalive) {
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    auto secs = [](uint64_t ns) { return int(std::max<uint64_t>(1, ns / 1'000'000'000)); };
    if (s.keepalive->timeNs) {
      int v = secs(s.keepalive->timeNs);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
    }
    if (s.keepalive->intervalNs) {
      int v = secs(s.keepalive->intervalNs);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
    }
    if (s.keepalive->probes) {
      int v = int(s.keepalive->probes);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
    }
  }
  return fd;
}

void OutboundConnection::connectTo(const sockaddr_in& addr, uint64_t timeoutNs) {
  addr_ = addr;
  io_uring_sqe* s = worker_.ring().sqeFor(connectOp_);
  io_uring_prep_connect(s, fd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_));
  track(connectOp_);
  worker_.timers().schedule(connectTimer_, timeoutNs ? timeoutNs : worker_.engine().options().connectTimeoutNs);
}

void OutboundConnection::startTls(std::unique_ptr<Transport> t, core::Timer& handshakeTimer, uint64_t timeoutNs) {
  setTransport(std::move(t));
  worker_.timers().schedule(handshakeTimer, timeoutNs ? timeoutNs : worker_.engine().options().connectTimeoutNs);
  startReading();  // the server's handshake flight
}

void OutboundConnection::onOtherCompletion(uint8_t op, int32_t res) {
  if (op != kConnect) {
    onOwnCompletion(op, res);
    return;
  }
  if (!connectTimer_.armed()) return;  // the deadline already failed it
  connectTimer_.cancel();
  if (res < 0) {
    onConnectFailed(false);
    return;
  }
  connected_ = true;
  onConnected();
}

void OutboundConnection::onConnectTimer() { onConnectFailed(true); }

}  // namespace sluice::proxy
