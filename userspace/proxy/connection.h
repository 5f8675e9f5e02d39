// A TCP socket driven by the worker's io_uring: multishot recv into the
// worker's provided buffers, one send in flight with a second buffer filling
// behind it, and deferred destruction once no operation references it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/ring.h"
#include "proxy/transport.h"

namespace sluice::proxy {

class Worker;

class Connection : public core::CompletionHandler {
 public:
  Connection(Worker& worker, int fd);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Arms (or re-arms) recv: multishot until the first pause, one recv at a
  // time after it or after useOneShotRecv(). Idempotent.
  void startReading();
  // Stops delivering data until startReading(); bytes wait in the kernel.
  // The first pause cancels the multishot recv; from then on the connection
  // reads one recv at a time (into the shared ring's buffers), so a pause
  // never cancels again and a recv in flight may still deliver one buffer.
  // A multishot recv re-armed after its cancel sometimes missed a reset that
  // came next (6.18: armed on a closed socket with ECONNRESET pending; in
  // ProxyLifecycle.AnUpstreamReset... 6 of 84 rounds before, 0 of 140 after).
  void pauseReading();
  // From the next startReading() on, one recv at a time into a buffer of
  // this connection's own (kOwnBufSize, so a read moves as much as four of
  // the shared ring's buffers), and pausing never cancels. For a connection
  // that pauses often and moves bulk (the TCP route's copy loop).
  void useOneShotRecv();
  // Every pause cancels the multishot recv, so nothing is read while paused
  // (not even one buffer in flight). For a spliced side, whose bytes belong
  // to the kernel's verdict whenever the daemon does not read it.
  void cancelEveryPause() { cancelEveryPause_ = true; }
  // One recv at a time from the start (into the shared ring's buffers), so
  // that after a completion no read is armed: see releaseFd().
  void useSingleRecv() { pausedOnce_ = true; }
  // Gives the socket to someone else (a connection of another kind): the
  // object goes away without closing it. Only with nothing in flight (a
  // single-recv connection, from its onData); -1 otherwise.
  int releaseFd();
  bool readingPaused() const { return paused_; }
  // No transport, or its handshake is done.
  bool transportReady() const { return transportReady_; }

  // From now on bytes pass through `t` both ways (see transport.h); its
  // opening bytes are sent at once. Set before the first byte is read.
  void setTransport(std::unique_ptr<Transport> t);
  // Bytes read off this socket by its previous owner (releaseFd), taken
  // as if received now; false when the transport refused them.
  bool injectReceived(std::string_view bytes) { return received(bytes.data(), bytes.size()); }

  // Plaintext for the peer (through the transport, if any).
  void write(std::string_view data);
  void write(std::string&& data);
  // Bytes accepted by write() and not yet acknowledged by the kernel.
  size_t unsentBytes() const {
    return (sending_.size() - sentOff_) + pending_.size() + plainOut_.size() +
           (transport_ ? transport_->heldBytes() : 0);
  }

  // Starts teardown: cancels every operation, closes the fd when the last
  // completion arrives, then deletes the object. Safe to call repeatedly.
  // `reset`: the peer gets an RST instead of a FIN, so a stream cut short
  // cannot pass for a complete one.
  void close(bool reset = false);
  // Closes once every written byte has been sent.
  void closeAfterFlush();
  bool closing() const { return closing_ || closeAfterFlush_; }
  // The worker began draining (SIGTERM). Default: keep going until done or
  // until the drain deadline closes everything.
  virtual void drain() {}
  // Overloaded (--max-heap): a connection with nothing in flight closes.
  virtual void shedIfIdle() {}
  int fd() const { return fd_; }

 protected:
  virtual ~Connection();
  // New bytes were appended to input_.
  virtual void onData() = 0;
  // The peer closed (err == 0) or the socket failed (err = -errno).
  virtual void onPeerClosed(int err) = 0;
  // Everything written so far has been sent.
  virtual void onDrained() {}
  // Some bytes were sent (progress, for idle timeouts).
  virtual void onSendProgress() {}
  // Called once, just before deletion.
  virtual void onDestroy() {}
  // The transport set with setTransport() became ready (its handshake ended).
  virtual void onTransportReady() {}
  // The worker is about to send what was written this loop turn (and
  // after each send completes): a codec that produces bytes lazily (HTTP/2
  // frames) writes them now. Writes made here need no further flush.
  virtual void beforeSend() {}
  // Asks for beforeSend() at the end of this loop turn, even with nothing
  // written yet.
  void queueSend() { queueFlush(); }
  // Extra completions (connect) for subclasses.
  virtual void onOtherCompletion(uint8_t, int32_t) {}

  void consumeInput(size_t n) { input_.erase(0, n); }
  void track(core::IoOp& op);  // counts a subclass op as in flight

  Worker& worker_;
  std::string input_;
  int fd_;
  uint64_t bytesIn_ = 0;
  uint64_t bytesOut_ = 0;

  enum OpKind : uint8_t { kRecv = 1, kSend = 2, kConnect = 3 };

 private:
  friend class Worker;
  void onCompletion(uint8_t op, int32_t res, uint32_t flags) override;
  void handleRecv(int32_t res, uint32_t flags);
  // Bytes off the socket: into input_, through the transport if any. False
  // when the transport refused them (the connection is being reset).
  bool received(const char* data, size_t n);
  void sendWire(std::string_view wire);
  // Hands plaintext written so far to the transport (pending_ gets its wire form).
  void encodePlain();
  void handleSend(int32_t res);
  void submitSend();
  void queueFlush();
  void flush();  // called by the worker once per loop turn
  void finishOp();

  core::IoOp recvOp_{this, kRecv};
  core::IoOp sendOp_{this, kSend};
  std::string sending_;  // owned by the kernel while a send is in flight
  std::string pending_;  // appended to while `sending_` is in flight
  std::string plainOut_;  // with a transport: plaintext written, encoded when sent
  size_t sentOff_ = 0;
  int inflight_ = 0;
  bool recvArmed_ = false;
  static constexpr size_t kOwnBufSize = 64 * 1024;
  // Set: one-shot recvs into it (owned by the kernel while one is armed).
  std::unique_ptr<char[]> ownBuf_;
  std::unique_ptr<Transport> transport_;
  bool sendInFlight_ = false;
  bool paused_ = false;
  bool pausedOnce_ = false;  // one-shot recvs from the first pause on
  bool cancelEveryPause_ = false;
  bool closing_ = false;
  bool closeAfterFlush_ = false;
  bool peerClosed_ = false;
  bool destroyQueued_ = false;
  bool flushQueued_ = false;
  bool transportReady_ = true;  // onTransportReady() called (or no transport)
  bool transportClosed_ = false;  // Transport::onClose() called
};

}  // namespace sluice::proxy
