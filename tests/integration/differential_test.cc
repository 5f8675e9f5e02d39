// Differential smuggling test: a corpus of 60 malformed or ambiguous requests,
// each sent through sluiced (2 workers, explicit mode) to a RecordingUpstream
// whose own parser is deliberately lenient (it takes the first
// Content-Length or any "chunked" it sees). Per case: the upstream must
// never parse more requests than sluiced answered on that connection, and a
// victim request on a new connection right after must get its own answer.
// A case that desynchronised the two hops would show up as an extra request
// upstream or a victim served someone else's response. (An inner request
// that both hops read as a pipelined second request, answered on the
// attacker's own connection, is no desynchronisation.)
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "proxy_fixture.h"
#include "recording_upstream.h"

namespace sluice::itest::proxy {
namespace {

using namespace std::string_literals;

constexpr std::string_view kDiffConfig = R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: raw, namespace: default}
spec:
  hosts: [raw.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${RAW_PORT}}}
)";

const std::string kHost = "Host: raw:9080\r\n";
// What a smuggled request looks like, so it can be told from the test's own.
const std::string kInner = "GET /SMUGGLED HTTP/1.1\r\n" + kHost + "\r\n";

std::vector<std::string> corpus() {
  const std::string inner = kInner;
  const std::string n = std::to_string(inner.size());
  const std::string hex = fmt::format("{:x}", inner.size());
  auto post = [&](const std::string& headers, const std::string& body) {
    return "POST /case HTTP/1.1\r\n" + kHost + headers + "\r\n" + body;
  };
  return {
      // Content-Length against Transfer-Encoding, every order and spelling.
      post("Content-Length: " + n + "\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n" + inner),
      post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", hex + "\r\n" + inner + "\r\n0\r\n\r\n"),
      post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding:\tchunked\t\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n Content-Length: 5\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: ch\x00unked\r\n"s, "0\r\n\r\n" + inner),
      post("Transfer_Encoding: chunked\r\n", "0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\nContent-Length: " + n + "\r\nConnection: Content-Length\r\n",
           "0\r\n\r\n" + inner),
      // Content-Length spellings.
      post("Content-Length: " + n + "\r\nContent-Length: 0\r\n", inner),
      post("Content-Length: 0\r\nContent-Length: " + n + "\r\n", inner),
      post("Content-Length: 0, " + n + "\r\n", inner),
      post("Content-Length: +" + n + "\r\n", inner),
      post("Content-Length: -1\r\n", inner),
      post("Content-Length: 0x" + hex + "\r\n", inner),
      post("Content-Length: " + n + " 0\r\n", inner),
      post("Content-Length:  " + n + " \r\n", inner),
      post("Content-Length: 99999999999999999999999\r\n", inner),
      post("Content-Length : " + n + "\r\n", inner),
      post("Content-Length\r\n: " + n + "\r\n", inner),
      post(" Content-Length: " + n + "\r\n", inner),
      post("Connection: Content-Length\r\nContent-Length: " + n + "\r\n", inner),
      post("Connection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + inner),
      // Chunk sizes and extensions.
      post("Transfer-Encoding: chunked\r\n", "0000000000000000000" + hex + "\r\n" + inner + "\r\n0\r\n\r\n"),
      post("Transfer-Encoding: chunked\r\n", "fffffffffffffffff\r\n" + inner + "\r\n0\r\n\r\n"),
      post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "5\rhello\r0\r\r" + inner),
      post("Transfer-Encoding: chunked\r\n", "5;a=\"x\r\n0\r\n\r\n\"\r\nhello\r\n0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "0\r\nContent-Length: " + n + "\r\n\r\n" + inner),
      post("Transfer-Encoding: chunked\r\n", "0\r\n Folded: trailer\r\n\r\n" + inner),
      // Line endings and header syntax.
      "GET /case HTTP/1.1\n" + kHost + "\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\nX: a\rb\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\nX: a\x00"s + "b\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\n\tX: folded\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\nHost: other\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\n X: leading-space\r\n\r\n" + inner,
      "GET /ca se HTTP/1.1\r\n" + kHost + "\r\n" + inner,
      "GET /case HTTP/1.1 \r\n" + kHost + "\r\n" + inner,
      "GET  /case HTTP/1.1\r\n" + kHost + "\r\n" + inner,
      "GET /case HTTP/2.0\r\n" + kHost + "\r\n" + inner,
      "GET /case HTTP/1.10\r\n" + kHost + "\r\n" + inner,
      "GET /case http/1.1\r\n" + kHost + "\r\n" + inner,
      "G\x01T /case HTTP/1.1\r\n" + kHost + "\r\n" + inner,
      "POST /case HTTP/1.0\r\n" + kHost + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\n" + kHost + "Content-Length: " + n + "\r\n\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
      "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + inner,
      "CONNECT raw:9080 HTTP/1.1\r\n" + kHost + "\r\n" + inner,
      "GET http://raw:9080@evil/case HTTP/1.1\r\n" + kHost + "\r\n" + inner,
      "GET /case HTTP/1.1\r\nHost: raw:9080\r\nExpect: 100-continue\r\nContent-Length: " + n + "\r\n\r\n" + inner,
  };
}

TEST(Differential, NoCaseMakesTheUpstreamParseMoreThanSluicedAnswered) {
  auto up = RecordingUpstream::start("raw");
  ASSERT_OK(up);
  TempDir tmp;
  Mesh mesh(tmp);
  mesh.setVar("RAW_PORT", std::to_string((*up)->port()));
  auto cfg = renderTemplate(kDiffConfig, mesh.vars());
  ASSERT_OK(cfg);
  ASSERT_OK(mesh.writeConfig("raw.yaml", *cfg));
  ASSERT_OK(mesh.startDaemon(2));

  const std::vector<std::string> cases = corpus();
  ASSERT_GE(cases.size(), 50u);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + ::testing::PrintToString(cases[i]));
    const size_t before = (*up)->count();
    auto c = RawConn::connect(mesh.outboundPort(), 400ms);
    ASSERT_OK(c);
    ASSERT_OK(c->send(cases[i]));
    // Everything sluiced answers on this connection, until it closes or
    // stays silent.
    size_t answered = 0;
    while (true) {
      auto r = c->readResponse();
      if (!r) break;
      ++answered;  // the inner request may be one: sluiced read it as pipelined, like the upstream
      if (answered > 3) break;
    }
    c->close();
    // The victim: a plain request on a new connection gets its own answer.
    const std::string target = "/victim" + std::to_string(i);
    auto v = RawConn::connect(mesh.outboundPort(), 3000ms);
    ASSERT_OK(v);
    ASSERT_OK(v->send("GET " + target + " HTTP/1.1\r\n" + kHost + "\r\n"));
    auto vr = v->readResponse();
    ASSERT_OK(vr);
    EXPECT_EQ(vr->status, 200);
    EXPECT_EQ(vr->header("x-request-target").value_or(""), target) << "the victim got another request's answer";

    const auto seen = (*up)->requests();
    size_t parsed = 0;
    for (size_t k = before; k < seen.size(); ++k) parsed += seen[k].target != target;
    EXPECT_LE(parsed, answered) << "the upstream parsed more requests than sluiced answered";
  }
  EXPECT_TRUE(mesh.daemon().running());
}

}  // namespace
}  // namespace sluice::itest::proxy
