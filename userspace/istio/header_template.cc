#include "istio/header_template.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <ctime>
#include <optional>

namespace sluice::istio {

namespace {

bool isTokenChar(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
}

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) {
    if (ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
  }
  return out;
}

// Istio refuses control characters other than HTAB in header values; CR/LF
// would let a config inject header lines.
bool hasControlChar(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    auto u = static_cast<unsigned char>(ch);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  });
}

struct Command {
  std::string_view name;
  uint8_t kind;
  enum Arg : uint8_t { None, Optional, Required } arg;
};

// START_TIME's format: strftime plus Envoy's %s (epoch seconds) and %f /
// %1f..%9f (fraction of the second). A digit directive other than %Nf is a
// typo rather than something strftime should guess at.
std::expected<void, std::string> checkTimeFormat(std::string_view fmt) {
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') continue;
    if (i + 1 == fmt.size()) return std::unexpected("START_TIME format ends with a lone '%'");
    char d = fmt[i + 1];
    if (d >= '0' && d <= '9') {
      if (d == '0' || i + 2 >= fmt.size() || fmt[i + 2] != 'f')
        return std::unexpected("START_TIME format: %" + std::string(1, d) + " must be followed by f (%1f..%9f)");
      ++i;
    }
    ++i;
  }
  return {};
}

// REQ/RESP argument: "name" or "name?fallback", optional ":maxlen" is split
// off by the caller. Pseudo-headers (":path") are allowed as in Envoy.
std::expected<void, std::string> checkHeaderArg(std::string_view arg) {
  size_t q = arg.find('?');
  std::array<std::string_view, 2> names{arg.substr(0, q), q == std::string_view::npos ? "" : arg.substr(q + 1)};
  for (size_t i = 0; i < (q == std::string_view::npos ? 1u : 2u); ++i) {
    std::string_view n = names[i];
    if (!n.empty() && n.front() == ':') n.remove_prefix(1);
    if (n.empty() || !std::all_of(n.begin(), n.end(), isTokenChar))
      return std::unexpected("invalid header name \"" + std::string(names[i]) + "\"");
  }
  return {};
}

void appendAddress(const sockaddr_in* sa, bool withPort, std::string& out) {
  if (sa == nullptr) return;
  char buf[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof(buf)) == nullptr) return;
  out.append(buf);
  if (withPort) out.append(":").append(std::to_string(ntohs(sa->sin_port)));
}

const std::string& hostName() {
  static const std::string name = [] {
    char buf[256] = {};
    if (gethostname(buf, sizeof(buf) - 1) != 0) return std::string();
    return std::string(buf);
  }();
  return name;
}

// Text between the %s / %Nf extensions: handed to strftime only when it
// holds a conversion (the broken-down time is computed once, on demand).
void appendStrftime(std::string_view fmt, time_t secs, std::optional<tm>& t, std::string& out) {
  if (fmt.empty()) return;
  if (fmt.find('%') == std::string_view::npos) {
    out.append(fmt);
    return;
  }
  if (!t) {
    t.emplace();
    gmtime_r(&secs, &*t);
  }
  std::string f(fmt);  // strftime wants a terminated string
  char buf[256];
  size_t n = strftime(buf, sizeof(buf), f.c_str(), &*t);
  out.append(buf, n);
}

// `digits` leading digits of a nanosecond fraction (truncated, as Envoy does).
void appendFraction(uint32_t frac, int digits, std::string& out) {
  char nine[9];
  for (int i = 8; i >= 0; --i) {
    nine[i] = char('0' + frac % 10);
    frac /= 10;
  }
  out.append(nine, size_t(digits));
}

void appendStartTime(std::string_view fmt, uint64_t ns, std::string& out) {
  time_t secs = time_t(ns / 1000000000ull);
  uint32_t frac = uint32_t(ns % 1000000000ull);
  std::optional<tm> t;
  if (fmt.empty()) {  // Envoy's default: RFC 3339 with milliseconds, UTC
    appendStrftime("%Y-%m-%dT%H:%M:%S", secs, t, out);
    out.push_back('.');
    appendFraction(frac, 3, out);
    out.push_back('Z');
    return;
  }
  size_t chunk = 0;  // start of text not yet handed to strftime
  for (size_t i = 0; i + 1 < fmt.size(); ++i) {
    if (fmt[i] != '%') continue;
    char d = fmt[i + 1];
    size_t len = 0;
    int digits = 0;
    if (d == 's') {
      len = 2;
    } else if (d == 'f') {
      len = 2, digits = 9;
    } else if (d >= '1' && d <= '9' && i + 2 < fmt.size() && fmt[i + 2] == 'f') {
      len = 3, digits = d - '0';
    } else {
      ++i;  // "%%", "%Y", ...: strftime's
      continue;
    }
    appendStrftime(fmt.substr(chunk, i - chunk), secs, t, out);
    if (digits == 0) {
      char num[24];
      out.append(num, size_t(std::to_chars(num, num + sizeof(num), int64_t(secs)).ptr - num));
    } else {
      appendFraction(frac, digits, out);
    }
    i += len - 1;
    chunk = i + 1;
  }
  appendStrftime(fmt.substr(chunk), secs, t, out);
}

std::string_view findHeader(const http::HeaderMap* headers, std::string_view name) {
  if (headers == nullptr) return {};
  if (name == ":authority") name = "host";
  return headers->get(name);
}

// Appends `v`, with control characters turned into spaces: values taken from
// peers (certificate subjects, ...) must not be able to start a header line.
void appendSanitised(std::string_view v, std::string& out) {
  size_t start = out.size();
  out.append(v);
  for (size_t i = start; i < out.size(); ++i) {
    auto u = static_cast<unsigned char>(out[i]);
    if ((u < 0x20 && u != '\t') || u == 0x7f) out[i] = ' ';
  }
}

}  // namespace

std::expected<HeaderTemplate, std::string> HeaderTemplate::parse(std::string_view text) {
  using K = Piece::Kind;
  static constexpr Command kCommands[] = {
      {"START_TIME", K::StartTime, Command::Optional},
      {"DOWNSTREAM_REMOTE_ADDRESS", K::DownstreamRemote, Command::None},
      {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", K::DownstreamRemoteNoPort, Command::None},
      {"DOWNSTREAM_LOCAL_ADDRESS", K::DownstreamLocal, Command::None},
      {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", K::DownstreamLocalNoPort, Command::None},
      {"DOWNSTREAM_LOCAL_PORT", K::DownstreamLocalPort, Command::None},
      {"UPSTREAM_REMOTE_ADDRESS", K::UpstreamRemote, Command::None},
      {"PROTOCOL", K::Protocol, Command::None},
      {"REQ", K::Req, Command::Required},
      {"RESP", K::Resp, Command::Required},
      // Envoy accepts a date format here; the TLS layer hands over the dates
      // already formatted, so the argument is accepted and not applied.
      {"DOWNSTREAM_PEER_CERT_V_START", K::PeerCertVStart, Command::Optional},
      {"DOWNSTREAM_PEER_CERT_V_END", K::PeerCertVEnd, Command::Optional},
      {"DOWNSTREAM_PEER_URI_SAN", K::PeerUriSan, Command::None},
      {"DOWNSTREAM_PEER_SUBJECT", K::PeerSubject, Command::None},
      {"DOWNSTREAM_TLS_VERSION", K::TlsVersion, Command::None},
      {"HOSTNAME", K::Hostname, Command::None},
  };

  if (hasControlChar(text)) return std::unexpected("header value contains a control character");
  HeaderTemplate out;
  std::string literal;
  auto flushLiteral = [&] {
    if (literal.empty()) return;
    out.pieces_.push_back(Piece{Piece::Literal, std::move(literal)});
    literal.clear();
  };

  size_t i = 0;
  while (i < text.size()) {
    size_t pct = text.find('%', i);
    if (pct == std::string_view::npos) {
      literal.append(text.substr(i));
      break;
    }
    literal.append(text.substr(i, pct - i));
    if (pct + 1 < text.size() && text[pct + 1] == '%') {
      literal.push_back('%');
      i = pct + 2;
      continue;
    }
    // %NAME%, %NAME(arg)% or %NAME(arg):maxlen%.
    size_t p = pct + 1;
    // Lower case is scanned too, so "%foo%" is reported as unknown by name.
    while (p < text.size() && (std::isalnum(static_cast<unsigned char>(text[p])) || text[p] == '_')) ++p;
    std::string_view name = text.substr(pct + 1, p - pct - 1);
    std::string_view arg;
    bool hasArg = false;
    if (p < text.size() && text[p] == '(') {
      // The argument may hold '%' (START_TIME formats), so it ends at the
      // first ')' that is followed by the closing '%' or a ":maxlen".
      size_t close = p + 1;
      while (close < text.size() &&
             !(text[close] == ')' && (close + 1 == text.size() || text[close + 1] == '%' || text[close + 1] == ':')))
        ++close;
      if (close >= text.size())
        return std::unexpected("unterminated variable \"" + std::string(text.substr(pct)) + "\" (write %% for a literal %)");
      arg = text.substr(p + 1, close - p - 1);
      hasArg = true;
      p = close + 1;
    }
    std::string_view maxLen;
    bool hasMaxLen = false;
    if (p < text.size() && text[p] == ':') {
      hasMaxLen = true;
      size_t end = p + 1;
      while (end < text.size() && text[end] != '%') ++end;  // checked below
      maxLen = text.substr(p + 1, end - p - 1);
      p = end;
    }
    if (name.empty())
      return std::unexpected("lone '%' at offset " + std::to_string(pct) + " (write %% for a literal %)");
    if (p >= text.size() || text[p] != '%')
      return std::unexpected("unterminated variable \"" + std::string(text.substr(pct, p - pct)) +
                             "\" (write %% for a literal %)");
    std::string_view whole = text.substr(pct, p + 1 - pct);
    auto cmd = std::find_if(std::begin(kCommands), std::end(kCommands), [&](const Command& c) { return c.name == name; });
    if (cmd == std::end(kCommands)) return std::unexpected("unknown variable " + std::string(whole));
    if (hasArg && cmd->arg == Command::None)
      return std::unexpected("variable %" + std::string(name) + "% takes no argument, got " + std::string(whole));
    if (!hasArg && cmd->arg == Command::Required)
      return std::unexpected("variable " + std::string(whole) + " needs a header name: %" + std::string(name) + "(name)%");
    Piece piece{Piece::Kind(cmd->kind), std::string(arg)};
    if (hasMaxLen) {
      uint32_t n = 0;
      auto [ptr, ec] = std::from_chars(maxLen.data(), maxLen.data() + maxLen.size(), n);
      if (cmd->kind != K::Req && cmd->kind != K::Resp)
        return std::unexpected("only %REQ(...)% and %RESP(...)% take a :maxlen, got " + std::string(whole));
      if (maxLen.empty() || ec != std::errc() || ptr != maxLen.data() + maxLen.size() || n == 0)
        return std::unexpected("bad :maxlen in " + std::string(whole) + " (want a positive integer)");
    }
    if (cmd->kind == K::StartTime) {
      if (auto r = checkTimeFormat(arg); !r) return std::unexpected(r.error() + " in " + std::string(whole));
    } else if (cmd->kind == K::Req || cmd->kind == K::Resp) {
      if (auto r = checkHeaderArg(arg); !r) return std::unexpected(r.error() + " in " + std::string(whole));
      // Kept as "name[?fallback][ maxlen]", lower case: a space cannot occur
      // in a header name, ':' can (pseudo-headers).
      piece.arg = toLower(arg);
      if (hasMaxLen) piece.arg.append(" ").append(maxLen);
      // The proxy generates x-request-id before any mutation runs, so the
      // generated id is what %REQ(x-request-id)% sees when the client sent none.
      if (cmd->kind == K::Req && piece.arg == "x-request-id") piece.kind = K::RequestId;
    }
    flushLiteral();
    out.pieces_.push_back(std::move(piece));
    i = p + 1;
  }
  flushLiteral();
  return out;
}

void HeaderTemplate::render(const HeaderContext& ctx, std::string& out) const {
  for (const Piece& p : pieces_) {
    switch (p.kind) {
      case Piece::Literal:
        out.append(p.arg);
        break;
      case Piece::StartTime:
        appendStartTime(p.arg, ctx.startTimeRealNs, out);
        break;
      case Piece::DownstreamRemote:
        appendAddress(ctx.downstreamRemote, true, out);
        break;
      case Piece::DownstreamRemoteNoPort:
        appendAddress(ctx.downstreamRemote, false, out);
        break;
      case Piece::DownstreamLocal:
        appendAddress(ctx.downstreamLocal, true, out);
        break;
      case Piece::DownstreamLocalNoPort:
        appendAddress(ctx.downstreamLocal, false, out);
        break;
      case Piece::DownstreamLocalPort:
        if (ctx.downstreamLocal != nullptr) out.append(std::to_string(ntohs(ctx.downstreamLocal->sin_port)));
        break;
      case Piece::UpstreamRemote:
        appendAddress(ctx.upstreamRemote, true, out);
        break;
      case Piece::Protocol:
        out.append(ctx.protocol);
        break;
      case Piece::RequestId: {
        std::string_view v = findHeader(ctx.requestHeaders, "x-request-id");
        out.append(v.empty() ? ctx.requestId : v);
        break;
      }
      case Piece::Req:
      case Piece::Resp: {
        std::string_view spec = p.arg;
        size_t maxLen = std::string_view::npos;
        if (size_t sp = spec.find(' '); sp != std::string_view::npos) {
          std::from_chars(spec.data() + sp + 1, spec.data() + spec.size(), maxLen);
          spec = spec.substr(0, sp);
        }
        const auto* headers = p.kind == Piece::Req ? ctx.requestHeaders : ctx.responseHeaders;
        size_t q = spec.find('?');
        std::string_view v = findHeader(headers, spec.substr(0, q));
        if (v.empty() && q != std::string_view::npos) v = findHeader(headers, spec.substr(q + 1));
        appendSanitised(v.substr(0, std::min(maxLen, v.size())), out);
        break;
      }
      case Piece::PeerCertVStart:
        appendSanitised(ctx.peerCertVStart, out);
        break;
      case Piece::PeerCertVEnd:
        appendSanitised(ctx.peerCertVEnd, out);
        break;
      case Piece::PeerUriSan:
        appendSanitised(ctx.peerUriSan, out);
        break;
      case Piece::PeerSubject:
        appendSanitised(ctx.peerSubject, out);
        break;
      case Piece::TlsVersion:
        appendSanitised(ctx.tlsVersion, out);
        break;
      case Piece::Hostname:
        out.append(hostName());
        break;
    }
  }
}

std::string headerOpNameError(std::string_view op, std::string_view name) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), isTokenChar))
    return "invalid header name \"" + std::string(name) + "\"";
  // Framing and connection management belong to the proxy: letting a route
  // rewrite them would desynchronise the body framing or the connection.
  static constexpr std::string_view kProxyOwned[] = {"content-length", "transfer-encoding", "connection",
                                                     "keep-alive",     "upgrade",           "te",
                                                     "proxy-connection"};
  for (std::string_view p : kProxyOwned) {
    if (http::iequals(name, p))
      return "header \"" + std::string(name) + "\" is managed by the proxy and cannot be changed with " + std::string(op);
  }
  if (http::iequals(name, "host") && op != "set")
    return "cannot " + std::string(op) + " the Host header (use set or rewrite.authority)";
  return {};
}

}  // namespace sluice::istio
