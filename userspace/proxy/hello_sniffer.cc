#include "proxy/hello_sniffer.h"

#include <arpa/inet.h>

#include "proxy/http_session.h"
#include "proxy/tcp_proxy.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"
#include "tls/client_hello.h"
#include "tls/credential_store.h"

namespace sluice::proxy {

using stats::Counter;

HelloSniffer::HelloSniffer(Worker& worker, int fd, const sockaddr_in& peer, ConnectionSlot slot,
                           uint64_t listenerKey)
    : Connection(worker, fd), peer_(peer), slot_(std::move(slot)), key_(listenerKey) {
  worker_.addDownstream(this);
}

void HelloSniffer::start() {
  useSingleRecv();
  startReading();
  // The whole handshake has --tls-handshake-timeout; the hello is its start.
  if (uint64_t limit = worker_.engine().options().tlsHandshakeTimeoutNs) {
    deadlineNs_ = worker_.clock().nowNs() + limit;
    worker_.timers().schedule(timer_, limit);
  }
}

std::string HelloSniffer::peerText() const {
  char addr[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &peer_.sin_addr, addr, sizeof(addr));
  return std::string(addr) + ":" + std::to_string(ntohs(peer_.sin_port));
}

void HelloSniffer::refuse(Counter counter, std::string_view reason) {
  worker_.stats().inc(counter);
  logTlsFailure(worker_, peerText(), reason);
  close();
}

void HelloSniffer::onTimeout() {
  if (closing()) return;
  refuse(Counter::SslHandshakeTimeout, "handshake timeout (no whole ClientHello)");
}

void HelloSniffer::onPeerClosed(int) { close(); }

void HelloSniffer::onDestroy() {
  timer_.cancel();
  worker_.removeDownstream(this);
}

void HelloSniffer::onData() {
  // Parse only when another whole record has come (a hello trickled in
  // tiny pieces must not be re-read per byte), and in at most 32 records.
  // A header that cannot start a ClientHello record (type, version, size,
  // or a first message that is not a ClientHello) is judged at once.
  size_t complete = 0;
  bool other = input_.empty() || uint8_t(input_[0]) != 22 ||
               (input_.size() > 1 && uint8_t(input_[1]) != 3) ||
               (input_.size() > 5 && uint8_t(input_[5]) != 1);
  for (size_t off = 0; !other && input_.size() - off >= 5;) {
    const size_t len = (size_t(uint8_t(input_[off + 3])) << 8) | uint8_t(input_[off + 4]);
    if (uint8_t(input_[off]) != 22 || uint8_t(input_[off + 1]) != 3 || len == 0 || len > (1u << 14) + 2048) {
      other = true;
      break;
    }
    if (input_.size() - off - 5 < len) break;
    off += 5 + len;
    ++complete;
  }
  if (complete > kMaxHelloRecords) {
    refuse(Counter::SslHandshakeError, "ClientHello in too many records");
    return;
  }
  if (!other && complete == recordsParsed_) {
    if (input_.size() > 2 * tls::kMaxClientHello) refuse(Counter::SslHandshakeError, "ClientHello too large");
    return;  // the next recv is armed after this returns
  }
  recordsParsed_ = complete;
  const tls::ClientHello hello = tls::parseClientHello(input_);
  switch (hello.status) {
    case tls::ClientHello::Status::kNeedMore:
      if (input_.size() > 2 * tls::kMaxClientHello) refuse(Counter::SslHandshakeError, "ClientHello too large");
      return;  // the next recv is armed after this returns
    case tls::ClientHello::Status::kNotTls:
      refuse(Counter::SslHandshakeError, "not a TLS handshake (plaintext on a TLS port?)");
      return;
    case tls::ClientHello::Status::kInvalid:
      refuse(Counter::SslHandshakeError, "malformed ClientHello");
      return;
    case tls::ClientHello::Status::kOk:
      break;
  }
  const std::string& sni = hello.serverName;
  std::shared_ptr<const route::Snapshot> snap = worker_.snapshot();
  const route::GatewayListener* l = snap ? snap->findGatewayListener(key_) : nullptr;
  const route::GatewayTlsServer* server = l ? l->selectServer(sni) : nullptr;
  if (!server) {
    refuse(Counter::ListenerNoFilterChainMatch, "no server for SNI \"" + sni + "\"");
    return;
  }
  if (server->passthrough) {
    const route::TcpRoute* route = server->routeFor(sni);
    if (!route) {
      refuse(Counter::NoRoute, server->label + ": no tls route for SNI \"" + sni + "\"");
      return;
    }
    std::string bytes = std::move(input_);
    const int fd = releaseFd();
    if (fd < 0) return close();
    TcpProxy::startRoute(worker_, fd, std::move(snap), *route, std::move(slot_), std::move(bytes));
    return;
  }
  std::shared_ptr<const tls::ServerContext> ctx = server->credentials ? server->credentials->current() : nullptr;
  if (!ctx) {
    refuse(Counter::SslHandshakeError, server->label + ": no certificate loaded");
    return;
  }
  std::string bytes = std::move(input_);
  const int fd = releaseFd();
  if (fd < 0) return close();
  if (server->tcpRoute) {
    TcpProxy::startRoute(worker_, fd, std::move(snap), *server->tcpRoute, std::move(slot_), std::move(bytes),
                         std::make_unique<TlsServerTransport>(worker_, std::move(ctx), sni, peerText()), deadlineNs_);
    return;
  }
  auto* c = new DownstreamConn(worker_, fd, peer_, nullptr, std::move(slot_), key_);
  if (c->useTls(*server, std::move(ctx), sni, peerText(), bytes, deadlineNs_)) c->start();
}

}  // namespace sluice::proxy
