// TLS termination on a gateway listener's connection: reads the
// ClientHello, picks the listener's HTTPS server by SNI (its certificate
// and, later, its route table), then runs a tls::ServerSession between
// the socket and the HTTP codec. Nothing blocks: the handshake advances as
// its bytes arrive on the ring.
#pragma once

#include <memory>
#include <string>

#include "proxy/transport.h"
#include "tls/session.h"

namespace sluice::proxy {

class Worker;

class TlsServerTransport final : public Transport {
 public:
  // `listenerKey`: the route::GatewayListener the connection was accepted on.
  TlsServerTransport(Worker& worker, uint64_t listenerKey, std::string peer);
  ~TlsServerTransport() override;

  bool onReceived(std::string_view received, std::string& plain, std::string& wire) override;
  void onWrite(std::string_view plain, std::string& wire) override;
  size_t heldBytes() const override { return held_.size(); }

  bool established() const { return session_ && session_->established(); }
  bool ready() const override { return established(); }
  bool peerClosed() const override { return session_ && session_->closeNotified(); }
  // The ClientHello's SNI (lower case; empty when it named none).
  const std::string& serverName() const { return sni_; }
  // Counts and logs a handshake that did not finish in time.
  void noteHandshakeTimeout();

 private:
  bool fail(std::string_view reason);

  Worker& worker_;
  uint64_t key_;
  std::string peer_;   // "ip:port", for the log
  std::string hello_;  // bytes gathered until the ClientHello is whole
  std::unique_ptr<tls::ServerSession> session_;
  std::string held_;   // plaintext written before the handshake ended
  std::string sni_;
  bool failed_ = false;
};

// TLS origination to an upstream (DestinationRule trafficPolicy.tls): the
// ClientHello goes out at once, plaintext written before the handshake
// ends is held, and the endpoint's last session is offered for resumption.
class TlsClientTransport final : public Transport {
 public:
  TlsClientTransport(Worker& worker, std::shared_ptr<const tls::ClientContext> ctx,
                     std::shared_ptr<tls::ResumptionSlot> resume, std::string peer);
  void onStart(std::string& wire) override;
  bool onReceived(std::string_view received, std::string& plain, std::string& wire) override;
  void onWrite(std::string_view plain, std::string& wire) override;
  size_t heldBytes() const override { return held_.size(); }
  bool ready() const override { return session_.established(); }
  bool peerClosed() const override { return session_.closeNotified(); }

 private:
  Worker& worker_;
  tls::ClientSession session_;
  std::string peer_;  // the endpoint, for the log
  std::string held_;
  bool failed_ = false;
};

}  // namespace sluice::proxy
