// What sits between a connection's socket and its codec. A connection
// without one is plain: bytes go to the codec as they come and leave as
// they are written (the fast path, and the only one for spliced and sk_msg
// sockets). A transport (TLS next) turns received bytes into the codec's
// plaintext and the codec's writes into bytes for the wire, and may send
// bytes of its own (a handshake) on either call.
#pragma once

#include <string>
#include <string_view>

namespace sluice::proxy {

class Transport {
 public:
  virtual ~Transport() = default;
  // The connection starts: bytes to send before anything else (a client's
  // hello) go to `wire`.
  virtual void onStart(std::string& wire) { (void)wire; }
  // `received` came off the socket. The plaintext it completes is appended
  // to `plain`, bytes the transport must answer with to `wire`. False: the
  // peer broke the protocol; the codec gets the plaintext that came before,
  // then a peer-closed event with -EPROTO, and closes the connection.
  virtual bool onReceived(std::string_view received, std::string& plain, std::string& wire) = 0;
  // The codec writes `plain`: its wire form is appended to `wire` (or held
  // until the transport is ready, then sent with a later call's output).
  virtual void onWrite(std::string_view plain, std::string& wire) = 0;
  // Plaintext written but held (a handshake under way): it counts as unsent,
  // so back-pressure and close-after-flush wait for it.
  virtual size_t heldBytes() const { return 0; }
  // The transport carries plaintext both ways now (a handshake is done).
  virtual bool ready() const { return true; }
  // The peer ended its stream inside the protocol (TLS close_notify): the
  // codec gets a peer-closed event as for a FIN.
  virtual bool peerClosed() const { return false; }
  // The connection closes once what was written is sent: bytes that end
  // the protocol's stream (a TLS close_notify) go to `wire`, after all of
  // it. Called once; nothing is written after it.
  virtual void onClose(std::string& wire) { (void)wire; }
};

}  // namespace sluice::proxy
