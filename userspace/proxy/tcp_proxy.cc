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
#include "proxy/tls_transport.h"
#include "proxy/worker.h"
#include "tls/credential_store.h"
#include "tls/session.h"

namespace sluice::proxy {
namespace {

using stats::Counter;

// A direction stops reading while this much waits to be sent the other way.
constexpr size_t kMaxBuffered = 1 << 20;
// Splice mode, after an EOF: how often and how long to wait for the kernel
// to have handed every received byte to the other socket before passing
// the EOF on: 1 ms ticks, up to 5 s without the destination taking a byte.
constexpr uint64_t kDrainTickNs = 1'000'000;
constexpr int kMaxDrainTicks = 5000;
// Splice mode, bytes read from a held direction: how often to look whether
// the destination has sent everything the kernel redirected before them.
// Starts at 1 ms and doubles to 100 ms: it drains as fast as its reader.
constexpr uint64_t kFlushFirstWaitNs = 1'000'000;
constexpr uint64_t kFlushMaxWaitNs = 100'000'000;
// Splice mode: how often to ask the kernel whether it held a direction.
// Every 10 ms while bytes move (a held direction stalls its reader until
// the daemon reads it), backing off to 1 s while they do not. Not a poll
// for POLLIN: every skb the verdict consumes wakes the socket's waiters.
constexpr uint64_t kHoldCheckFirstNs = 1'000'000;
constexpr uint64_t kHoldCheckBusyNs = 10'000'000;
constexpr uint64_t kHoldCheckIdleNs = 1'000'000'000;

// Payload bytes `fd` received (its FIN excluded once seen) and payload bytes
// it has accepted for sending (sent, retransmissions not double counted,
// plus what still waits in its send queue), and whether it is closed
// (TCP_CLOSE though it was established: reset, or both FINs exchanged).
struct Progress {
  uint64_t received = 0;
  uint64_t written = 0;
  bool closed = false;
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
  constexpr uint8_t kTcpClose = 7;  // TCP_CLOSE of the kernel's tcp_states.h
  p.closed = ti.tcpi_state == kTcpClose;
  p.ok = true;
  return p;
}

void noDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

// ----------------------------------------------------------------- TcpProxy

TcpProxy::TcpProxy(Worker& worker, std::shared_ptr<const route::Snapshot> snap)
    : worker_(worker), snap_(std::move(snap)) {}

void TcpProxy::start(Worker& worker, int clientFd, const sockaddr_in& /*client*/,
                     const sockaddr_in& orig, std::shared_ptr<const route::Snapshot> snap,
                     const route::TcpService& svc, ConnectionSlot slot) {
  worker.stats().inc(Counter::TcpCxTotal);
  startPicked(worker, clientFd, &orig, std::move(snap), svc.match(orig.sin_addr.s_addr), std::move(slot), {},
              nullptr, 0);
}

void TcpProxy::startRoute(Worker& worker, int clientFd, std::shared_ptr<const route::Snapshot> snap,
                          const route::TcpRoute& route, ConnectionSlot slot, std::string initial,
                          std::unique_ptr<Transport> clientTls, uint64_t handshakeDeadlineNs) {
  worker.stats().inc(Counter::TcpCxTotal);
  startPicked(worker, clientFd, nullptr, std::move(snap), &route, std::move(slot), std::move(initial),
              std::move(clientTls), handshakeDeadlineNs);
}

void TcpProxy::startPicked(Worker& worker, int clientFd, const sockaddr_in* origPtr,
                           std::shared_ptr<const route::Snapshot> snap, const route::TcpRoute* r,
                           ConnectionSlot slot, std::string initial, std::unique_ptr<Transport> clientTls,
                           uint64_t handshakeDeadlineNs) {
  const route::TcpRoute::Dest* d = r ? r->pick(worker.rng().next()) : nullptr;
  if (d == nullptr || d->cluster == nullptr) {
    worker.stats().inc(Counter::NoRoute);
    ::close(clientFd);
    return;
  }
  // DestinationRule tls: the upstream side speaks TLS. Without a loaded
  // client certificate the connection is refused, never relayed in
  // plaintext.
  std::shared_ptr<const tls::ClientContext> upstreamTls;
  if (d->cluster->upstream.tls) {
    const auto& cred = d->cluster->upstream.tlsCredentials;
    upstreamTls = cred ? cred->current() : nullptr;
    if (!upstreamTls) {
      worker.stats().inc(Counter::UpstreamSslHandshakeError);
      logTlsFailure(worker, d->cluster->name, "no TLS client context loaded; connection refused");
      ::close(clientFd);
      return;
    }
  }
  // PASSTHROUGH: the address the client dialled, no balancing (only a
  // captured connection has one).
  route::Endpoint original;
  const bool toOriginal = d->cluster->lb == route::LbPolicy::Passthrough;
  if (toOriginal && !origPtr) {
    worker.stats().inc(Counter::NoHealthyUpstream);
    ::close(clientFd);
    return;
  }
  if (toOriginal) {
    original.sockaddr = *origPtr;
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
  std::shared_ptr<upstream::ClusterLimits> limits = worker.clusters().limitsFor(*d->cluster);
  auto conn = upstream::acquire(limits, upstream::ClusterLimits::kConnections);
  if (!conn) {
    limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
    worker.stats().inc(Counter::UpstreamCxOverflow);
    ::close(clientFd);
    return;
  }
  int ufd = OutboundConnection::openSocket(d->cluster->upstream);
  if (ufd < 0) {
    if (limits) {
      conn->reset();
      worker.pool().slotFreed(limits);  // a request waiting for a slot hears of it
    }
    worker.stats().inc(Counter::UpstreamCxConnectFail);
    ::close(clientFd);
    return;
  }
  if (L4Splicer* sp = worker.engine().options().l4Splicer) sp->prepareUpstream(ufd);
  noDelay(clientFd);
  auto* p = new TcpProxy(worker, std::move(snap));
  p->slot_ = std::move(slot);
  p->initial_ = std::move(initial);
  if (!toOriginal) p->health_ = worker.clusters().healthFor(*d->cluster);
  p->connToken_ = std::move(*conn);
  p->endpointIndex_ = idx;
  p->endpoint_ = &worker.endpointState(ep);
  p->endpoint_->incActive();
  p->client_ = new TcpSide(worker, clientFd, p, true);
  p->upstream_ = new TcpSide(worker, ufd, p, false);
  p->sides_ = 2;
  p->upstreamTls_ = std::move(upstreamTls);
  p->upstreamTlsTimeoutNs_ = d->cluster->upstream.connectTimeoutNs ? d->cluster->upstream.connectTimeoutNs
                                                                   : worker.engine().options().connectTimeoutNs;
  p->upstreamKey_ = ep.key;
  if (clientTls) {
    // The handshake goes on with the hello already read; the plaintext
    // after it is what the upstream gets.
    p->clientTls_ = true;
    p->handshakeDeadlineNs_ = handshakeDeadlineNs;
    p->client_->setTransport(std::move(clientTls));
    std::string hello = std::move(p->initial_);
    p->initial_.clear();
    if (!p->client_->injectReceived(hello)) {
      // The alert goes out first: the upstream side (never connected)
      // goes now without taking the client along.
      p->closing_ = true;
      p->client_->closeAfterFlush();
      p->upstream_->close();
      return;
    }
  }
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
  // Bytes already read from the client (a ClientHello) go first, and only
  // the copy loop can put them first.
  if (upstreamTls_) {
    // TLS to the upstream: its handshake starts now; client bytes written
    // meanwhile are held by the transport, so the relay starts at once.
    EndpointState& st = *endpoint_;
    if (!st.tlsSession || st.tlsSessionContext != upstreamTls_.get()) {
      st.tlsSession = std::make_shared<tls::ResumptionSlot>();
      st.tlsSessionContext = upstreamTls_.get();
    }
    upstream_->setTransport(
        std::make_unique<TlsClientTransport>(worker_, std::move(upstreamTls_), st.tlsSession, upstreamKey_));
    upstreamTls_.reset();
    upstreamTlsPending_ = true;
    upstreamTlsDeadlineNs_ = worker_.clock().nowNs() + upstreamTlsTimeoutNs_;
  }
  if (initial_.empty() && !clientTls_ && !upstreamTlsPending_ && sp && sp->attach(client_->fd(), upstream_->fd())) {
    spliced_ = true;
    worker_.stats().inc(Counter::TcpCxSpliced);
    // A held source is read only until the kernel splices it again.
    client_->cancelEveryPause();
    upstream_->cancelEveryPause();
    client_->watchForEnd();
    upstream_->watchForEnd();
    // Soon: bytes that came before the pair was complete are held (a
    // server that speaks first), and wait for the daemon.
    holdCheckNs_ = kHoldCheckBusyNs;
    worker_.timers().schedule(holdCheckTimer_, kHoldCheckFirstNs);
    return;
  }
  // The copy loop pauses a side whenever the other falls behind.
  client_->useOneShotRecv();
  upstream_->useOneShotRecv();
  if (!initial_.empty()) {
    worker_.stats().inc(Counter::TcpBytesCopied, initial_.size());
    upstream_->write(std::move(initial_));
    initial_.clear();
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
  if (spliced_) {
    // Kept by the kernel (a held direction): in order after what it
    // redirected, so they wait until the destination has taken that.
    const int dir = from.isClient() ? 0 : 1;
    readingHeld_[dir] = true;  // a read still in flight when it was paused
    pending_[dir] += bytes;
    flushHeld(dir);
    return;
  }
  to->write(std::move(bytes));
  if (to->unsentBytes() > kMaxBuffered) from.pauseReading();
}

void TcpProxy::onDrained(TcpSide& side) {
  if (closing_) return;
  TcpSide* src = peerOf(side);
  int dir = src->isClient() ? 0 : 1;
  if (spliced_) {
    if (!pending_[dir].empty()) {
      flushHeld(dir);
    } else if (readingHeld_[dir] && src->readingPaused() && !eofFrom_[dir]) {
      src->startReading();
    }
    return;
  }
  if (src->readingPaused() && !eofFrom_[dir]) src->startReading();
  if (eofFrom_[dir] && !shutTo_[dir] && side.unsentBytes() == 0) shutTo_[dir] = true;
  if (shutTo_[0] && shutTo_[1]) closeBoth();
}

// EOF on `side`: pass it on once everything it sent has been written out.
void TcpProxy::onEnd(TcpSide& side, int err) {
  if (closing_) return;
  if (err < 0) {
    // The other end gets a reset too. A FIN could pass for the end of the
    // stream, and one sent towards a sender that never reads does not stop
    // it: spliced bytes never sit in the receive queue, so the kernel would
    // not reset the closed socket itself, and a sender facing its zero
    // window would only probe.
    resetBoth();
    return;
  }
  int dir = side.isClient() ? 0 : 1;
  if (eofFrom_[dir]) return;
  eofFrom_[dir] = true;
  if (spliced_) {
    checkSplicedDrain();
    return;
  }
  TcpSide* to = peerOf(side);
  to->shutdownWrite();
  if (to->unsentBytes() == 0) shutTo_[dir] = true;
  if (shutTo_[0] && shutTo_[1]) closeBoth();
}

// Asks the kernel about the directions the daemon does not read yet; a held
// one is read from now on. false on error (closed).
bool TcpProxy::pollHeld(bool* moved) {
  L4Splicer* sp = worker_.engine().options().l4Splicer;
  for (int dir = 0; dir < 2; ++dir) {
    if (eofFrom_[dir]) continue;
    TcpSide* src = dir == 0 ? client_ : upstream_;
    std::optional<L4Splicer::Direction> d = sp ? sp->direction(src->fd()) : std::nullopt;
    if (!d) {
      resetBoth();
      return false;
    }
    if (d->redirected != lastRedirected_[dir]) *moved = true;
    lastRedirected_[dir] = d->redirected;
    if (!readingHeld_[dir] && d->held) {
      // The daemon reads this source while the kernel holds it; its EOF
      // comes that way too.
      readingHeld_[dir] = true;
      worker_.stats().inc(Counter::TcpSpliceHeld);
      src->startReading();
    } else if (readingHeld_[dir] && !d->held && pending_[dir].empty() &&
               peerOf(*src)->unsentBytes() == 0) {
      // Spliced again: a read armed on it would wake for every skb the
      // verdict consumes. Back to the poll for its end.
      readingHeld_[dir] = false;
      src->pauseReading();
      src->watchForEnd();
    }
  }
  return true;
}

void TcpProxy::onHoldCheck() {
  if (closing_) return;
  bool moved = false;
  if (!pollHeld(&moved)) return;
  if (eofFrom_[0] && eofFrom_[1]) return;
  holdCheckNs_ = moved ? kHoldCheckBusyNs : std::min(holdCheckNs_ * 2, kHoldCheckIdleNs);
  worker_.timers().schedule(holdCheckTimer_, holdCheckNs_);
}

// The poll of a spliced side fired: its EOF or an error. A source the
// daemon reads reports its EOF through that read instead.
void TcpProxy::onSplicedWake(TcpSide& side) {
  if (closing_) return;
  const int dir = side.isClient() ? 0 : 1;
  bool moved = false;
  if (!pollHeld(&moved)) return;
  // Anything the kernel kept comes before the EOF: a held direction is read
  // now, and its EOF comes with that read.
  if (readingHeld_[dir]) return;
  // The poll may see a reset as a hang-up only (no POLLERR): a reset must
  // not pass for an EOF, or the other direction would wait for a socket
  // that takes nothing any more.
  onEnd(side, resetByPeer(side, progress(side.fd(), false).closed) ? -ECONNRESET : 0);
}

// `side` is closed (`closed`, from its Progress) and sluiced never sent it a
// FIN: its peer reset it.
bool TcpProxy::resetByPeer(const TcpSide& side, bool closed) const {
  const bool finSent = side.isClient() ? shutTo_[1] : shutTo_[0];
  return closed && !finSent;
}

// Writes what the daemon read from a held source to its destination, once
// the destination's TCP has taken every byte given to it before: all the
// kernel redirected and all the daemon wrote. Then tells the kernel how far
// it got, which is what lets the verdict splice this direction again.
void TcpProxy::flushHeld(int dir) {
  if (closing_ || pending_[dir].empty()) return;
  TcpSide* src = dir == 0 ? client_ : upstream_;
  TcpSide* dst = peerOf(*src);
  L4Splicer* sp = worker_.engine().options().l4Splicer;
  std::optional<L4Splicer::Direction> d = sp ? sp->direction(src->fd()) : std::nullopt;
  Progress out = progress(dst->fd(), false);
  if (!d || !out.ok) {
    resetBoth();
    return;
  }
  if (out.written < d->redirected + copied_[dir]) {
    if (resetByPeer(*dst, out.closed)) {
      // It will never take what it was given.
      onEnd(*dst, -ECONNRESET);
      return;
    }
    src->pauseReading();
    // Its own earlier writes: onDrained comes back. The kernel's: a timer.
    if (dst->unsentBytes() == 0) {
      flushWaitNs_ = flushWaitNs_ ? std::min(flushWaitNs_ * 2, kFlushMaxWaitNs) : kFlushFirstWaitNs;
      worker_.timers().schedule(flushTimer_, flushWaitNs_);
    }
    return;
  }
  flushWaitNs_ = 0;
  const uint64_t n = pending_[dir].size();
  dst->write(std::move(pending_[dir]));
  pending_[dir].clear();
  copied_[dir] += n;
  sp->copied(src->fd(), copied_[dir]);
  if (dst->unsentBytes() > kMaxBuffered) {
    src->pauseReading();
  } else if (readingHeld_[dir] && src->readingPaused() && !eofFrom_[dir]) {
    src->startReading();
  }
}

void TcpProxy::onFlushTick() {
  for (int dir = 0; dir < 2 && !closing_; ++dir) flushHeld(dir);
  if (!closing_ && (eofFrom_[0] || eofFrom_[1])) checkSplicedDrain();
}

// The kernel moves a spliced pair's bytes asynchronously (a redirected skb
// can wait in the destination's psock queue): a FIN passed on too early would
// cut the stream. So each direction is shut only once the destination has
// taken as many bytes as the source received.
void TcpProxy::checkSplicedDrain() {
  uint64_t written = 0;
  for (int dir = 0; dir < 2; ++dir) {
    if (!eofFrom_[dir] || shutTo_[dir]) continue;
    TcpSide* src = dir == 0 ? client_ : upstream_;
    TcpSide* dst = peerOf(*src);
    if (!pending_[dir].empty()) flushHeld(dir);
    if (closing_) return;
    Progress in = progress(src->fd(), true);
    Progress out = progress(dst->fd(), eofFrom_[1 - dir]);
    if (!in.ok || !out.ok) {
      closeBoth();
      return;
    }
    if (out.written < in.received && resetByPeer(*dst, out.closed)) {
      onEnd(*dst, -ECONNRESET);
      return;
    }
    written += out.written;
    if (pending_[dir].empty() && dst->unsentBytes() == 0 && out.written >= in.received) {
      shutTo_[dir] = true;
      ::shutdown(dst->fd(), SHUT_WR);
    }
  }
  if (shutTo_[0] && shutTo_[1]) {
    closeBoth();
    return;
  }
  bool waiting = (eofFrom_[0] && !shutTo_[0]) || (eofFrom_[1] && !shutTo_[1]);
  if (!waiting) return;
  // A slow reader drains slowly: only a destination that takes nothing for
  // the whole wait is given up on.
  if (written != drainWritten_) {
    drainWritten_ = written;
    drainTicks_ = 0;
  }
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
  // The upstream's TLS handshake has the connect timeout.
  if (upstreamTlsPending_ && upstream_ && !upstream_->transportReady() &&
      worker_.clock().nowNs() >= upstreamTlsDeadlineNs_) {
    worker_.stats().inc(Counter::UpstreamSslHandshakeError);
    closeBoth();
    return;
  }
  // A terminating TLS server's client has --tls-handshake-timeout to finish.
  if (clientTls_ && client_ && !client_->transportReady() && handshakeDeadlineNs_ &&
      worker_.clock().nowNs() >= handshakeDeadlineNs_) {
    worker_.stats().inc(Counter::SslHandshakeTimeout);
    closeBoth();
    return;
  }
  uint64_t idle = idleMs();
  if (idle * 1'000'000 >= idleTimeoutNs_) {
    worker_.stats().inc(Counter::TcpIdleTimeout);
    closeBoth();
    return;
  }
  uint64_t left = idleTimeoutNs_ - idle * 1'000'000;
  worker_.timers().schedule(idleTimer_, std::min<uint64_t>(left + 1'000'000, 1'000'000'000));
}

void TcpProxy::closeBoth(bool reset) {
  if (closing_) return;
  closing_ = true;
  drainTimer_.cancel();
  idleTimer_.cancel();
  flushTimer_.cancel();
  holdCheckTimer_.cancel();
  if (spliced_) {
    if (L4Splicer* sp = worker_.engine().options().l4Splicer)
      sp->detach(client_->fd(), upstream_->fd());
  }
  client_->close(reset);
  upstream_->close(reset);
}

// An end failed, or the spliced stream cannot go on exactly (the kernel's
// state for it is gone or broken): both ends get an RST, so neither takes
// the bytes it got for the whole stream.
void TcpProxy::resetBoth() {
  if (closing_) return;
  worker_.stats().inc(Counter::TcpCxError);
  closeBoth(true);
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
      flushTimer_.cancel();
      holdCheckTimer_.cancel();
      if (TcpSide* other = client_ ? client_ : upstream_) other->close();
    }
    return;
  }
  if (endpoint_) endpoint_->decActive();
  delete this;
}

}  // namespace sluice::proxy
