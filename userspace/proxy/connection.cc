#include "proxy/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/worker.h"

namespace sluice::proxy {

Connection::Connection(Worker& worker, int fd) : worker_(worker), fd_(fd) {}

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}

void Connection::track(core::IoOp&) { ++inflight_; }

void Connection::startReading() {
  paused_ = false;
  if (recvArmed_ || closing_ || peerClosed_) return;
  io_uring_sqe* s = worker_.ring().sqeFor(recvOp_);
  if (ownBuf_) {
    io_uring_prep_recv(s, fd_, ownBuf_.get(), kOwnBufSize, 0);
  } else if (pausedOnce_ && !cancelEveryPause_) {
    io_uring_prep_recv(s, fd_, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = worker_.buffers().groupId();
  } else {
    io_uring_prep_recv_multishot(s, fd_, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = worker_.buffers().groupId();
  }
  recvArmed_ = true;
  ++inflight_;
}

void Connection::useOneShotRecv() {
  if (!ownBuf_) ownBuf_ = std::make_unique<char[]>(kOwnBufSize);
}

void Connection::pauseReading() {
  if (paused_) return;
  paused_ = true;
  if (!recvArmed_ || ownBuf_ || (pausedOnce_ && !cancelEveryPause_)) return;
  pausedOnce_ = true;
  io_uring_sqe* s = worker_.ring().sqe();
  io_uring_prep_cancel(s, &recvOp_, 0);
  io_uring_sqe_set_data(s, nullptr);
}

// Writes are gathered until the end of the worker's loop turn (flush()), so
// a response head and the first body bytes, or several pipelined answers,
// leave in one send and one TCP segment instead of one each.
// Through a transport, plaintext is gathered the same way and encoded at
// send time (submitSend): a response head and its body become one TLS
// record, not one each, which is less work for both ends.
void Connection::write(std::string_view data) {
  if (closing_ || data.empty()) return;
  if (transport_) {
    plainOut_.append(data);
  } else {
    pending_.append(data);
  }
  queueFlush();
}

void Connection::write(std::string&& data) {
  if (closing_ || data.empty()) return;
  if (transport_) {
    write(std::string_view(data));
    return;
  }
  if (pending_.empty()) {
    pending_ = std::move(data);
  } else {
    pending_.append(data);
  }
  queueFlush();
}

void Connection::setTransport(std::unique_ptr<Transport> t) {
  transport_ = std::move(t);
  transportReady_ = transport_->ready();
  std::string wire;
  transport_->onStart(wire);
  sendWire(wire);
}

void Connection::sendWire(std::string_view wire) {
  if (closing_ || wire.empty()) return;
  pending_.append(wire);
  queueFlush();
}

bool Connection::received(const char* data, size_t n) {
  bytesIn_ += uint64_t(n);
  if (!transport_) {
    input_.append(data, n);
    return true;
  }
  std::string wire;
  const bool ok = transport_->onReceived(std::string_view(data, n), input_, wire);
  sendWire(wire);
  if (closeAfterFlush_ && transport_->heldBytes() == 0) pauseReading();
  return ok;
}

void Connection::queueFlush() {
  if (sendInFlight_ || flushQueued_) return;
  flushQueued_ = true;
  worker_.flushLater(this);
}

void Connection::flush() {
  if (closing_) {
    flushQueued_ = false;
    return;
  }
  beforeSend();  // its writes find flushQueued_ set: nothing queued twice
  flushQueued_ = false;
  if (!closing_ && !sendInFlight_) submitSend();
}

void Connection::encodePlain() {
  if (transport_ && !plainOut_.empty()) {
    transport_->onWrite(plainOut_, pending_);
    plainOut_.clear();
  }
}

void Connection::submitSend() {
  encodePlain();
  if (sentOff_ >= sending_.size()) {
    sending_.clear();
    sentOff_ = 0;
    if (pending_.empty()) return;
    sending_.swap(pending_);
  }
  io_uring_sqe* s = worker_.ring().sqeFor(sendOp_);
  io_uring_prep_send(s, fd_, sending_.data() + sentOff_, sending_.size() - sentOff_, MSG_NOSIGNAL);
  sendInFlight_ = true;
  ++inflight_;
}

void Connection::close(bool reset) {
  if (closing_) return;
  closing_ = true;
  if (reset) {
    // Linger 0: the final close() sends an RST and drops what is unsent.
    linger lg{.l_onoff = 1, .l_linger = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  if (inflight_ > 0) {
    // Shut the socket so in-flight recv/send complete promptly, then cancel
    // whatever is still queued. Only the read side for a reset: shutting
    // the write side would send a FIN ahead of the RST.
    ::shutdown(fd_, reset ? SHUT_RD : SHUT_RDWR);
    io_uring_sqe* s = worker_.ring().sqe();
    io_uring_prep_cancel_fd(s, fd_, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(s, nullptr);
  } else if (!destroyQueued_) {
    destroyQueued_ = true;
    worker_.destroyLater(this);
  }
}

int Connection::releaseFd() {
  if (inflight_ > 0 || closing_) return -1;
  const int fd = fd_;
  fd_ = -1;
  closing_ = true;
  if (!destroyQueued_) {
    destroyQueued_ = true;
    worker_.destroyLater(this);
  }
  return fd;
}

void Connection::closeAfterFlush() {
  closeAfterFlush_ = true;
  // A transport holding plaintext may need the peer's bytes to release it
  // (a handshake): reading goes on until it holds nothing.
  encodePlain();
  if (transport_ && !transportClosed_) {
    transportClosed_ = true;
    std::string wire;
    transport_->onClose(wire);
    sendWire(wire);
  }
  if (!transport_ || transport_->heldBytes() == 0) pauseReading();
  if (unsentBytes() == 0) close();
}

void Connection::finishOp() {
  if (--inflight_ == 0 && closing_ && !destroyQueued_) {
    destroyQueued_ = true;
    worker_.destroyLater(this);
  }
}

void Connection::onCompletion(uint8_t op, int32_t res, uint32_t flags) {
  switch (op) {
    case kRecv:
      handleRecv(res, flags);
      break;
    case kSend:
      handleSend(res);
      break;
    default:
      if (!closing_) onOtherCompletion(op, res);
      finishOp();
      break;
  }
}

void Connection::handleRecv(int32_t res, uint32_t flags) {
  worker_.stats().inc(stats::Counter::CompletionsRecv);
  bool more = flags & IORING_CQE_F_MORE;
  if (!more) recvArmed_ = false;
  const size_t had = input_.size();
  bool ok = true;
  if (res > 0 && !(flags & IORING_CQE_F_BUFFER)) {
    // One-shot recv into this connection's own buffer.
    if (!closing_) ok = received(ownBuf_.get(), size_t(res));
  } else if (res > 0) {
    uint16_t bid = uint16_t(flags >> IORING_CQE_BUFFER_SHIFT);
    if (!closing_) ok = received(worker_.buffers().buffer(bid), size_t(res));
    worker_.buffers().recycle(bid);
  }
  if (!more) finishOp();
  if (closing_) return;
  if (ok && !transportReady_ && transport_ && transport_->ready()) {
    transportReady_ = true;
    onTransportReady();
    if (closing_) return;
  }
  if (!ok) {
    // What the transport completed before the error is the peer's, as
    // bytes before a reset are; then the connection ends.
    if (input_.size() > had) onData();
    if (closing_ || peerClosed_) return;
    peerClosed_ = true;
    onPeerClosed(-EPROTO);
    return;
  }
  if (res > 0) {
    // A transport may have taken the bytes without completing plaintext
    // (a handshake): the codec has nothing new then.
    if (input_.size() > had) onData();
    if (transport_ && transport_->peerClosed() && !closing_ && !peerClosed_) {
      peerClosed_ = true;
      onPeerClosed(0);
      return;
    }
    // onData may have paused or closed us; otherwise keep the recv armed
    // (a multishot recv ends when the buffer group runs dry).
    if (!closing_ && !more && !paused_ && !peerClosed_) {
      if (!ownBuf_) worker_.stats().inc(stats::Counter::RecvRearm);
      startReading();
    }
    return;
  }
  if (res == -ENOBUFS) {
    worker_.noteBufferExhaustion();
    if (!paused_) startReading();
    return;
  }
  if (res == -ECANCELED) {
    if (!paused_ && !closing_) startReading();  // cancelled, then resumed
    return;
  }
  peerClosed_ = true;
  onPeerClosed(res == 0 ? 0 : res);
}

void Connection::handleSend(int32_t res) {
  worker_.stats().inc(stats::Counter::CompletionsSend);
  sendInFlight_ = false;
  finishOp();
  if (closing_) return;
  if (res < 0) {
    peerClosed_ = true;
    onPeerClosed(res);
    return;
  }
  sentOff_ += size_t(res);
  bytesOut_ += uint64_t(res);
  onSendProgress();
  if (closing_) return;
  if (sentOff_ >= sending_.size()) {
    flushQueued_ = true;  // as in flush(): beforeSend's writes go out below
    beforeSend();
    flushQueued_ = false;
    if (closing_) return;
  }
  submitSend();
  // Done when nothing is in flight and nothing is held (a transport may
  // still hold plaintext until its handshake ends).
  if (!sendInFlight_ && unsentBytes() == 0) {
    if (closeAfterFlush_) {
      close();
      return;
    }
    onDrained();
  }
}

}  // namespace sluice::proxy
