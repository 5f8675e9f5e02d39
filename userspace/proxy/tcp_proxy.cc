#include "proxy/tcp_proxy.h"

#include <linux/sockios.h>
#include <linux/tcp.h>  // tcp_info with the byte counters glibc lacks
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/engine.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"

namespace sluice::proxy {
namespace {

using stats::Counter;

// A direction stops reading while this much waits to be sent the other way.
constexpr size_t kMaxBuffered = 1 << 20;
// Splice mode, after an EOF: how often and how long to wait for the kernel
// to have handed every received byte to the other socket before passing
// the EOF on. 1 ms x 5000.
constexpr uint64_t kDrainTickNs = 1'000'000;
constexpr int kMaxDrainTicks = 5000;
// Splice mode, a held direction: how often to look whether its destination
// has sent everything the kernel gave it. Starts at 1 ms and doubles to
// 100 ms: the destination only drains as fast as its reader reads.
constexpr uint64_t kHandoverFirstWaitNs = 1'000'000;
constexpr uint64_t kHandoverMaxWaitNs = 100'000'000;
// Splice mode: how often to ask the kernel whether it held a direction.
// Every 10 ms while bytes move (a held direction stalls its reader until
// the daemon takes over), backing off to 1 s while they do not. Not a poll
// for POLLIN: every skb the verdict consumes wakes the socket's waiters.
constexpr uint64_t kHoldCheckBusyNs = 10'000'000;
constexpr uint64_t kHoldCheckIdleNs = 1'000'000'000;

// Payload bytes `fd` received (its FIN excluded once seen) and payload bytes
// it has accepted for sending (sent, retransmissions not double counted,
// plus what still waits in its send queue).
struct Progress {
  uint64_t received = 0;
  uint64_t written = 0;
  bool ok = false;
};
Progress progress(int fd, bool finReceived) {
  Progress p;
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return p;
  int unsent = 0;
  if (::ioctl(fd, SIOCOUTQNSD, &unsent) != 0) return p;
  p.received = ti.tcpi_bytes_received - (finReceived && ti.tcpi_bytes_received > 0 ? 1 : 0);
  p.written = ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + uint64_t(unsent);
  p.ok = true;
  return p;
}

void noDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

// ------------------------------------------------------------------ TcpSide

TcpSide::TcpSide(Worker& worker, int fd, TcpProxy* proxy, bool client)
    : Connection(worker, fd), proxy_(proxy), client_(client) {
  worker_.addDownstream(this);
}

TcpSide::~TcpSide() {
  // Reached without onDestroy() only from the worker's destructor, which
  // deletes every side left at shutdown itself: just let go of the proxy.
  if (proxy_) proxy_->onSideGone(*this, /*closeOther=*/false);
}

void TcpSide::connect(const sockaddr_in& addr, uint64_t timeoutNs) {
  addr_ = addr;
  io_uring_sqe* s = worker_.ring().sqeFor(connectOp_);
  io_uring_prep_connect(s, fd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_));
  track(connectOp_);
  worker_.timers().schedule(connectTimer_, timeoutNs ? timeoutNs : worker_.engine().options().connectTimeoutNs);
}

void TcpSide::watchForEnd() {
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

void TcpSide::onOtherCompletion(uint8_t op, int32_t res) {
  if (!proxy_) return;
  if (op == kConnect) {
    connectTimer_.cancel();
    if (res < 0) {
      proxy_->onConnectFailed();
    } else {
      proxy_->onConnected();
    }
  } else if (op == kPoll) {
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

void TcpSide::onConnectTimeout() {
  worker_.stats().inc(Counter::UpstreamCxConnectTimeout);
  if (proxy_) proxy_->onConnectFailed();
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

// ----------------------------------------------------------------- TcpProxy

TcpProxy::TcpProxy(Worker& worker, std::shared_ptr<const route::Snapshot> snap)
    : worker_(worker), snap_(std::move(snap)) {}

void TcpProxy::start(Worker& worker, int clientFd, const sockaddr_in& /*client*/,
                     const sockaddr_in& orig, std::shared_ptr<const route::Snapshot> snap,
                     const route::TcpService& svc) {
  worker.stats().inc(Counter::TcpCxTotal);
  const route::TcpRoute* r = svc.match(orig.sin_addr.s_addr);
  const route::TcpRoute::Dest* d = r ? r->pick(worker.rng().next()) : nullptr;
  if (d == nullptr || d->cluster == nullptr) {
    worker.stats().inc(Counter::NoRoute);
    ::close(clientFd);
    return;
  }
  // PASSTHROUGH: the address the client dialled, no balancing.
  route::Endpoint original;
  const bool toOriginal = d->cluster->lb == route::LbPolicy::Passthrough;
  if (toOriginal) {
    original.sockaddr = orig;
    original.key = "original-destination";
  }
  int idx = toOriginal ? 0 : worker.pickEndpointForConnection(*d->cluster);
  if (idx < 0 || (!toOriginal && d->cluster->endpoints.empty())) {
    worker.stats().inc(Counter::NoHealthyUpstream);
    ::close(clientFd);
    return;
  }
  const route::Endpoint& ep = toOriginal ? original : d->cluster->endpoints[size_t(idx)];
  // tcp.maxConnections holds for TCP routes too: over it, the client is
  // closed at once (Envoy's tcp_proxy does the same).
  std::shared_ptr<upstream::ClusterLimits> limits = worker.limitsFor(*d->cluster);
  auto conn = upstream::acquire(limits, upstream::ClusterLimits::kConnections);
  if (!conn) {
    limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
    worker.stats().inc(Counter::UpstreamCxOverflow);
    ::close(clientFd);
    return;
  }
  int ufd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ufd < 0) {
    worker.stats().inc(Counter::UpstreamCxConnectFail);
    ::close(clientFd);
    return;
  }
  if (L4Splicer* sp = worker.engine().options().l4Splicer) sp->prepareUpstream(ufd);
  noDelay(clientFd);
  noDelay(ufd);
  applyKeepalive(ufd, d->cluster->upstream);
  auto* p = new TcpProxy(worker, std::move(snap));
  if (!toOriginal) p->health_ = worker.healthFor(*d->cluster);
  p->connToken_ = std::move(*conn);
  p->endpointIndex_ = idx;
  p->endpoint_ = &worker.endpointState(ep);
  p->endpoint_->incActive();
  p->client_ = new TcpSide(worker, clientFd, p, true);
  p->upstream_ = new TcpSide(worker, ufd, p, false);
  p->sides_ = 2;
  // tcp.idleTimeout (Istio's default: 1 hour, the daemon's idle timeout).
  p->idleTimeoutNs_ = d->cluster->upstream.tcpIdleTimeoutNs ? d->cluster->upstream.tcpIdleTimeoutNs
                                                             : worker.engine().options().idleTimeoutNs;
  p->lastActivityNs_ = worker.clock().nowNs();
  worker.timers().schedule(p->idleTimer_, std::min<uint64_t>(p->idleTimeoutNs_ / 4 + 1, 1'000'000'000));
  worker.stats().inc(Counter::UpstreamCxTotal);
  p->upstream_->connect(ep.sockaddr, d->cluster->upstream.connectTimeoutNs);
}

void TcpProxy::onConnected() {
  if (closing_) return;
  // For TCP services a connection that opens is the success outlier
  // detection counts; one that does not is the failure.
  if (health_) health_->report(size_t(endpointIndex_), upstream::Outcome::Success, worker_.clock().nowNs());
  L4Splicer* sp = worker_.engine().options().l4Splicer;
  if (sp && sp->attach(client_->fd(), upstream_->fd())) {
    spliced_ = true;
    worker_.stats().inc(Counter::TcpCxSpliced);
    if (!forwardKeptBytes(*upstream_)) {
      closeBoth();
      return;
    }
    client_->watchForEnd();
    upstream_->watchForEnd();
    holdCheckNs_ = kHoldCheckBusyNs;
    worker_.timers().schedule(holdCheckTimer_, holdCheckNs_);
    return;
  }
  client_->startReading();
  upstream_->startReading();
}

void TcpProxy::onConnectFailed() {
  worker_.stats().inc(Counter::UpstreamCxConnectFail);
  if (health_)
    health_->report(size_t(endpointIndex_), upstream::Outcome::LocalOriginFailure, worker_.clock().nowNs());
  closeBoth();
}

void TcpProxy::onData(TcpSide& from) {
  if (closing_) return;
  TcpSide* to = peerOf(from);
  lastActivityNs_ = worker_.clock().nowNs();
  std::string bytes = from.takeInput();
  worker_.stats().inc(Counter::TcpBytesCopied, bytes.size());
  to->write(std::move(bytes));
  if (to->unsentBytes() > kMaxBuffered) from.pauseReading();
}

void TcpProxy::onDrained(TcpSide& side) {
  if (closing_) return;
  TcpSide* src = peerOf(side);
  int dir = src->isClient() ? 0 : 1;
  if (src->readingPaused() && !eofFrom_[dir]) src->startReading();
  if (eofFrom_[dir] && !shutTo_[dir] && side.unsentBytes() == 0) shutTo_[dir] = true;
  if (shutTo_[0] && shutTo_[1]) closeBoth();
}

// EOF on `side`: pass it on once everything it sent has been written out.
void TcpProxy::onEnd(TcpSide& side, int err) {
  if (closing_) return;
  if (err < 0) {
    worker_.stats().inc(Counter::TcpCxError);
    closeBoth();
    return;
  }
  int dir = side.isClient() ? 0 : 1;
  if (eofFrom_[dir]) return;
  eofFrom_[dir] = true;
  if (spliced_ && !copied_[dir]) {
    checkSplicedDrain();
    return;
  }
  TcpSide* to = peerOf(side);
  to->shutdownWrite();
  if (to->unsentBytes() == 0) shutTo_[dir] = true;
  if (shutTo_[0] && shutTo_[1]) closeBoth();
}

// Bytes the verdict kept on `from` without holding the direction: the
// upstream's that arrived while the client was joining the splice (no
// partner yet), or any that came once the partner had left the sockhash.
// Moving them now, before anything else the source sends can overtake them,
// keeps the stream in order in practice; the window is the two map updates.
bool TcpProxy::forwardKeptBytes(TcpSide& from) {
  TcpSide* to = peerOf(from);
  const int dir = from.isClient() ? 0 : 1;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(from.fd(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0) return true;  // EOF: the poll reports it
    worker_.stats().inc(Counter::TcpBytesCopied, uint64_t(n));
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::send(to->fd(), buf + off, size_t(n - off), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w <= 0) return false;  // so few bytes cannot fill a send buffer: give up
      off += w;
      keptForwarded_[dir] += uint64_t(w);
    }
  }
}

// Asks the kernel about both directions; true if it held `dir` just now
// (or holds it still and nobody noticed yet). false on error: closed.
bool TcpProxy::pollHeld(bool* moved) {
  L4Splicer* sp = worker_.engine().options().l4Splicer;
  for (int dir = 0; dir < 2; ++dir) {
    if (copied_[dir] || handoverPending_[dir]) continue;
    TcpSide* src = dir == 0 ? client_ : upstream_;
    std::optional<L4Splicer::Direction> d = sp ? sp->direction(src->fd()) : std::nullopt;
    if (!d) {
      worker_.stats().inc(Counter::TcpCxError);
      closeBoth();
      return false;
    }
    if (d->redirected != lastRedirected_[dir]) *moved = true;
    lastRedirected_[dir] = d->redirected;
    if (d->held) {
      // From here this direction is copied; its EOF comes through the copy.
      handoverPending_[dir] = true;
      worker_.stats().inc(Counter::TcpSpliceHandedBack);
    }
  }
  return true;
}

void TcpProxy::onHoldCheck() {
  if (closing_) return;
  bool moved = false;
  if (!pollHeld(&moved)) return;
  if (handoverPending_[0] || handoverPending_[1]) checkHandover();
  if (closing_ || ((copied_[0] || handoverPending_[0]) && (copied_[1] || handoverPending_[1]))) return;
  holdCheckNs_ = moved ? kHoldCheckBusyNs : std::min(holdCheckNs_ * 2, kHoldCheckIdleNs);
  worker_.timers().schedule(holdCheckTimer_, holdCheckNs_);
}

// The poll of a spliced side fired: its EOF or an error. A held direction
// (the kernel keeps its bytes on `side`) passes the EOF on through the copy.
void TcpProxy::onSplicedWake(TcpSide& side) {
  if (closing_) return;
  const int dir = side.isClient() ? 0 : 1;
  bool moved = false;
  if (!pollHeld(&moved)) return;
  if (handoverPending_[0] || handoverPending_[1]) checkHandover();
  if (closing_ || handoverPending_[dir] || copied_[dir]) return;
  // Bytes kept while the partner was missing come before the EOF.
  if (!forwardKeptBytes(side)) {
    closeBoth();
    return;
  }
  onEnd(side, 0);
}

// A held direction starts copying once its destination has taken every byte
// the kernel redirected to it: what it copies came later in the stream.
void TcpProxy::checkHandover() {
  if (closing_) return;
  L4Splicer* sp = worker_.engine().options().l4Splicer;
  bool waiting = false;
  for (int dir = 0; dir < 2; ++dir) {
    if (!handoverPending_[dir]) continue;
    TcpSide* src = dir == 0 ? client_ : upstream_;
    TcpSide* dst = peerOf(*src);
    std::optional<L4Splicer::Direction> d = sp ? sp->direction(src->fd()) : std::nullopt;
    Progress out = progress(dst->fd(), false);
    if (!d || !out.ok) {
      worker_.stats().inc(Counter::TcpCxError);
      closeBoth();
      return;
    }
    if (out.written < d->redirected + keptForwarded_[dir]) {
      waiting = true;
      continue;
    }
    handoverPending_[dir] = false;
    copied_[dir] = true;
    lastActivityNs_ = worker_.clock().nowNs();
    src->startReading();
  }
  if (!waiting) {
    handoverWaitNs_ = 0;
    return;
  }
  handoverWaitNs_ = handoverWaitNs_ ? std::min(handoverWaitNs_ * 2, kHandoverMaxWaitNs) : kHandoverFirstWaitNs;
  worker_.timers().schedule(handoverTimer_, handoverWaitNs_);
}


// The kernel moves a spliced pair's bytes asynchronously (a redirected skb
// can wait in the destination's psock queue): a FIN passed on too early would
// cut the stream. So each direction is shut only once the destination has
// taken as many bytes as the source received.
void TcpProxy::checkSplicedDrain() {
  for (int dir = 0; dir < 2; ++dir) {
    if (!eofFrom_[dir] || shutTo_[dir] || copied_[dir]) continue;
    TcpSide* src = dir == 0 ? client_ : upstream_;
    TcpSide* dst = peerOf(*src);
    Progress in = progress(src->fd(), true);
    Progress out = progress(dst->fd(), eofFrom_[1 - dir]);
    if (!in.ok || !out.ok) {
      closeBoth();
      return;
    }
    if (out.written >= in.received) {
      shutTo_[dir] = true;
      ::shutdown(dst->fd(), SHUT_WR);
    }
  }
  if (shutTo_[0] && shutTo_[1]) {
    closeBoth();
    return;
  }
  bool waiting = (eofFrom_[0] && !shutTo_[0] && !copied_[0]) ||
                 (eofFrom_[1] && !shutTo_[1] && !copied_[1]);
  if (!waiting) return;
  if (++drainTicks_ > kMaxDrainTicks) {
    worker_.stats().inc(Counter::TcpDrainTimeout);
    closeBoth();
    return;
  }
  worker_.timers().schedule(drainTimer_, kDrainTickNs);
}

void TcpProxy::onDrainTick() {
  if (!closing_) checkSplicedDrain();
}

uint64_t TcpProxy::idleMs() const {
  uint64_t sinceCopy = (worker_.clock().nowNs() - lastActivityNs_) / 1'000'000;
  if (!spliced_) return sinceCopy;
  // Spliced bytes never pass here: ask TCP when data last moved.
  uint64_t idle = sinceCopy;
  for (const TcpSide* s : {client_, upstream_}) {
    if (!s) continue;
    tcp_info ti{};
    socklen_t len = sizeof(ti);
    if (::getsockopt(s->fd(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) continue;
    idle = std::min<uint64_t>(idle, std::min(ti.tcpi_last_data_recv, ti.tcpi_last_data_sent));
  }
  return idle;
}

void TcpProxy::onIdleCheck() {
  if (closing_) return;
  uint64_t idle = idleMs();
  if (idle * 1'000'000 >= idleTimeoutNs_) {
    worker_.stats().inc(Counter::TcpIdleTimeout);
    closeBoth();
    return;
  }
  uint64_t left = idleTimeoutNs_ - idle * 1'000'000;
  worker_.timers().schedule(idleTimer_, std::min<uint64_t>(left + 1'000'000, 1'000'000'000));
}

void TcpProxy::closeBoth() {
  if (closing_) return;
  closing_ = true;
  drainTimer_.cancel();
  idleTimer_.cancel();
  handoverTimer_.cancel();
  holdCheckTimer_.cancel();
  if (spliced_) {
    if (L4Splicer* sp = worker_.engine().options().l4Splicer)
      sp->detach(client_->fd(), upstream_->fd());
  }
  client_->close();
  upstream_->close();
}

void TcpProxy::onSideGone(TcpSide& side, bool closeOther) {
  if (&side == client_) client_ = nullptr;
  if (&side == upstream_) upstream_ = nullptr;
  if (--sides_ > 0) {
    // One side went away on its own: take the other along.
    if (closeOther && !closing_) {
      closing_ = true;
      drainTimer_.cancel();
      idleTimer_.cancel();
      handoverTimer_.cancel();
      holdCheckTimer_.cancel();
      if (TcpSide* other = client_ ? client_ : upstream_) other->close();
    }
    return;
  }
  if (endpoint_) endpoint_->decActive();
  delete this;
}

}  // namespace sluice::proxy
