// HTTP/2 from clients: h2c with prior knowledge on the outbound listener
// (curl, h2load), the same routing and failure semantics as HTTP/1.1, and
// the defences, each driven by a client that writes its own frames: rapid
// reset, a CONTINUATION flood, an HPACK bomb, a SETTINGS flood and a client
// that never opens its window. After each, another client is served.
#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>

#include <atomic>
#include <thread>

#include "proxy_fixture.h"

namespace sluice::itest::proxy {
namespace {

// ----------------------------------------------------- a raw HTTP/2 client

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
enum : uint8_t { kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7, kContinuation = 9 };
enum : uint8_t { kEndStream = 1, kEndHeaders = 4, kAck = 1 };

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  const uint32_t len = uint32_t(payload.size());
  f += char(len >> 16);
  f += char(len >> 8);
  f += char(len);
  f += char(type);
  f += char(flags);
  f += char((stream >> 24) & 0x7f);
  f += char(stream >> 16);
  f += char(stream >> 8);
  f += char(stream);
  f += payload;
  return f;
}

// HPACK integer with an N-bit prefix (RFC 7541, 5.1).
void hpackInt(std::string& out, uint8_t first, int prefixBits, size_t v) {
  const size_t max = (size_t(1) << prefixBits) - 1;
  if (v < max) {
    out += char(first | uint8_t(v));
    return;
  }
  out += char(first | uint8_t(max));
  v -= max;
  while (v >= 128) {
    out += char(0x80 | (v & 0x7f));
    v >>= 7;
  }
  out += char(v);
}

void hpackString(std::string& out, std::string_view s) {
  hpackInt(out, 0, 7, s.size());
  out += s;
}

// Literal field without indexing, new name.
void hpackLiteral(std::string& out, std::string_view name, std::string_view value) {
  out += char(0);
  hpackString(out, name);
  hpackString(out, value);
}

// GET `path` for `authority`: :method GET (static 2), :scheme http (static 6),
// :path and :authority as literals.
std::string requestBlock(std::string_view authority, std::string_view path) {
  std::string b;
  b += char(0x82);
  b += char(0x86);
  hpackLiteral(b, ":path", path);
  hpackLiteral(b, ":authority", authority);
  return b;
}

std::string settings(std::vector<std::pair<uint16_t, uint32_t>> entries) {
  std::string p;
  for (auto [id, v] : entries) {
    p += char(id >> 8);
    p += char(id);
    p += char(v >> 24);
    p += char(v >> 16);
    p += char(v >> 8);
    p += char(v);
  }
  return frame(kSettings, 0, 0, p);
}

std::string rstStream(uint32_t stream, uint32_t code) {
  std::string p{char(code >> 24), char(code >> 16), char(code >> 8), char(code)};
  return frame(kRstStream, 0, stream, p);
}

struct Frame {
  uint8_t type = 0, flags = 0;
  uint32_t stream = 0;
  std::string payload;
};

// Reads frames off `c` (after the server's preface SETTINGS) until `stop`
// says so, the peer closes, or the connection's timeout passes.
template <typename Stop>
std::vector<Frame> readFrames(RawConn& c, Stop stop) {
  std::vector<Frame> frames;
  std::string& buf = c.buffered();
  for (;;) {
    while (buf.size() >= 9) {
      const size_t len = (uint8_t(buf[0]) << 16) | (uint8_t(buf[1]) << 8) | uint8_t(buf[2]);
      if (buf.size() < 9 + len) break;
      Frame f;
      f.type = uint8_t(buf[3]);
      f.flags = uint8_t(buf[4]);
      f.stream = ((uint8_t(buf[5]) & 0x7f) << 24) | (uint8_t(buf[6]) << 16) | (uint8_t(buf[7]) << 8) | uint8_t(buf[8]);
      f.payload = buf.substr(9, len);
      buf.erase(0, 9 + len);
      frames.push_back(std::move(f));
      if (stop(frames.back())) return frames;
    }
    if (!c.fill()) return frames;
  }
}

uint32_t goawayCode(const Frame& f) {
  if (f.payload.size() < 8) return ~0u;
  return (uint32_t(uint8_t(f.payload[4])) << 24) | (uint32_t(uint8_t(f.payload[5])) << 16) |
         (uint32_t(uint8_t(f.payload[6])) << 8) | uint32_t(uint8_t(f.payload[7]));
}

// The fields of header blocks, decoded in order with one HPACK table (as a
// client keeps for its connection).
class HpackDecoder {
 public:
  HpackDecoder() { nghttp2_hd_inflate_new(&inflater_); }
  ~HpackDecoder() { nghttp2_hd_inflate_del(inflater_); }
  HpackDecoder(const HpackDecoder&) = delete;
  HpackDecoder& operator=(const HpackDecoder&) = delete;
  std::map<std::string, std::string> decode(std::string_view block) {
    std::map<std::string, std::string> fields;
    auto* in = reinterpret_cast<const uint8_t*>(block.data());
    size_t left = block.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      const ssize_t n = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
      if (n < 0) return {{"error", std::to_string(n)}};
      in += n;
      left -= size_t(n);
      if (flags & NGHTTP2_HD_INFLATE_EMIT)
        fields[std::string(reinterpret_cast<char*>(nv.name), nv.namelen)] =
            std::string(reinterpret_cast<char*>(nv.value), nv.valuelen);
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inflater_);
        return fields;
      }
      if (n == 0 && left == 0) return fields;
    }
  }

 private:
  nghttp2_hd_inflater* inflater_ = nullptr;
};

class Http2Test : public ProxyTest {
 protected:
  CurlResult h2(std::vector<std::string> args) {
    std::vector<std::string> all = {"--http2-prior-knowledge", "-H", "Host: " + kEcho};
    all.insert(all.end(), args.begin(), args.end());
    return curl(all);
  }
  std::string url(const std::string& target) {
    return "http://127.0.0.1:" + std::to_string(mesh_.outboundPort()) + target;
  }
  // A client that is not misbehaving still gets its answer.
  void expectServed() {
    CurlResult r = h2({url("/still-there")});
    EXPECT_EQ(r.exitCode, 0) << r.stderrText << out();
    EXPECT_EQ(r.status, 200) << out();
  }
  // A raw connection that has sent the preface and its SETTINGS.
  std::expected<RawConn, std::string> h2Raw(std::string settingsFrame = settings({})) {
    auto c = raw(5000ms);
    if (!c) return c;
    if (auto s = c->send(std::string(kPreface) + settingsFrame); !s) return std::unexpected(s.error());
    return c;
  }
};

TEST_F(Http2Test, PriorKnowledgeGetAndPostAreProxiedToAnHttp1Upstream) {
  startMesh();
  CurlResult r = h2({"-v", url("/hello?x=1")});
  ASSERT_EQ(r.exitCode, 0) << r.stderrText << out();
  EXPECT_NE(r.stderrText.find("HTTP/2 200"), std::string::npos) << r.stderrText;
  EXPECT_EQ(r.json()["path"], "/hello") << r.body;
  EXPECT_EQ(r.json()["headers"]["host"], kEcho) << r.body;  // :authority became Host
  EXPECT_TRUE(r.header("x-envoy-upstream-service-time").has_value());
  // A body with a length, and one without (chunked to the HTTP/1.1 upstream).
  std::string body(300000, 'b');
  fs::path file = tmp_.path() / "body.bin";
  ASSERT_OK(writeFile(file, body));
  CurlResult post = h2({"--data-binary", "@" + file.string(), url("/upload")});
  ASSERT_EQ(post.status, 200) << post.stderrText << out();
  EXPECT_EQ(post.json()["body_bytes"], 300000) << post.body;
  EXPECT_EQ(post.json()["headers"]["content-length"], "300000") << post.body;
  CurlResult streamed = h2({"-T", file.string(), "-H", "content-length:", url("/upload")});
  ASSERT_EQ(streamed.status, 200) << streamed.stderrText << out();
  EXPECT_EQ(streamed.json()["body_bytes"], 300000) << streamed.body;
  // Cookies sent as several fields reach HTTP/1.1 as one header.
  CurlResult cookies = h2({"-H", "cookie: a=1", "-H", "cookie: b=2", url("/c")});
  EXPECT_EQ(cookies.json()["headers"]["cookie"], "a=1; b=2") << cookies.body;
  EXPECT_GE(stat("downstream_cx_http2_total"), 4);
}

TEST_F(Http2Test, Http1UpgradeToH2cServesTheRequestOverHttp2) {
  startMesh();
  // curl --http2 on an http:// URL asks with Upgrade: h2c.
  CurlResult r = curl({"-v", "--http2", "-H", "Host: " + kEcho, url("/up?size=1000")});
  ASSERT_EQ(r.exitCode, 0) << r.stderrText << out();
  EXPECT_NE(r.stderrText.find("< HTTP/1.1 101"), std::string::npos) << r.stderrText;
  EXPECT_NE(r.stderrText.find("< HTTP/2 200"), std::string::npos) << r.stderrText;
  EXPECT_EQ(r.body.size(), 1000u);
  EXPECT_EQ(stat("downstream_cx_http2_total"), 1);
  // With a body the upgrade is declined: the request is answered in HTTP/1.1.
  CurlResult post = curl({"-v", "--http2", "-H", "Host: " + kEcho, "-d", "hello", url("/p")});
  EXPECT_NE(post.stderrText.find("< HTTP/1.1 200"), std::string::npos) << post.stderrText;
  EXPECT_EQ(post.json()["body_bytes"], 5) << post.body;
  // So is one whose HTTP2-Settings is not base64url.
  auto c = raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send("GET / HTTP/1.1\r\nHost: " + kEcho +
                    "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: !!\r\n\r\n"));
  auto resp = c->readResponse();
  ASSERT_OK(resp);
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(stat("downstream_cx_http2_total"), 1);
}

TEST_F(Http2Test, RouteFeaturesApplyToHttp2StreamsAsToHttp1Requests) {
  startMesh();
  // The echo VirtualService, with matches on pseudo-headers, a rewrite
  // with header operations, and an injected abort.
  std::string cfg = std::string(kConfig);
  const std::string routes = R"(  http:
  - match:
    - uri: {prefix: /m}
      headers: {":method": {exact: PUT}, ":authority": {prefix: echo}}
    headers: {response: {add: {x-matched: put}}}
    route: [{destination: {host: echo}}]
  - match: [{uri: {prefix: /rewrite}}]
    rewrite: {uri: /rewritten}
    headers: {request: {set: {x-added: "yes"}}}
    route: [{destination: {host: echo}}]
  - match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
)";
  const size_t at = cfg.find("  http:\n  - match:\n    - uri:\n        prefix: /timeout");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, std::string("  http:\n").size(), routes);
  auto rendered = renderTemplate(cfg, mesh_.vars());
  ASSERT_OK(rendered);
  ASSERT_OK(mesh_.applyConfig("proxy-test.yaml", *rendered));
  CurlResult put = h2({"-X", "PUT", url("/m")});
  EXPECT_EQ(put.status, 200) << put.stderrText << out();
  EXPECT_EQ(put.header("x-matched").value_or(""), "put");
  CurlResult get = h2({url("/m")});
  EXPECT_FALSE(get.header("x-matched").has_value()) << ":method is GET: the next route";
  CurlResult rewrite = h2({url("/rewrite/x")});
  EXPECT_EQ(rewrite.json()["path"], "/rewritten/x") << rewrite.body;
  EXPECT_EQ(rewrite.json()["headers"]["x-added"], "yes") << rewrite.body;
  EXPECT_EQ(rewrite.json()["headers"]["x-envoy-original-path"], "/rewrite/x") << rewrite.body;
  EXPECT_EQ(h2({url("/fault")}).status, 418);
  EXPECT_EQ(h2({url("/timeout?delay=2s")}).status, 504) << "the rest of the table still routes";
}

TEST_F(Http2Test, LargeResponsesStreamWithFlowControlAndHeadKeepsTheLength) {
  startMesh();
  CurlResult big = h2({url("/?size=4000000")});
  ASSERT_EQ(big.exitCode, 0) << big.stderrText << out();
  EXPECT_EQ(big.body.size(), 4000000u);
  CurlResult chunked = h2({url("/?size=3000000&chunked=1")});
  ASSERT_EQ(chunked.exitCode, 0) << chunked.stderrText;
  EXPECT_EQ(chunked.body.size(), 3000000u);
  CurlResult head = h2({"-I", url("/?size=1234")});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length").value_or(""), "1234");
}

TEST_F(Http2Test, FailuresKeepTheirHttp1Semantics) {
  startMesh();
  EXPECT_EQ(h2({url("/?status=503")}).status, 503);
  CurlResult timeout = h2({url("/timeout?delay=2s")});
  EXPECT_EQ(timeout.status, 504) << timeout.stderrText << out();
  CurlResult noRoute = curl({"--http2-prior-knowledge", "-H", "Host: nowhere:9080", url("/")});
  EXPECT_EQ(noRoute.status, 404);
  CurlResult dead = curl({"--http2-prior-knowledge", "-H", "Host: " + kDead, url("/")});
  EXPECT_EQ(dead.status, 503);
  // A response the upstream cuts mid-body resets the stream (curl: error
  // 92, HTTP/2 stream error), and the connection goes on serving.
  CurlResult cut = h2({url("/?close=mid&size=200000")});
  EXPECT_NE(cut.exitCode, 0);
  EXPECT_GE(stat("http2.tx_reset"), 1);
  expectServed();
}

TEST_F(Http2Test, ManyConcurrentStreamsWithH2load) {
  startMesh();
  fs::path log = tmp_.path() / "h2load.log";
  auto p = Process::start({"h2load", "-n", "4000", "-c", "4", "-m", "50", "-H", ":authority: " + kEcho, url("/")},
                          log);
  ASSERT_OK(p);
  auto status = p->wait(60000ms);
  ASSERT_TRUE(status.has_value()) << "h2load did not finish";
  std::string text = p->logText();
  EXPECT_NE(text.find("4000 succeeded"), std::string::npos) << text;
  EXPECT_NE(text.find("status codes: 4000 2xx"), std::string::npos) << text;
  EXPECT_GE(stat("upstream_rq_total"), 4000);
}

// 300 streams, each reset with `code` right after it opens, while its
// answer (a delayed one) is still on its way.
std::string rapidResets(uint32_t code) {
  std::string burst;
  for (uint32_t i = 0; i < 300; ++i) {
    const uint32_t id = 1 + 2 * i;
    burst += frame(kHeaders, kEndStream | kEndHeaders, id, requestBlock(kEcho, "/?delay=1s"));
    burst += rstStream(id, code);
  }
  return burst;
}

TEST_F(Http2Test, RapidResetIsAnsweredWithGoaway) {
  startMesh();
  auto c = h2Raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send(rapidResets(8 /* CANCEL */)));
  std::vector<Frame> frames = readFrames(*c, [](const Frame& f) { return f.type == kGoaway; });
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().type, kGoaway);
  EXPECT_EQ(goawayCode(frames.back()), 11u /* ENHANCE_YOUR_CALM */);
  EXPECT_TRUE(eventually([&] { return stat("http2.premature_resets") == 1; }, 2000ms));
  EXPECT_GE(stat("http2.rx_reset"), 100);
  expectServed();
}

TEST_F(Http2Test, ResetsWithNoErrorCountAsRapidResetsToo) {
  startMesh();
  auto c = h2Raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send(rapidResets(0 /* NO_ERROR */)));
  std::vector<Frame> frames = readFrames(*c, [](const Frame& f) { return f.type == kGoaway; });
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(goawayCode(frames.back()), 11u);
  EXPECT_EQ(stat("http2.premature_resets"), 1);
}

TEST_F(Http2Test, AnUnfinishedHeaderBlockMeetsTheHeadersTimeout) {
  startMesh(2, {"--request-headers-timeout", "1s"});
  auto c = h2Raw();
  ASSERT_OK(c);
  // HEADERS without END_HEADERS, and nothing after it.
  ASSERT_OK(c->send(frame(kHeaders, 0, 1, requestBlock(kEcho, "/"))));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Frame> frames = readFrames(*c, [](const Frame&) { return false; });  // until it closes
  EXPECT_LT(msSince(t0), 4000);
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](const Frame& f) { return f.type == kGoaway; }));
  EXPECT_EQ(stat("downstream_rq_header_timeout"), 1);
  expectServed();
}

TEST_F(Http2Test, TheIdleTimeoutCountsFromTheLastStreamAndEndsWithGoaway) {
  startMesh(1, {"--idle-timeout", "1s"});
  auto c = h2Raw();
  ASSERT_OK(c);
  // Busy for twice the idle timeout: nothing closes under the requests.
  HpackDecoder hpack;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < 8; ++i) {
    const uint32_t id = 1 + 2 * i;
    ASSERT_OK(c->send(frame(kHeaders, kEndStream | kEndHeaders, id, requestBlock(kEcho, "/busy"))));
    std::vector<Frame> frames = readFrames(*c, [id](const Frame& f) { return f.stream == id && (f.flags & kEndStream); });
    ASSERT_FALSE(frames.empty()) << "request " << i << " after " << msSince(t0) << " ms" << out();
    ASSERT_EQ(frames.back().stream, id) << "request " << i << " after " << msSince(t0) << " ms";
    std::this_thread::sleep_for(250ms);
  }
  // Then idle: GOAWAY (NO_ERROR), then the close.
  std::vector<Frame> frames = readFrames(*c, [](const Frame& f) { return f.type == kGoaway; });
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().type, kGoaway);
  EXPECT_EQ(goawayCode(frames.back()), 0u);
  EXPECT_TRUE(c->peerClosed());
}

TEST_F(Http2Test, FinishedResponsesAClientNeverTakesAreResetAtTheStreamIdleTimeout) {
  startMesh(1, {"--stream-idle-timeout", "1"});
  auto c = h2Raw(settings({{4 /* INITIAL_WINDOW_SIZE */, 0}}));
  ASSERT_OK(c);
  std::string reqs;
  for (uint32_t i = 0; i < 10; ++i)
    reqs += frame(kHeaders, kEndStream | kEndHeaders, 1 + 2 * i, requestBlock(kEcho, "/?size=20000"));
  ASSERT_OK(c->send(reqs));
  // The answers are whole in sluiced, but not one byte may be sent: each
  // stream is reset once the client has taken nothing for a second.
  std::vector<Frame> frames = readFrames(*c, [n = 0](const Frame& f) mutable {
    return f.type == kRstStream && ++n == 10;
  });
  EXPECT_EQ(std::count_if(frames.begin(), frames.end(), [](const Frame& f) { return f.type == kRstStream; }), 10)
      << out();
  EXPECT_EQ(stat("downstream_rq_idle_timeout"), 10);
}

TEST_F(Http2Test, ContinuationFloodClosesTheConnection) {
  startMesh();
  auto c = h2Raw();
  ASSERT_OK(c);
  std::string flood = frame(kHeaders, 0, 1, requestBlock(kEcho, "/"));
  for (int i = 0; i < 200; ++i) {
    std::string more;
    hpackLiteral(more, "x-pad", "p");
    flood += frame(kContinuation, 0, 1, more);
  }
  (void)c->send(flood);  // the server may close before it has read all of it
  std::vector<Frame> frames = readFrames(*c, [](const Frame& f) { return f.type == kGoaway; });
  EXPECT_TRUE(c->peerClosed() || (!frames.empty() && frames.back().type == kGoaway));
  EXPECT_TRUE(eventually([&] { return stat("http2.continuation_flood") == 1; }, 2000ms)) << out();
  expectServed();
}

TEST_F(Http2Test, HpackBombGets431AndTheConnectionStaysUsable) {
  startMesh();
  auto c = h2Raw();
  ASSERT_OK(c);
  // One 4000-byte field into the dynamic table, then 3000 one-byte
  // references to it: 12 MB of header list from 12 KB on the wire.
  std::string block = requestBlock(kEcho, "/");
  block += char(0x40);  // literal with incremental indexing, new name
  hpackString(block, "x-bomb");
  hpackString(block, std::string(4000, 'z'));
  for (int i = 0; i < 3000; ++i) block += char(0x80 | 62);  // dynamic table entry 62
  ASSERT_OK(c->send(frame(kHeaders, kEndStream | kEndHeaders, 1, block)));
  std::vector<Frame> frames = readFrames(*c, [](const Frame& f) {
    return (f.type == kHeaders && f.stream == 1) || f.type == kGoaway || f.type == kRstStream;
  });
  ASSERT_FALSE(frames.empty()) << out();
  ASSERT_EQ(frames.back().type, kHeaders) << int(frames.back().type);
  HpackDecoder hpack;
  EXPECT_EQ(hpack.decode(frames.back().payload)[":status"], "431");
  EXPECT_EQ(stat("http2.header_overflow"), 1);
  // The same connection serves a normal request next (HPACK stayed in step).
  ASSERT_OK(c->send(frame(kHeaders, kEndStream | kEndHeaders, 3, requestBlock(kEcho, "/next"))));
  frames = readFrames(*c, [](const Frame& f) { return f.type == kHeaders && f.stream == 3; });
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().stream, 3u);
  EXPECT_EQ(hpack.decode(frames.back().payload)[":status"], "200");
}

TEST_F(Http2Test, PingFloodClosesTheConnection) {
  startMesh();
  // A client that sends PING after PING and never reads: the replies it
  // is owed pile up in sluiced (past what the sockets hold) until the
  // limit, then the connection goes.
  auto c = raw(5000ms, 4096);
  ASSERT_OK(c);
  std::string flood(kPreface);
  flood += settings({});
  const std::string ping = frame(kPing, 0, 0, std::string(8, 'p'));
  for (int i = 0; i < 600000; ++i) flood += ping;
  (void)c->send(flood);  // fails once sluiced has closed: that is the point
  EXPECT_TRUE(eventually([&] { return stat("http2.inbound_control_flood") == 1; }, 5000ms)) << out();
  expectServed();
}

TEST_F(Http2Test, AClientThatNeverOpensItsWindowCostsAtMostItsBuffers) {
  startMesh();
  const int64_t rssBefore = rssKb(daemonPid());
  // Initial window 0: not one byte of DATA may be sent to this client.
  auto c = h2Raw(settings({{4 /* INITIAL_WINDOW_SIZE */, 0}}));
  ASSERT_OK(c);
  std::string reqs;
  for (uint32_t i = 0; i < 20; ++i)
    reqs += frame(kHeaders, kEndStream | kEndHeaders, 1 + 2 * i, requestBlock(kEcho, "/?size=20000000"));
  ASSERT_OK(c->send(reqs));
  // Response heads arrive; bodies cannot.
  std::vector<Frame> frames = readFrames(*c, [n = 0](const Frame& f) mutable {
    return f.type == kHeaders && ++n == 20;
  });
  ASSERT_EQ(std::count_if(frames.begin(), frames.end(), [](const Frame& f) { return f.type == kHeaders; }), 20)
      << out();
  std::this_thread::sleep_for(500ms);
  expectServed();
  // 20 streams × 20 MB were asked for; what waits in sluiced is bounded by
  // the per-stream high water and the upstream connections' buffers.
  const int64_t rssAfter = rssKb(daemonPid());
  EXPECT_LT(rssAfter - rssBefore, 40 * 1024) << rssBefore << " -> " << rssAfter << " KiB";
}

TEST_F(Http2Test, DrainLetsStreamsInFlightFinishAfterGoaway) {
  startMesh();
  auto c = h2Raw();
  ASSERT_OK(c);
  ASSERT_OK(c->send(frame(kHeaders, kEndStream | kEndHeaders, 1, requestBlock(kEcho, "/?delay=500ms"))));
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(::kill(daemonPid(), SIGTERM), 0);
  bool sawGoaway = false;
  std::vector<Frame> frames = readFrames(*c, [&](const Frame& f) {
    if (f.type == kGoaway) {
      sawGoaway = true;
      EXPECT_EQ(goawayCode(f), 0u);
    }
    return f.stream == 1 && (f.flags & kEndStream);
  });
  ASSERT_FALSE(frames.empty());
  EXPECT_TRUE(sawGoaway);
  EXPECT_EQ(frames.back().stream, 1u);
  EXPECT_TRUE(frames.back().flags & kEndStream);
  auto status = mesh_.daemon().wait(5000ms);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

// ------------------------------------------ http2KeepAlive to upstreams

// An HTTP/2 server that takes one connection, answers no request, counts
// the PINGs it gets and ACKs them only when told to.
class PingCountingServer {
 public:
  explicit PingCountingServer(bool ack) : ack_(ack) {
    listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (::bind(listenFd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && ::listen(listenFd_, 4) == 0 &&
        ::getsockname(listenFd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~PingCountingServer() {
    stop_ = true;
    thread_.join();
    ::close(listenFd_);
  }
  uint16_t port() const { return port_; }
  int pings() const { return pings_.load(); }
  bool sawRequest() const { return requests_.load() > 0; }

 private:
  void run() {
    // Bounded: the test is over within 20 s.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    int fd = -1;
    std::string buf;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd >= 0 ? fd : listenFd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      if (fd < 0) {
        fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) (void)!::write(fd, settings({}).data(), settings({}).size());
        continue;
      }
      char chunk[4096];
      const ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n <= 0) {
        ::close(fd);
        fd = -1;
        buf.clear();
        continue;
      }
      buf.append(chunk, size_t(n));
      if (buf.starts_with(kPreface)) buf.erase(0, kPreface.size());
      while (buf.size() >= 9) {
        const size_t len = (uint8_t(buf[0]) << 16) | (uint8_t(buf[1]) << 8) | uint8_t(buf[2]);
        if (buf.size() < 9 + len) break;
        const uint8_t type = uint8_t(buf[3]), flags = uint8_t(buf[4]);
        const std::string payload = buf.substr(9, len);
        buf.erase(0, 9 + len);
        if (type == kHeaders) ++requests_;
        if (type == kPing && !(flags & kAck)) {
          ++pings_;
          const std::string ack = frame(kPing, kAck, 0, payload);
          if (ack_) (void)!::write(fd, ack.data(), ack.size());
        }
      }
    }
    if (fd >= 0) ::close(fd);
  }

  bool ack_;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> pings_{0}, requests_{0};
  std::thread thread_;
};

std::string keepaliveConfig(uint16_t port, std::string_view keepalive) {
  return "apiVersion: networking.istio.io/v1\n"
         "kind: ServiceEntry\n"
         "metadata: {name: pinged}\n"
         "spec:\n"
         "  hosts: [pinged.test]\n"
         "  ports: [{number: 80, name: http2, protocol: HTTP2}]\n"
         "  resolution: STATIC\n"
         "  endpoints: [{address: 127.0.0.1, ports: {http2: " + std::to_string(port) + "}}]\n"
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: VirtualService\n"
         "metadata: {name: pinged}\n"
         "spec:\n"
         "  hosts: [pinged.test]\n"
         "  http: [{route: [{destination: {host: pinged.test}}], timeout: 1500ms, retries: {attempts: 0}}]\n"
         "---\n"
         "apiVersion: networking.istio.io/v1\n"
         "kind: DestinationRule\n"
         "metadata: {name: pinged}\n"
         "spec:\n"
         "  host: pinged.test\n"
         "  trafficPolicy: {connectionPool: {http: {http2KeepAlive: " + std::string(keepalive) + "}}}\n";
}

TEST_F(Http2Test, KeepalivePingsThatAreAnsweredKeepTheConnection) {
  PingCountingServer server(/*ack=*/true);
  ASSERT_NE(server.port(), 0);
  ASSERT_OK(mesh_.writeConfig("pinged.yaml", keepaliveConfig(server.port(), "{interval: 200ms, timeout: 300ms}")));
  startMesh(1);
  // The server never answers: the route timeout ends the request, the
  // connection lived through several answered PINGs.
  auto r = mesh_.get("pinged.test", "/");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 504) << out();
  EXPECT_TRUE(server.sawRequest());
  EXPECT_GE(server.pings(), 4) << "a PING every 200 ms over 1.5 s";
  EXPECT_EQ(stat("upstream_http2.keepalive_timeout"), 0) << out();
}

TEST_F(Http2Test, AnUnansweredKeepalivePingClosesTheConnection) {
  PingCountingServer server(/*ack=*/false);
  ASSERT_NE(server.port(), 0);
  ASSERT_OK(mesh_.writeConfig("pinged.yaml", keepaliveConfig(server.port(), "{interval: 200ms, timeout: 300ms}")));
  startMesh(1);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = mesh_.get("pinged.test", "/");
  ASSERT_OK(r);
  // Closed at ~500 ms (PING at 200, no ACK by 500), before the 1.5 s
  // route timeout: a connection failure, 503 UC.
  EXPECT_EQ(r->status, 503) << r->summary() << out();
  EXPECT_LT(msSince(t0), 1400);
  EXPECT_EQ(server.pings(), 1) << "no second PING while the first is unanswered";
  EXPECT_EQ(stat("upstream_http2.keepalive_timeout"), 1) << out();
}

}  // namespace
}  // namespace sluice::itest::proxy
