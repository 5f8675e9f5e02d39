#include "route/header_ops.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "builders.h"
#include "route/match.h"

namespace sluice::route {
namespace {

using testing::exact;
using testing::prefix;
using testing::regex;
using istio::HeaderContext;
using istio::HeaderTemplate;
using istio::headerOpNameError;

// 2026-11-27T03:13:49.123456789Z
constexpr uint64_t kStartNs = 1795749229ull * 1000000000ull + 123456789ull;

sockaddr_in addr(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

struct Fixture {
  sockaddr_in remote = addr("127.1.2.3", 41000);
  sockaddr_in local = addr("127.9.8.7", 9080);
  sockaddr_in upstream = addr("127.4.4.4", 8080);
  http::HeaderMap req{{"Host", "reviews:9080"}, {"X-User", "alice"}, {"x-long", "abcdefgh"}};
  http::HeaderMap resp{{"Server", "upstream"}};
  HeaderContext ctx;
  Fixture() {
    ctx.startTimeRealNs = kStartNs;
    ctx.downstreamRemote = &remote;
    ctx.downstreamLocal = &local;
    ctx.upstreamRemote = &upstream;
    ctx.requestId = "rid-7";
    ctx.requestHeaders = &req;
    ctx.responseHeaders = &resp;
  }
};

// The fields a mutation adds, as HTTP/1.1 lines appended to `out`.
void appendLines(const HeaderMutation::Rendered& r, std::string& out) {
  http::HeaderMap added;
  r.applyTo(added);
  added.appendHttp1(out);
}

std::string render(std::string_view tpl, const HeaderContext& ctx) {
  auto t = HeaderTemplate::parse(tpl);
  EXPECT_TRUE(t.has_value()) << tpl << ": " << t.error();
  if (!t) return "<error>";
  std::string out;
  t->render(ctx, out);
  return out;
}

std::string parseError(std::string_view tpl) {
  auto t = HeaderTemplate::parse(tpl);
  EXPECT_FALSE(t.has_value()) << tpl << " parsed";
  return t ? std::string() : t.error();
}

// ------------------------------------------------------------ HeaderTemplate

TEST(HeaderTemplate, LiteralsAndPercentEscape) {
  Fixture f;
  EXPECT_EQ(render("plain", f.ctx), "plain");
  EXPECT_EQ(render("100%% sure %%%%", f.ctx), "100% sure %%");
  EXPECT_EQ(render("", f.ctx), "");
  EXPECT_FALSE(HeaderTemplate::parse("plain")->dynamic());
  EXPECT_FALSE(HeaderTemplate::parse("50%%")->dynamic());
  EXPECT_TRUE(HeaderTemplate::parse("a %PROTOCOL%")->dynamic());
}

TEST(HeaderTemplate, AddressesPortsProtocolHostname) {
  Fixture f;
  EXPECT_EQ(render("%DOWNSTREAM_REMOTE_ADDRESS%", f.ctx), "127.1.2.3:41000");
  EXPECT_EQ(render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", f.ctx), "127.1.2.3");
  EXPECT_EQ(render("%DOWNSTREAM_LOCAL_ADDRESS%", f.ctx), "127.9.8.7:9080");
  EXPECT_EQ(render("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", f.ctx), "127.9.8.7");
  EXPECT_EQ(render("%DOWNSTREAM_LOCAL_PORT%", f.ctx), "9080");
  EXPECT_EQ(render("%UPSTREAM_REMOTE_ADDRESS%", f.ctx), "127.4.4.4:8080");
  EXPECT_EQ(render("[%PROTOCOL%]", f.ctx), "[HTTP/1.1]");
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  EXPECT_EQ(render("%HOSTNAME%", f.ctx), std::string(host));

  HeaderContext none;  // nothing known yet: every address renders empty
  EXPECT_EQ(render("%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_LOCAL_PORT%|%UPSTREAM_REMOTE_ADDRESS%", none), "||");
}

TEST(HeaderTemplate, RequestAndResponseHeaders) {
  Fixture f;
  EXPECT_EQ(render("%REQ(x-user)%", f.ctx), "alice");
  EXPECT_EQ(render("%REQ(X-USER)%", f.ctx), "alice");
  EXPECT_EQ(render("<%REQ(x-absent)%>", f.ctx), "<>");
  EXPECT_EQ(render("%REQ(x-absent?x-user)%", f.ctx), "alice");
  EXPECT_EQ(render("%REQ(x-user?x-long)%", f.ctx), "alice");
  EXPECT_EQ(render("%REQ(x-long):3%", f.ctx), "abc");
  EXPECT_EQ(render("%REQ(:authority)%", f.ctx), "reviews:9080");
  EXPECT_EQ(render("%RESP(server)%", f.ctx), "upstream");
  EXPECT_EQ(render("%RESP(x-user)%", f.ctx), "");
  // The generated id stands in for a request that came without one.
  EXPECT_EQ(render("%REQ(X-Request-Id)%", f.ctx), "rid-7");
  f.req.add("x-request-id", "client-id");
  EXPECT_EQ(render("%REQ(x-request-id)%", f.ctx), "client-id");
}

TEST(HeaderTemplate, PeerValuesSanitisedAndEmptyWithoutTls) {
  Fixture f;
  EXPECT_EQ(render("%DOWNSTREAM_PEER_CERT_V_START%%DOWNSTREAM_PEER_CERT_V_END%%DOWNSTREAM_PEER_URI_SAN%"
                   "%DOWNSTREAM_PEER_SUBJECT%%DOWNSTREAM_TLS_VERSION%",
                   f.ctx),
            "");
  EXPECT_EQ(render("%DOWNSTREAM_PEER_CERT_V_START(%b %e %H:%M:%S %Y %Z)%", f.ctx), "");
  f.ctx.peerCertVStart = "2026-01-01T00:00:00.000Z";
  f.ctx.peerCertVEnd = "2027-01-01T00:00:00.000Z";
  f.ctx.peerUriSan = "spiffe://cluster.local/ns/default/sa/bob";
  f.ctx.peerSubject = "CN=bob\r\nx-evil: 1";
  f.ctx.tlsVersion = "TLSv1.3";
  EXPECT_EQ(render("%DOWNSTREAM_PEER_CERT_V_START%/%DOWNSTREAM_PEER_CERT_V_END%", f.ctx),
            "2026-01-01T00:00:00.000Z/2027-01-01T00:00:00.000Z");
  EXPECT_EQ(render("%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION%", f.ctx),
            "spiffe://cluster.local/ns/default/sa/bob TLSv1.3");
  EXPECT_EQ(render("%DOWNSTREAM_PEER_SUBJECT%", f.ctx), "CN=bob  x-evil: 1");
}

TEST(HeaderTemplate, StartTimeFormats) {
  Fixture f;
  EXPECT_EQ(render("%START_TIME%", f.ctx), "2026-11-27T03:13:49.123Z");
  EXPECT_EQ(render("%START_TIME(%s.%3f)%", f.ctx), "1795749229.123");
  EXPECT_EQ(render("%START_TIME(%s.%6f)%", f.ctx), "1795749229.123456");
  EXPECT_EQ(render("%START_TIME(%s.%9f)%", f.ctx), "1795749229.123456789");
  EXPECT_EQ(render("%START_TIME(%f)%", f.ctx), "123456789");
  EXPECT_EQ(render("%START_TIME(%1f)%", f.ctx), "1");
  EXPECT_EQ(render("%START_TIME(%Y/%m/%d %H:%M:%S)%", f.ctx), "2026/11/27 03:13:49");
  EXPECT_EQ(render("at %START_TIME(%H:%M)% sharp", f.ctx), "at 03:13 sharp");
  EXPECT_EQ(render("%START_TIME(%%s)%", f.ctx), "%s");  // strftime's own %% escape
  f.ctx.startTimeRealNs = 1795749229ull * 1000000000ull + 5000000ull;  // leading zeros kept
  EXPECT_EQ(render("%START_TIME(%s.%3f)%", f.ctx), "1795749229.005");
  EXPECT_EQ(render("%START_TIME%", f.ctx), "2026-11-27T03:13:49.005Z");
}

TEST(HeaderTemplate, Errors) {
  EXPECT_EQ(parseError("%FOO%"), "unknown variable %FOO%");
  EXPECT_EQ(parseError("x %start_time% y"), "unknown variable %start_time%");
  EXPECT_EQ(parseError("%FOO(bar)%"), "unknown variable %FOO(bar)%");
  EXPECT_EQ(parseError("%START_TIME"), "unterminated variable \"%START_TIME\" (write %% for a literal %)");
  EXPECT_EQ(parseError("%REQ(x-a"), "unterminated variable \"%REQ(x-a\" (write %% for a literal %)");
  EXPECT_EQ(parseError("50% off"), "lone '%' at offset 2 (write %% for a literal %)");
  EXPECT_EQ(parseError("%START_TIME%%"), "lone '%' at offset 12 (write %% for a literal %)");
  EXPECT_EQ(parseError("%REQ%"), "variable %REQ% needs a header name: %REQ(name)%");
  EXPECT_EQ(parseError("%HOSTNAME(x)%"), "variable %HOSTNAME% takes no argument, got %HOSTNAME(x)%");
  EXPECT_EQ(parseError("%REQ(a b)%"), "invalid header name \"a b\" in %REQ(a b)%");
  EXPECT_EQ(parseError("%REQ(a?)%"), "invalid header name \"\" in %REQ(a?)%");
  EXPECT_EQ(parseError("%REQ(a?b?c)%"), "invalid header name \"b?c\" in %REQ(a?b?c)%");
  EXPECT_EQ(parseError("%REQ(a):x%"), "bad :maxlen in %REQ(a):x% (want a positive integer)");
  EXPECT_EQ(parseError("%REQ(a):0%"), "bad :maxlen in %REQ(a):0% (want a positive integer)");
  EXPECT_EQ(parseError("%PROTOCOL:3%"), "only %REQ(...)% and %RESP(...)% take a :maxlen, got %PROTOCOL:3%");
  EXPECT_EQ(parseError("%START_TIME(%3x)%"),
            "START_TIME format: %3 must be followed by f (%1f..%9f) in %START_TIME(%3x)%");
  EXPECT_EQ(parseError("a\r\nx-injected: 1"), "header value contains a control character");
}

// ------------------------------------------------------------ HeaderMutation

struct Lines {
  std::string text;
  bool has(std::string_view line) const { return text.find(std::string(line) + "\r\n") != std::string::npos; }
};

HeaderMutation compileLevels(std::vector<const config::HeaderOperations*> levels) {
  auto m = HeaderMutation::compile(levels);
  EXPECT_TRUE(m.has_value()) << m.error();
  return m ? std::move(*m) : HeaderMutation{};
}

TEST(HeaderMutation, LaterLevelWinsAndOrderIsKept) {
  config::HeaderOperations dest;  // destination level first
  dest.set = {{"x-a", "dest"}, {"X-Gone", "dest"}};
  dest.add = {{"x-list", "one"}};
  config::HeaderOperations route;  // then the route's
  route.set = {{"X-A", "route"}};
  route.add = {{"x-list", "two"}};
  route.remove = {"x-gone", "X-Client"};
  HeaderMutation m = compileLevels({&dest, nullptr, &route});
  Fixture f;
  auto r = m.render(f.ctx);
  Lines out;
  appendLines(r, out.text);
  EXPECT_EQ(out.text, "x-list: one\r\nx-a: route\r\nx-list: two\r\n");
  EXPECT_TRUE(r.drops("x-a"));
  EXPECT_TRUE(r.drops("X-A"));
  EXPECT_TRUE(r.drops("x-gone"));
  EXPECT_TRUE(r.drops("x-client"));
  EXPECT_FALSE(r.drops("x-list"));  // add keeps the originals
  EXPECT_FALSE(r.drops("x-other"));
}

// The response side cannot read the request head any more; the mutation
// names the request headers its values read so the session keeps them.
TEST(HeaderMutation, RemoveInALaterLevelDropsEarlierEntries) {
  config::HeaderOperations a, b;
  a.add = {{"x-a", "1"}};
  a.set = {{"x-b", "%REQ(x-user)%"}};
  b.remove = {"x-a", "x-b"};
  HeaderMutation m = compileLevels({&a, &b});
  Fixture f;
  Lines out;
  auto r = m.render(f.ctx);
  appendLines(r, out.text);
  EXPECT_EQ(out.text, "");
  EXPECT_TRUE(r.drops("x-a"));
  EXPECT_TRUE(r.drops("x-b"));
}

TEST(HeaderMutation, DynamicSetRenderingEmptyKeepsTheOriginal) {
  config::HeaderOperations ops;
  ops.set = {{"x-who", "%REQ(x-user)%"}, {"x-added-by", "%REQ(x-absent)%"}};
  ops.add = {{"x-maybe", "%REQ(x-absent)%"}};
  HeaderMutation m = compileLevels({&ops});
  Fixture f;
  auto r = m.render(f.ctx);
  Lines out;
  appendLines(r, out.text);
  EXPECT_EQ(out.text, "x-who: alice\r\n");
  EXPECT_TRUE(r.drops("x-who"));
  EXPECT_FALSE(r.drops("x-added-by")) << "an empty set leaves the original alone";

  // Without x-user, the set of x-who is skipped too.
  f.req = {{"Host", "h"}};
  auto r2 = m.render(f.ctx);
  Lines out2;
  appendLines(r2, out2.text);
  EXPECT_EQ(out2.text, "");
  EXPECT_FALSE(r2.drops("x-who"));
}

TEST(HeaderMutation, DynamicSetReplacesEarlierEntriesOnlyWhenNonEmpty) {
  config::HeaderOperations dest, route;
  dest.add = {{"x-id", "from-dest"}};
  route.set = {{"x-id", "%REQ(x-user)%"}};
  HeaderMutation m = compileLevels({&dest, &route});
  Fixture f;
  Lines withUser;
  appendLines(m.render(f.ctx), withUser.text);
  EXPECT_EQ(withUser.text, "x-id: alice\r\n");
  f.req = {};
  Lines without;
  appendLines(m.render(f.ctx), without.text);
  EXPECT_EQ(without.text, "x-id: from-dest\r\n");
}

TEST(HeaderMutation, StaticEmptyValuesAddNothingAndRemoveNothing) {
  config::HeaderOperations ops;
  ops.set = {{"x-s", ""}};
  ops.add = {{"x-a", ""}};
  HeaderMutation m = compileLevels({&ops});
  EXPECT_TRUE(m.empty());
  Fixture f;
  auto r = m.render(f.ctx);
  EXPECT_FALSE(r.drops("x-s"));
  std::string out;
  appendLines(r, out);
  EXPECT_EQ(out, "");
}

TEST(HeaderMutation, DefaultRenderedIsInert) {
  HeaderMutation::Rendered r;
  EXPECT_FALSE(r.drops("x-a"));
  std::string out = "keep";
  appendLines(r, out);
  EXPECT_EQ(out, "keep");
}

// Applied to a message's fields: removed and replaced names go (any case),
// added fields follow the originals, a dynamic set that renders empty
// leaves the original.
TEST(HeaderMutation, AppliedToFieldsRemovesReplacesAndAdds) {
  config::HeaderOperations ops;
  ops.set = {{"x-env", "canary"}, {"x-who", "%REQ(x-user)%"}, {"x-keep", "%REQ(x-absent)%"}};
  ops.add = {{"x-trace", "on"}};
  ops.remove = {"x-internal"};
  HeaderMutation m = compileLevels({&ops});
  Fixture f;
  http::HeaderMap fields{{"X-Env", "prod"}, {"x-internal", "1"}, {"X-Who", "mallory"}, {"x-keep", "mine"},
                         {"x-trace", "upstream"}, {"X-INTERNAL", "2"}};
  m.render(f.ctx).applyTo(fields);
  std::string out;
  fields.appendHttp1(out);
  EXPECT_EQ(out, "x-keep: mine\r\nx-trace: upstream\r\nx-env: canary\r\nx-who: alice\r\nx-trace: on\r\n");
}

TEST(HeaderMutation, Errors) {
  config::HeaderOperations bad;
  bad.set = {{"x-a", "%FOO%"}};
  std::vector<const config::HeaderOperations*> one{&bad};
  auto m = HeaderMutation::compile(one);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error(), "set[x-a]: unknown variable %FOO%");

  config::HeaderOperations framing;
  framing.add = {{"Content-Length", "1"}};
  one = {&framing};
  m = HeaderMutation::compile(one);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error(), "add[Content-Length]: header \"content-length\" is managed by the proxy and cannot be changed with add");

  for (const char* name : {"transfer-encoding", "connection", "keep-alive", "upgrade", "te", "proxy-connection"}) {
    config::HeaderOperations ops;
    ops.remove = {name};
    one = {&ops};
    EXPECT_FALSE(HeaderMutation::compile(one).has_value()) << name;
  }

  config::HeaderOperations badName;
  badName.set = {{"x a", "1"}};
  one = {&badName};
  m = HeaderMutation::compile(one);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error(), "set[x a]: invalid header name \"x a\"");

  EXPECT_EQ(headerOpNameError("remove", "host"), "cannot remove the Host header (use set or rewrite.authority)");
  EXPECT_EQ(headerOpNameError("set", "Host"), "");
  EXPECT_EQ(headerOpNameError("add", "x-fine"), "");
}

// ------------------------------------------------------------ PathRewrite

std::shared_ptr<const CompiledMatch> uriMatch(config::StringMatch m, bool ignoreCase = false) {
  config::HTTPMatchRequest spec;
  spec.uri = std::move(m);
  spec.ignoreUriCase = ignoreCase;
  auto c = CompiledMatch::compile(spec);
  EXPECT_TRUE(c.has_value()) << c.error();
  return c ? *c : nullptr;
}

PathRewrite uriRewrite(std::string uri) {
  config::HTTPRewrite spec;
  spec.uri = std::move(uri);
  auto r = PathRewrite::compile(spec);
  EXPECT_TRUE(r.has_value()) << r.error();
  return std::move(*r);
}

PathRewrite regexRewrite(std::string match, std::string sub) {
  config::HTTPRewrite spec;
  spec.uriRegexRewrite = config::RegexRewrite{std::move(match), std::move(sub), nullptr};
  auto r = PathRewrite::compile(spec);
  EXPECT_TRUE(r.has_value()) << r.error();
  return std::move(*r);
}

TEST(PathRewrite, PrefixMatchReplacesTheMatchedPrefix) {
  auto m = uriMatch(prefix("/api/v1"));
  PathRewrite r = uriRewrite("/v2");
  EXPECT_EQ(r.rewritePath("/api/v1/users?id=3", m.get()), "/v2/users?id=3");
  EXPECT_EQ(r.rewritePath("/api/v1", m.get()), "/v2");
  EXPECT_TRUE(r.rewritesPath());
}

TEST(PathRewrite, IgnoreUriCaseReplacesTheSameLength) {
  auto m = uriMatch(prefix("/API/"), true);
  PathRewrite r = uriRewrite("/backend/");
  EXPECT_EQ(r.rewritePath("/Api/Items?q=A", m.get()), "/backend/Items?q=A");
}

TEST(PathRewrite, ExactAndRegexMatchReplaceTheWholePath) {
  PathRewrite r = uriRewrite("/new");
  auto ex = uriMatch(exact("/old/page"));
  EXPECT_EQ(r.rewritePath("/old/page?x=1", ex.get()), "/new?x=1");
  auto re = uriMatch(regex("/item/[0-9]+"));
  EXPECT_EQ(r.rewritePath("/item/42", re.get()), "/new");
}

TEST(PathRewrite, MatchAllReplacesTheSlash) {
  PathRewrite r = uriRewrite("/v2/");
  EXPECT_EQ(r.rewritePath("/reviews/1?a=b", nullptr), "/v2/reviews/1?a=b");
  config::HTTPMatchRequest headersOnly;  // a block without a uri condition
  headersOnly.headers["x-user"] = exact("alice");
  auto m = CompiledMatch::compile(headersOnly);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(r.rewritePath("/x", m->get()), "/v2/x");
  EXPECT_EQ(r.rewritePath("*", nullptr), std::nullopt);
}

TEST(PathRewrite, NulloptWhenNothingChanges) {
  auto m = uriMatch(prefix("/same"));
  EXPECT_EQ(uriRewrite("/same").rewritePath("/same/x?q", m.get()), std::nullopt);
  config::HTTPRewrite authorityOnly;
  authorityOnly.authority = "ratings.example:8080";
  auto r = PathRewrite::compile(authorityOnly);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->rewritesPath());
  EXPECT_EQ(r->authority(), "ratings.example:8080");
  EXPECT_EQ(r->rewritePath("/anything?x", m.get()), std::nullopt);
  EXPECT_EQ(regexRewrite("^/nomatch", "/x").rewritePath("/path", nullptr), std::nullopt);
}

TEST(PathRewrite, RegexRewriteWithCapturesKeepsTheQuery) {
  PathRewrite r = regexRewrite("^/service/([^/]+)(/.*)$", "\\2/instance/\\1");
  EXPECT_EQ(r.rewritePath("/service/foo/v1/api?x=/service/a/b", nullptr), "/v1/api/instance/foo?x=/service/a/b");
  // GlobalReplace: every non-overlapping match in the path.
  EXPECT_EQ(regexRewrite("a", "b").rewritePath("/aXa?a=a", nullptr), "/bXb?a=a");
}

TEST(PathRewrite, CompileErrors) {
  config::HTTPRewrite both;
  both.uri = "/x";
  both.uriRegexRewrite = config::RegexRewrite{"a", "b", nullptr};
  EXPECT_FALSE(PathRewrite::compile(both).has_value());
  config::HTTPRewrite badCapture;
  badCapture.uriRegexRewrite = config::RegexRewrite{"^/(a)$", "\\2", nullptr};
  auto r = PathRewrite::compile(badCapture);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("uriRegexRewrite.rewrite"), std::string::npos) << r.error();
}

}  // namespace
}  // namespace sluice::route
