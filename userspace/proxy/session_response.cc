// DownstreamConn, the response side of a request: the upstream's head
// (retried or passed on with the route's header operations), its body,
// local replies, and the end of the stream (counters, access log).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/http_session.h"
#include "proxy/request_util.h"
#include "proxy/stream.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

bool HttpExchange::handleResponseHead() {
  Stream& s = *stream_;
  for (;;) {
    http::ParseError err;
    resp_.headers.clear();
    std::string& in = up_->input();
    http::ParseStatus st = http::parseResponseHead(in.data(), in.size(), info_.limits, s.isHead, resp_, err);
    if (st == http::ParseStatus::Incomplete) return false;
    if (st == http::ParseStatus::Error) {
      releaseUpstream(false);
      s.keepAlive = s.keepAlive && s.reqDone;
      localReply(502, "upstream sent an invalid response", "UPE");
      return false;
    }
    if (resp_.status == 101 && s.websocket && acceptsWebSocket(resp_)) {
      startTunnel();
      return false;
    }
    if (resp_.status == 101) {
      // Only a WebSocket upgrade is forwarded, so any other switch of
      // protocol is the upstream's error; what follows is not HTTP and the
      // connection is not reused.
      releaseUpstream(false);
      s.keepAlive = s.keepAlive && s.reqDone;
      localReply(502, "upstream switched protocols unasked", "UPE");
      return false;
    }
    if (resp_.status >= 100 && resp_.status < 200) {
      // Interim responses: 100 Continue was already answered by us.
      up_->consume(resp_.headBytes);
      continue;
    }
    break;
  }
  return acceptResponseHead();
}

bool HttpExchange::acceptResponseHead() {
  Stream& s = *stream_;
  reportOutcome(upstream::outcomeOf(resp_.status));
  // The response's fields as a map for the retry decision, the header
  // templates and the head sent on; the parser's list (and its capacity)
  // goes back to resp_ for the next response.
  http::HeaderMap respHeaders(std::move(resp_.headers));
  struct GiveBack {
    http::ResponseHead& resp;
    http::HeaderMap& map;
    ~GiveBack() { resp.headers = map.takeFields(); }
  } giveBack{resp_, respHeaders};
  if (s.retry) {
    // A retriable answer is dropped and the request tried again; the last
    // attempt's answer goes to the client whatever it is.
    route::RetryDecision d = s.retry->onResponse(resp_.status, respHeaders);
    if (scheduleRetry(d)) {
      stream_->perTryTimer.cancel();
      releaseUpstream(false);
      return false;
    }
    // Otherwise (not retriable, no attempt left, body not replayable,
    // maxRetries reached) this answer is the one the client gets.
  }
  s.respHeadDone = true;
  s.status = resp_.status;
  if (s.grpc) {
    // A trailers-only answer carries the call's status in its head.
    if (const http::HeaderMap::Field* g = respHeaders.find("grpc-status")) s.grpcStatus = http::grpcStatusValue(g->value);
  }
  s.serviceTimeMs = (wk_.clock().nowNs() - s.upstreamSentNs) / 1'000'000;
  s.dechunk = s.http10 && resp_.framing.kind == http::Framing::Kind::Chunked;
  bool untilClose = resp_.framing.kind == http::Framing::Kind::UntilClose;
  s.closeAfter = !s.keepAlive || info_.draining || s.dechunk || untilClose;
  s.respBody.reset(resp_.framing);
  if (s.retryLimitHit && s.flags == "-") s.flags.assign("URX");
  std::optional<route::HeaderMutation::Rendered> rendered;
  if (s.wc && s.wc->responseHeaders) {
    istio::HeaderContext ctx = headerContext();
    ctx.responseHeaders = &respHeaders;
    ctx.upstreamRemote = &s.upstreamAddr;
    rendered.emplace(s.wc->responseHeaders->render(ctx));
  }
  if (!s.setCookie.empty()) s.responseExtra.add("set-cookie", s.setCookie);
  char serviceTime[24];
  auto [end, ec] = std::to_chars(serviceTime, serviceTime + sizeof(serviceTime), s.serviceTimeMs);
  thread_local http::HeaderMap fields;  // reused: no allocation per response once warm
  fields.clear();
  downstreamHeaders(respHeaders, std::string_view(serviceTime, size_t(end - serviceTime)),
                    s.responseExtra.empty() ? nullptr : &s.responseExtra, rendered ? &*rendered : nullptr, fields);
  // Before the head's bytes go: the fields are views into them.
  s.respStarted = true;
  s.respBytes += sendResponseHead(resp_, fields);
  if (up_) up_->consume(resp_.headBytes);
  return true;
}

// ------------------------------------------------- an HTTP/2 upstream's response

void HttpExchange::onH2UpstreamHead(int status, std::vector<http::Header>& fields, bool endStream) {
  if (!stream_ || !h2up_) return;
  touchStream();
  Stream& s = *stream_;
  resp_.status = status;
  resp_.reason = {};
  resp_.versionMinor = 1;
  resp_.headBytes = 0;
  resp_.keepAlive = true;
  resp_.headers.assign(fields.begin(), fields.end());
  resp_.declared = {};
  if (const http::Header* cl = resp_.find("content-length")) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(cl->value.data(), cl->value.data() + cl->value.size(), n);
    if (ec == std::errc() && end == cl->value.data() + cl->value.size())
      resp_.declared = {http::Framing::Kind::ContentLength, n};
  }
  // The client's framing: none when the stream ended with the head (or
  // there can be no body), the upstream's length, else chunked for an
  // HTTP/1.1 client (HTTP/2 clients frame it themselves).
  if (endStream || s.isHead || status == 204 || status == 304) {
    resp_.framing = {};
  } else if (resp_.declared.kind == http::Framing::Kind::ContentLength) {
    resp_.framing = resp_.declared;
  } else {
    resp_.framing = {http::Framing::Kind::Chunked, 0};
  }
  if (!acceptResponseHead()) return;
  forwardH2ResponseBody();
}

void HttpExchange::onH2UpstreamData() {
  if (!stream_ || !h2up_ || !stream_->respHeadDone) return;
  touchStream();
  forwardH2ResponseBody();
}

void HttpExchange::onH2UpstreamTrailers(std::vector<http::Header>& fields) {
  if (!stream_ || !h2up_ || !stream_->respHeadDone) return;
  http::HeaderMap trailers(std::vector<http::Header>(fields.begin(), fields.end()));
  if (stream_->grpc) {
    if (const http::HeaderMap::Field* g = trailers.find("grpc-status"))
      stream_->grpcStatus = http::grpcStatusValue(g->value);
  }
  sendResponseTrailers(trailers);
  forwardH2ResponseBody();
}

void HttpExchange::forwardH2ResponseBody() {
  Stream& s = *stream_;
  std::string& in = h2up_->responseBody();
  const bool ended = h2up_->responseEnded();
  if (!in.empty() || ended) {
    if (responseBacklogged()) return;  // the client's drain brings us back
    if (s.grpc) s.respMessages.feed(in);
    if (resp_.framing.kind != http::Framing::Kind::None) {
      const bool chunked = resp_.framing.kind == http::Framing::Kind::Chunked;
      std::vector<std::string_view> payload;
      if (!in.empty()) payload.emplace_back(in);
      sendResponseBody(in, chunked ? &payload : nullptr, ended);
    }
    s.respBytes += in.size();
    h2up_->take(in.size());
  }
  if (ended) finishStream(true);
}

void HttpExchange::onH2UpstreamReset(uint32_t errorCode) {
  if (!stream_) return;
  if (errorCode == NGHTTP2_REFUSED_STREAM && !stream_->respHeadDone) {
    // The server did no work on it (RFC 9113, 8.7): refused-stream.
    const bool wasReused = h2up_ && h2up_->reusedConnection();
    (void)wasReused;
    h2up_.reset();
    Stream& s = *stream_;
    if (s.ep) {
      s.ep->decActive();
      s.ep = nullptr;
    }
    stream_->perTryTimer.cancel();
    wk_.stats().inc(Counter::UpstreamRqResetBeforeResponse);
    failAttempt(route::AttemptFailure::RefusedStream, 503,
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
                "UR");
    return;
  }
  onUpstreamClosed(-ECONNRESET);
}

bool HttpExchange::upstreamResponsePaused() const {
  return (up_ && up_->readingPaused()) || (h2up_ && !h2up_->responseBody().empty());
}

void HttpExchange::onDownstreamDrained() {
  if (!stream_ || !stream_->respHeadDone) return;
  if (h2up_) {
    forwardH2ResponseBody();
    return;
  }
  if (up_ && up_->readingPaused()) {
    up_->startReading();
    if (stream_->tunnel) {
      relayUpstream();
    } else {
      forwardResponseBody();
    }
  }
}

void HttpExchange::forwardResponseBody() {
  Stream& s = *stream_;
  std::string& in = up_->input();
  if (!s.respBody.done() && !in.empty()) {
    const bool chunked = s.respBody.framing().kind == http::Framing::Kind::Chunked;
    std::vector<std::string_view> payload;
    http::BodyFramer::Step step = s.respBody.consume(in.data(), in.size(), chunked ? &payload : nullptr);
    if (step.status == http::BodyFramer::Status::Error) {
      cutResponse("UPE");
      return;
    }
    const bool last = step.status == http::BodyFramer::Status::Done;
    if (s.grpc) {
      if (chunked) {
        for (std::string_view p : payload) s.respMessages.feed(p);
      } else {
        s.respMessages.feed(std::string_view(in.data(), step.consumed));
      }
    }
    if (step.consumed > 0 || last)
      sendResponseBody(std::string_view(in.data(), step.consumed), chunked ? &payload : nullptr, last);
    s.respBytes += step.consumed;
    up_->consume(step.consumed);
  }
  if (s.respBody.done()) {
    // Leftover bytes after a complete response mean the server broke
    // framing: never reuse such a connection.
    finishStream(resp_.keepAlive && s.reqDone && in.empty());
    return;
  }
  if (responseBacklogged()) up_->pauseReading();
}

void HttpExchange::localReply(int status, std::string_view body, std::string_view flags,
                                const http::HeaderMap* extraHeaders) {
  Stream& s = *stream_;
  cancelTimers();
  if (s.respStarted) {
    // Too late for a clean answer.
    cutResponse(flags);
    return;
  }
  http::HeaderMap grpcFields;
  std::string grpcMessage;
  if (s.grpc) {
    const http::HeaderMap::Field* given = extraHeaders ? extraHeaders->find("grpc-status") : nullptr;
    if (given) {
      s.grpcStatus = http::grpcStatusValue(given->value);  // a fault's grpcStatus abort
    } else {
      // A gRPC client reads the status, not the HTTP code: the answer is
      // trailers-only (HTTP 200, grpc-status, grpc-message), as Envoy
      // sends it; a timeout is DEADLINE_EXCEEDED.
      s.grpcStatus = status == 504 && flags.find("UT") != std::string_view::npos ? 4 : http::grpcStatusForHttp(status);
      if (extraHeaders) {
        for (const http::HeaderMap::Field& f : *extraHeaders) grpcFields.add(f.name, f.value);
      }
      grpcFields.add("content-type", "application/grpc");
      grpcFields.addCopy("grpc-status", std::to_string(s.grpcStatus));
      grpcMessage = http::grpcMessageEncode(body);
      grpcFields.add("grpc-message", grpcMessage);
      status = 200;
      body = {};
      extraHeaders = &grpcFields;
    }
  }
  s.status = status;
  s.flags.assign(flags);
  s.closeAfter = !s.keepAlive || info_.draining;
  s.respStarted = true;
  s.respBytes += sendLocalResponse(status, body, extraHeaders);
  finishStream(false);
}

void HttpExchange::finishStream(bool upstreamReusable) {
  Stream& s = *stream_;
  cancelTimers();
  if (s.retried && s.status > 0 && s.status < 500) wk_.stats().inc(Counter::UpstreamRqRetrySuccess);
  releaseUpstream(upstreamReusable);
  logAndCount();
  const bool keep = s.keepAlive && s.reqDone && !s.closeAfter && !info_.draining;
  retireStream();
  onExchangeEnd(keep);
}

void HttpExchange::abortStream(std::string_view flags) {
  if (!stream_) return;
  if (stream_->status == 0 || !stream_->respStarted) stream_->status = 0;
  stream_->flags.assign(flags);
  cancelTimers();
  releaseUpstream(false);
  logAndCount();
  retireStream();
}

void HttpExchange::cutResponse(std::string_view flags) {
  abortStream(flags);
  onExchangeCut();
}

void HttpExchange::cancelTimers() {
  stream_->routeTimer.cancel();
  stream_->retryTimer.cancel();
  wk_.pool().cancel(*this);
  stream_->perTryTimer.cancel();
  stream_->resumeTimer.cancel();
  if (stream_->rateLimit.state == Stream::RateLimitCall::State::Pending) {
    stream_->rateLimit.state = Stream::RateLimitCall::State::None;
    cancelRateLimitCall();
  }
}

void HttpExchange::retireStream() {
  stream_->idleTimer.cancel();
  // Mirrors still waiting for body bytes are abandoned; the others finish
  // on their own.
  stream_->shadows.clear();
  stream_->pendingShadows.clear();
  stream_->retry.reset();  // refers to the snapshot's route
  // Drop the snapshot now: an idle keep-alive connection must not keep an
  // old configuration alive. The circuit-breaker units go back now too.
  stream_->snapshot.reset();
  stream_->requestToken.reset();
  stream_->pendingToken.reset();
  stream_->retryToken.reset();
  stream_->limits.reset();
  stream_->health.reset();
  // Its head's buffers serve the next request (nothing reads a retired
  // stream's head: the access log line is written).
  spareHeadBytes_.swap(stream_->headBytes);
  spareHeaders_ = stream_->headers.takeFields();
  wk_.deleteLater(std::move(stream_));
}

void HttpExchange::logAndCount() {
  Stream& s = *stream_;
  uint64_t durUs = (wk_.clock().nowNs() - s.startNs) / 1000;
  int cls = s.status / 100;
  switch (cls) {
    case 1: wk_.stats().inc(Counter::DownstreamRq1xx); break;
    case 2: wk_.stats().inc(Counter::DownstreamRq2xx); break;
    case 3: wk_.stats().inc(Counter::DownstreamRq3xx); break;
    case 4: wk_.stats().inc(Counter::DownstreamRq4xx); break;
    case 5: wk_.stats().inc(Counter::DownstreamRq5xx); break;
    default: break;
  }
  stats::RequestKeyView key;
  if (s.cluster) {
    key.destinationService = s.cluster->serviceHost;
    key.destinationVersion = s.cluster->subset.empty() ? std::string_view("unknown") : s.cluster->subset;
    key.cluster = s.cluster->name;
  } else {
    key.destinationService = "unknown";
    key.destinationVersion = "unknown";
  }
  key.responseCode = uint16_t(s.status);
  key.grpc = s.grpc;
  key.grpcStatus = int16_t(s.grpc ? s.grpcStatus : -1);
  if (s.faultDelayed) s.flags = s.flags == "-" ? std::string("DI") : "DI," + s.flags;
  key.responseFlags = s.flags;
  wk_.stats().recordRequest(key, durUs, s.reqBodySent, s.respBytes, s.reqMessages.messages(),
                            s.respMessages.messages());
  if (wk_.accessLog()) {
    const http::HeaderMap::Field* xff = s.headers.find("x-forwarded-for");
    const http::HeaderMap::Field* ua = s.headers.find("user-agent");
    wk_.logLine(fmt::format(
        "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {}\n",
        formatLogTime(), s.head.method, s.target.path, protocol(), s.status, s.flags, s.reqBodySent,
        s.respBytes, durUs / 1000, s.respHeadDone ? std::to_string(s.serviceTimeMs) : "-",
        xff && !xff->value.empty() ? xff->value : "-", ua && !ua->value.empty() ? ua->value : "-",
        s.requestId, s.target.authority, s.upstreamHost.empty() ? "-" : s.upstreamHost,
        s.cluster ? s.cluster->name : "-"));
  }
}

}  // namespace sluice::proxy
