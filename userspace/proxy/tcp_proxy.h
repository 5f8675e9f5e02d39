// L4 proxying of a captured connection to a TCP service port (VirtualService
// tcp routes, TCP Traffic Shifting): the route and endpoint are chosen once,
// at accept; then bytes flow between the two sockets until both sides have
// finished. With an L4Splicer (eBPF) the kernel moves them (sk_skb stream
// verdict) and the worker only watches for EOF and errors; otherwise a copy
// loop through the worker's ring relays them, with back-pressure.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "core/timer_wheel.h"
#include "proxy/connection.h"
#include "proxy/outbound.h"
#include "proxy/engine.h"
#include "route/table.h"
#include "upstream/circuit_breaker.h"
#include "tls/context.h"
#include "upstream/outlier.h"

namespace sluice::proxy {

class Worker;
struct EndpointState;

// What the kernel side offers the L4 path (implemented by the daemon's
// capture). All calls are made on worker threads.
class L4Splicer {
 public:
  virtual ~L4Splicer() = default;
  // Before connect(): keep the socket out of sk_msg redirection.
  virtual void prepareUpstream(int fd) = 0;
  // Both sockets connected: hand them to the kernel. false: copy instead.
  virtual bool attach(int clientFd, int upstreamFd) = 0;
  virtual void detach(int clientFd, int upstreamFd) = 0;
  // What the kernel did with the bytes `fd` received since attach(): how
  // many it moved to the partner, and whether it now holds them on `fd`
  // for the caller to copy (the partner fell too far behind). nullopt: not
  // attached, or unreadable.
  struct Direction {
    uint64_t redirected = 0;
    uint64_t kept = 0;
    bool held = false;
  };
  virtual std::optional<Direction> direction(int fd) = 0;
  // The daemon wrote `copied` bytes the kernel held on `fd` to its partner.
  virtual void copied(int fd, uint64_t copied) = 0;
};

class TcpProxy;

// One end of an L4 connection.
class TcpSide final : public OutboundConnection {
 public:
  TcpSide(Worker& worker, int fd, TcpProxy* proxy, bool client);

  // `timeoutNs` 0: the daemon's connect timeout.
  void connect(const sockaddr_in& addr, uint64_t timeoutNs = 0) { connectTo(addr, timeoutNs); }
  void watchForEnd();  // splice mode: one poll for RDHUP/HUP/ERR (if not armed yet)
  bool isClient() const { return client_; }
  // Bytes this side has received from its peer socket and written out.
  uint64_t bytesIn() const { return bytesIn_; }
  uint64_t bytesOut() const { return bytesOut_; }
  std::string takeInput() {
    std::string s = std::move(input_);
    input_.clear();
    return s;
  }
  void shutdownWrite();

 protected:
  ~TcpSide() override;

 private:
  void onData() override;
  void onPeerClosed(int err) override;
  void onDrained() override;
  void onDestroy() override;
  void onOwnCompletion(uint8_t op, int32_t res) override;
  void onConnected() override;
  void onConnectFailed(bool timedOut) override;

  enum : uint8_t { kPoll = 4 };
  TcpProxy* proxy_;
  bool client_;
  core::IoOp pollOp_{this, kPoll};
  bool shutWrite_ = false;
  bool writeShutPending_ = false;
  bool watching_ = false;  // the poll of watchForEnd() is armed
};

class TcpProxy {
 public:
  // Takes `clientFd`. Picks route, cluster and endpoint; connects; closes
  // the client at once when nothing can serve it.
  static void start(Worker& worker, int clientFd, const sockaddr_in& client, const sockaddr_in& orig,
                    std::shared_ptr<const route::Snapshot> snap, const route::TcpService& svc,
                    ConnectionSlot slot = {});
  // A connection whose route is already chosen (a gateway PASSTHROUGH
  // server's, by SNI); `initial`: bytes read from the client before (its
  // ClientHello), sent to the upstream first. Always the copy loop.
  // With `clientTls`, the client's bytes pass through it (a TLS-protocol
  // gateway server that terminates): `initial` is fed to it instead, and
  // the upstream gets plaintext.
  // `handshakeDeadlineNs`: when clientTls's handshake must be done (0: no limit).
  static void startRoute(Worker& worker, int clientFd, std::shared_ptr<const route::Snapshot> snap,
                         const route::TcpRoute& route, ConnectionSlot slot, std::string initial,
                         std::unique_ptr<Transport> clientTls = nullptr, uint64_t handshakeDeadlineNs = 0);

  // From the sides.
  void onConnected();
  void onConnectFailed();
  void onData(TcpSide& from);
  void onEnd(TcpSide& side, int err);  // EOF (0) or error (<0) on `side`
  void onSplicedWake(TcpSide& side);  // its poll fired (splice mode)
  void onDrained(TcpSide& side);
  void onSideGone(TcpSide& side, bool closeOther);

 private:
  TcpProxy(Worker& worker, std::shared_ptr<const route::Snapshot> snap);
  // `orig`: where a captured client dialled (null on a gateway).
  static void startPicked(Worker& worker, int clientFd, const sockaddr_in* orig,
                          std::shared_ptr<const route::Snapshot> snap, const route::TcpRoute* route,
                          ConnectionSlot slot, std::string initial, std::unique_ptr<Transport> clientTls,
                          uint64_t handshakeDeadlineNs);
  TcpSide* peerOf(TcpSide& s) { return &s == client_ ? upstream_ : client_; }
  void closeBoth(bool reset = false);
  void resetBoth();  // counts an error; RSTs both ends
  bool resetByPeer(const TcpSide& side, bool closed) const;
  bool pollHeld(bool* moved);
  void onHoldCheck();
  void flushHeld(int dir);
  void onFlushTick();
  void checkSplicedDrain();
  void onDrainTick();
  void onIdleCheck();
  // Milliseconds since a byte last moved either way on either socket.
  uint64_t idleMs() const;

  Worker& worker_;
  std::shared_ptr<const route::Snapshot> snap_;
  ConnectionSlot slot_;  // the client connection's unit of --max-connections
  std::string initial_;  // client bytes read before the proxy began, for the upstream
  bool clientTls_ = false;  // the client side terminates TLS: never spliced
  uint64_t handshakeDeadlineNs_ = 0;  // ... and must finish its handshake by then (0: no limit)
  // DestinationRule tls on the route's cluster: the upstream side speaks
  // TLS (set on connect), its handshake within the connect timeout.
  std::shared_ptr<const tls::ClientContext> upstreamTls_;
  std::string upstreamKey_;  // the endpoint, for the log
  uint64_t upstreamTlsTimeoutNs_ = 0;
  uint64_t upstreamTlsDeadlineNs_ = 0;
  bool upstreamTlsPending_ = false;  // a TLS transport was set on the upstream side
  EndpointState* endpoint_ = nullptr;  // active L4 connections count for LEAST_REQUEST
  std::shared_ptr<upstream::ClusterHealth> health_;
  upstream::LimitToken connToken_;  // this connection's unit of maxConnections
  int endpointIndex_ = -1;
  TcpSide* client_ = nullptr;
  TcpSide* upstream_ = nullptr;
  bool spliced_ = false;
  bool closing_ = false;
  // Spliced, per direction ([0] client -> upstream, [1] upstream -> client).
  // While the kernel holds a direction (its reader fell behind), the daemon
  // reads its source: whatever the kernel keeps there waits in pending_
  // until the destination has taken everything given before it.
  bool readingHeld_[2] = {false, false};
  std::string pending_[2];
  uint64_t copied_[2] = {0, 0};  // held bytes the daemon wrote to the destination
  uint64_t lastRedirected_[2] = {0, 0};
  uint64_t holdCheckNs_ = 0;
  uint64_t flushWaitNs_ = 0;
  uint64_t drainWritten_ = 0;
  core::MemberTimer<TcpProxy, &TcpProxy::onFlushTick> flushTimer_{this};
  core::MemberTimer<TcpProxy, &TcpProxy::onHoldCheck> holdCheckTimer_{this};
  // Per direction: the source side reached EOF / the destination was shut.
  bool eofFrom_[2] = {false, false};  // [0] client, [1] upstream
  bool shutTo_[2] = {false, false};   // [0] towards upstream, [1] towards client
  int drainTicks_ = 0;
  core::MemberTimer<TcpProxy, &TcpProxy::onDrainTick> drainTimer_{this};
  core::MemberTimer<TcpProxy, &TcpProxy::onIdleCheck> idleTimer_{this};
  uint64_t idleTimeoutNs_ = 0;
  uint64_t lastActivityNs_ = 0;  // copy mode
  int sides_ = 0;
};

}  // namespace sluice::proxy
