// The transport seam of Connection, on a real worker loop: a toy transport
// (a greeting each way, then every byte XOR 0x20) between a socketpair and
// an echoing connection. What the codec sees is plaintext, what the peer
// sees is the wire form, writes made before the greeting wait for it, and a
// protocol error closes the connection.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "proxy/connection.h"
#include "proxy/transport.h"
#include "worker_script.h"

namespace sluice::proxy {
namespace {

constexpr std::string_view kHello = "HELLO\n";
constexpr std::string_view kBye = "BYE\n";

std::string xored(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(c ^ 0x20);
  return out;
}

class XorTransport final : public Transport {
 public:
  void onStart(std::string& wire) override { wire.append(kHello); }
  bool onReceived(std::string_view received, std::string& plain, std::string& wire) override {
    if (!greeted_) {
      greeting_.append(received);
      if (greeting_.size() < kHello.size()) return kHello.starts_with(greeting_);
      if (!greeting_.starts_with(kHello)) return false;
      greeted_ = true;
      received = std::string_view(greeting_).substr(kHello.size());
      wire.append(held_);  // writes made before the greeting
      held_.clear();
    }
    for (char c : received) {
      if (static_cast<unsigned char>(c) == 0xff) return false;  // not a byte this protocol sends
      plain.push_back(char(c ^ 0x20));
    }
    return true;
  }
  void onWrite(std::string_view plain, std::string& wire) override { (greeted_ ? wire : held_).append(xored(plain)); }
  // Its end-of-stream mark, as TLS sends close_notify.
  void onClose(std::string& wire) override { (greeted_ ? wire : held_).append(kBye); }
  size_t heldBytes() const override { return held_.size(); }

 private:
  bool greeted_ = false;
  std::string greeting_;
  std::string held_;
};

struct Seen {
  std::string plain;  // what the connection's codec got
  int closedWith = 1;  // 1: still open
};

class EchoConn final : public Connection {
 public:
  EchoConn(Worker& w, int fd, Seen& seen) : Connection(w, fd), seen_(seen) {}

 private:
  void onData() override {
    seen_.plain += input_;
    write(std::string_view(input_));
    consumeInput(input_.size());
  }
  void onPeerClosed(int err) override {
    seen_.closedWith = err;
    close();
  }
  Seen& seen_;
};

class TransportTest : public ::testing::Test {
 protected:
  TransportTest() : engine_(EngineOptions{}), worker_(engine_, 0) {
    EXPECT_TRUE(worker_.init(loopback(0)).has_value());
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
  }
  ~TransportTest() override { ::close(fds_[1]); }

  // Starts the connection on fds_[0] with the toy transport.
  EchoConn* start() {
    auto* c = new EchoConn(worker_, fds_[0], seen_);
    c->setTransport(std::make_unique<XorTransport>());
    c->write(std::string_view("early"));
    c->startReading();
    return c;
  }
  // Reads what the peer has been sent so far into peerGot_.
  void drainPeer() {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fds_[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0;) peerGot_.append(buf, size_t(n));
  }
  void send(std::string_view bytes) { ASSERT_EQ(::send(fds_[1], bytes.data(), bytes.size(), 0), ssize_t(bytes.size())); }

  Engine engine_;
  Worker worker_;
  int fds_[2] = {-1, -1};
  Seen seen_;
  std::string peerGot_;
};

TEST_F(TransportTest, TheCodecSeesPlaintextAndThePeerTheWireForm) {
  Script script(engine_, worker_,
                {[&] {
                   start();
                   return true;
                 },
                 [&] {
                   drainPeer();
                   return peerGot_ == kHello;  // the greeting, and nothing written yet goes before it
                 },
                 [&] {
                   // The greeting arrives split, with the first bytes behind it.
                   send("HEL");
                   send("LO\n" + xored("ping"));
                   return true;
                 },
                 [&] {
                   drainPeer();
                   return seen_.plain == "ping" && peerGot_.size() >= kHello.size() + 9;
                 },
                 [&] {
                   ::shutdown(fds_[1], SHUT_WR);
                   return true;
                 },
                 [&] { return seen_.closedWith == 0; }});
  ASSERT_TRUE(script.run()) << "plain '" << seen_.plain << "', peer got '" << peerGot_ << "'";
  EXPECT_EQ(peerGot_, std::string(kHello) + xored("early") + xored("ping"));
}

TEST_F(TransportTest, CloseAfterFlushWaitsForWhatTheTransportHolds) {
  bool eof = false;
  Script script(engine_, worker_,
                {[&] {
                   EchoConn* c = start();
                   EXPECT_EQ(c->unsentBytes(), kHello.size() + 5) << "the greeting, and 'early' held";
                   // Closing: the transport's end mark is held after 'early'.
                   c->closeAfterFlush();
                   return true;
                 },
                 [&] {
                   drainPeer();
                   return peerGot_ == kHello;
                 },
                 [&] {
                   // Still open: "early" has not gone out yet.
                   char b;
                   EXPECT_EQ(::recv(fds_[1], &b, 1, MSG_DONTWAIT), -1);
                   send(kHello);
                   return true;
                 },
                 [&] {
                   char buf[64];
                   ssize_t n;
                   while ((n = ::recv(fds_[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0) peerGot_.append(buf, size_t(n));
                   eof = n == 0;
                   return eof;
                 }});
  ASSERT_TRUE(script.run()) << "peer got '" << peerGot_ << "'";
  EXPECT_EQ(peerGot_, std::string(kHello) + xored("early") + std::string(kBye)) << "the end mark comes last";
}

TEST_F(TransportTest, AProtocolErrorClosesTheConnection) {
  Script script(engine_, worker_,
                {[&] {
                   start();
                   send(std::string(kHello) + xored("ok") + "\xff" + xored("never"));
                   return true;
                 },
                 [&] { return seen_.closedWith != 1; }});
  ASSERT_TRUE(script.run());
  EXPECT_EQ(seen_.closedWith, -EPROTO);
  EXPECT_EQ(seen_.plain, "ok") << "bytes before the error still reach the codec";
}

TEST_F(TransportTest, AWrongGreetingIsRefusedBeforeAnyPlaintext) {
  Script script(engine_, worker_,
                {[&] {
                   start();
                   send("HOLA!\n");
                   return true;
                 },
                 [&] { return seen_.closedWith != 1; }});
  ASSERT_TRUE(script.run());
  EXPECT_EQ(seen_.closedWith, -EPROTO);
  EXPECT_EQ(seen_.plain, "");
}

}  // namespace
}  // namespace sluice::proxy
