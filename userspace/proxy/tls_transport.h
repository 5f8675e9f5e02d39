// TLS between a socket and the HTTP codec, both ways: termination on a
// gateway listener's connection (the HelloSniffer chose the server and
// its certificate) and origination to upstreams. Nothing blocks: a
// handshake advances as its bytes arrive on the ring.
#pragma once

#include <memory>
#include <string>

#include <netinet/in.h>

#include "proxy/transport.h"
#include "route/table.h"
#include "tls/context.h"
#include "tls/session.h"

namespace sluice::proxy {

class Worker;
struct EndpointState;

// Logs a TLS failure of the connection with `peer`, at most once per 10 s
// per worker (with how many were left out since).
void logTlsFailure(Worker& worker, const std::string& peer, std::string_view reason);

class TlsServerTransport final : public Transport {
 public:
  // `ctx`: the certificate of the server the ClientHello chose (by `sni`);
  // `peer` ("ip:port") names the client in the log.
  TlsServerTransport(Worker& worker, std::shared_ptr<const tls::ServerContext> ctx, std::string sni,
                     std::string peer);
  ~TlsServerTransport() override;

  bool onReceived(std::string_view received, std::string& plain, std::string& wire) override;
  void onWrite(std::string_view plain, std::string& wire) override;
  size_t heldBytes() const override { return held_.size(); }
  bool ready() const override { return established(); }
  bool peerClosed() const override { return session_.closeNotified(); }
  void onClose(std::string& wire) override { session_.shutdown(wire); }

  bool established() const { return session_.established(); }
  // The ClientHello's SNI (lower case; empty when it named none).
  const std::string& serverName() const { return sni_; }
  // Counts and logs a handshake that did not finish in time.
  void noteHandshakeTimeout();

 private:
  bool fail(std::string_view reason);

  Worker& worker_;
  tls::ServerSession session_;
  std::string sni_;
  std::string peer_;  // "ip:port", for the log
  std::string held_;  // plaintext written before the handshake ended
  bool failed_ = false;
};

// TLS origination to an upstream (DestinationRule trafficPolicy.tls): the
// ClientHello goes out at once, plaintext written before the handshake
// ends is held, and the endpoint's last session is offered for resumption.
// The TLS an upstream connection of a cluster with trafficPolicy.tls
// speaks, offering the endpoint's last session under the same client
// context (EndpointState::tlsSession); null when the cluster's
// certificates have not loaded (never plaintext instead).
class TlsClientTransport;
std::unique_ptr<TlsClientTransport> makeClientTls(Worker& worker, const route::UpstreamSettings& settings,
                                                  EndpointState& state, const sockaddr_in& addr);

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
  void onClose(std::string& wire) override { session_.shutdown(wire); }
  // The protocol the server chose by ALPN ("" when none).
  std::string_view alpn() const { return session_.alpn(); }

 private:
  Worker& worker_;
  tls::ClientSession session_;
  std::string peer_;  // the endpoint, for the log
  std::string held_;
  bool failed_ = false;
};

}  // namespace sluice::proxy
