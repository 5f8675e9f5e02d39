// TcpSide: one end of an L4 connection (the client's or the upstream's),
// forwarding its events to its TcpProxy.
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "proxy/tcp_proxy.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

TcpSide::TcpSide(Worker& worker, int fd, TcpProxy* proxy, bool client)
    : OutboundConnection(worker, fd), proxy_(proxy), client_(client) {
  worker_.addDownstream(this);
}

TcpSide::~TcpSide() {
  // Reached without onDestroy() only from the worker's destructor, which
  // deletes every side left at shutdown itself: just let go of the proxy.
  if (proxy_) proxy_->onSideGone(*this, /*closeOther=*/false);
}

void TcpSide::watchForEnd() {
  if (watching_) return;
  watching_ = true;
  io_uring_sqe* s = worker_.ring().sqeFor(pollOp_);
  io_uring_prep_poll_add(s, fd_, POLLRDHUP | POLLHUP | POLLERR);
  track(pollOp_);
}

void TcpSide::shutdownWrite() {
  if (shutWrite_) return;
  if (unsentBytes() > 0) {
    writeShutPending_ = true;  // after the last byte: onDrained()
    return;
  }
  shutWrite_ = true;
  ::shutdown(fd_, SHUT_WR);
}

void TcpSide::onConnected() {
  if (proxy_) proxy_->onConnected();
}

void TcpSide::onConnectFailed(bool timedOut) {
  if (timedOut) worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
  if (proxy_) proxy_->onConnectFailed();
}

void TcpSide::onOwnCompletion(uint8_t op, int32_t res) {
  if (!proxy_) return;
  if (op == kPoll) {
    watching_ = false;
    if (res < 0) return;  // cancelled by close
    if (res & POLLERR) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      proxy_->onEnd(*this, -(err ? err : ECONNRESET));
    } else {
      proxy_->onSplicedWake(*this);
    }
  }
}

void TcpSide::onData() {
  if (proxy_) proxy_->onData(*this);
}

void TcpSide::onPeerClosed(int err) {
  if (proxy_) proxy_->onEnd(*this, err);
}

void TcpSide::onDrained() {
  if (writeShutPending_) {
    writeShutPending_ = false;
    shutdownWrite();
  }
  if (proxy_) proxy_->onDrained(*this);
}

void TcpSide::onDestroy() {
  worker_.removeDownstream(this);
  if (proxy_) {
    TcpProxy* p = proxy_;
    proxy_ = nullptr;
    p->onSideGone(*this, /*closeOther=*/true);
  }
}

}  // namespace sluice::proxy
