// The first owner of a connection accepted on a TLS gateway listener: it
// reads the ClientHello (one recv at a time, so nothing is left armed),
// picks the listener's server by SNI, and hands the socket on: to a
// DownstreamConn that terminates TLS with that server's certificate, or,
// for a PASSTHROUGH server, to the L4 relay with the hello as its first
// bytes. Hostile or silent clients are closed and counted here, before
// any TLS state exists.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "core/timer_wheel.h"
#include "proxy/connection.h"
#include "proxy/engine.h"

namespace sluice::proxy {

class HelloSniffer final : public Connection {
 public:
  HelloSniffer(Worker& worker, int fd, const sockaddr_in& peer, ConnectionSlot slot, uint64_t listenerKey);
  void start();
  void drain() override { close(); }
  void shedIfIdle() override { close(); }

 private:
  void onData() override;
  void onPeerClosed(int err) override;
  void onDestroy() override;
  void onTimeout();
  void refuse(stats::Counter counter, std::string_view reason);
  std::string peerText() const;

  sockaddr_in peer_;
  uint64_t deadlineNs_ = 0;  // the handshake's end, from accept (0: no limit)
  size_t recordsParsed_ = 0;  // whole records input_ had at the last parse
  static constexpr size_t kMaxHelloRecords = 32;
  ConnectionSlot slot_;
  uint64_t key_;
  core::MemberTimer<HelloSniffer, &HelloSniffer::onTimeout> timer_{this};
};

}  // namespace sluice::proxy
