// DownstreamConn: how attempts fail and what follows – retries with
// back-off, per-try and route timeouts, circuit-breaker overflow, the end of
// an injected delay. The request flow itself is in http_session.cc.
#include <fmt/format.h>

#include "proxy/engine.h"
#include "proxy/h2_upstream.h"
#include "proxy/stream.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

void HttpExchange::onUpstreamClosed(int err) {
  // Only an HTTP/1.1 keep-alive race is retried for free: a shared HTTP/2
  // connection's other streams say nothing about this one, whose request
  // the server may have run (a GOAWAY's unprocessed streams come back as
  // REFUSED_STREAM instead, retried by policy).
  const bool wasReused = up_ && up_->reused();
  up_ = nullptr;  // the connection closed itself
  h2up_.reset();
  if (!stream_) return;
  Stream& s = *stream_;
  if (s.ep) {
    s.ep->decActive();
    s.ep = nullptr;
  }
  if (s.respHeadDone) {
    if (err == 0 && s.tunnel) {
      finishStream(false);  // the upstream ended the conversation: the client's bytes flush, then close
      return;
    }
    if (err == 0 && s.respBody.framing().kind == http::Framing::Kind::UntilClose) {
      finishStream(false);
    } else {
      cutResponse("UC");
    }
    return;
  }
  stream_->perTryTimer.cancel();
  wk_.stats().inc(Counter::UpstreamRqResetBeforeResponse);
  // A pooled connection the server closed just as we reused it: the request
  // never reached the application, so send it again on a new connection
  // without counting an attempt.
  if (wasReused && !s.raceRetried && s.replayable()) {
    s.raceRetried = true;
    wk_.stats().inc(Counter::UpstreamRqRetry);
    s.endpoint = -1;
    dispatch();
    return;
  }
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  failAttempt(s.attemptWrote ? route::AttemptFailure::Reset : route::AttemptFailure::ResetBeforeRequest, 503,
              "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
              "UC");
}

void HttpExchange::onUpstreamConnectFailed(bool timeout) {
  up_ = nullptr;
  h2up_.reset();
  if (!stream_) return;
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  if (stream_->ep) {
    stream_->ep->decActive();
    stream_->ep = nullptr;
  }
  stream_->perTryTimer.cancel();
  failAttempt(route::AttemptFailure::ConnectFailure, 503,
              timeout ? "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
                      : "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
              "UF");
}

void HttpExchange::failAttempt(route::AttemptFailure failure, int status, std::string_view body,
                                 std::string_view flags) {
  Stream& s = *stream_;
  route::RetryDecision d = s.retry ? s.retry->onFailure(failure, s.attemptWrote) : route::RetryDecision::NoRetry;
  if (scheduleRetry(d)) return;
  if (!s.reqDone) s.keepAlive = false;
  std::string f = s.retryLimitHit ? "URX," + std::string(flags) : std::string(flags);
  localReply(status, body, f);
}

bool HttpExchange::scheduleRetry(route::RetryDecision decision) {
  Stream& s = *stream_;
  if (decision == route::RetryDecision::LimitExceeded) {
    wk_.stats().inc(Counter::UpstreamRqRetryLimitExceeded);
    s.retryLimitHit = true;
    return false;
  }
  if (decision != route::RetryDecision::Retry) return false;
  // Body bytes already went out and were too many to keep: nothing to send
  // again.
  if (!s.replayable()) return false;
  if (!s.retryToken) {
    // maxRetries bounds retries in flight across the cluster.
    if (auto t = upstream::acquire(s.limits, upstream::ClusterLimits::kRetries)) {
      s.retryToken = std::move(*t);
    } else {
      s.limits->rqRetryOverflow.fetch_add(1, std::memory_order_relaxed);
      wk_.stats().inc(Counter::UpstreamRqRetryOverflow);
      return false;
    }
  }
  s.retried = true;
  wk_.stats().inc(Counter::UpstreamRqRetry);
  wk_.timers().schedule(stream_->retryTimer, s.retry->backoffNs());
  return true;
}

void HttpExchange::onRetryTimer() {
  if (stream_ && !up_ && !h2up_) dispatch();
}

void HttpExchange::onPoolSlot() {
  if (!stream_ || up_ || !stream_->pendingToken) return;
  wokenFirst_ = true;
  dispatch();
  wokenFirst_ = false;
}

void HttpExchange::onPoolConnection(UpstreamConn* c) {
  Stream& s = *stream_;
  s.ep = &c->endpointState();  // the endpoint this request chose
  up_ = c;
  up_->attach(this);
  beginAttempt();
  sendUpstreamHead();
}

// A connection-pool circuit breaker tripped: answer at once, as Envoy does.
void HttpExchange::overflow(bool) {
  Stream& s = *stream_;
  if (s.limits) s.limits->rqPendingOverflow.fetch_add(1, std::memory_order_relaxed);
  wk_.stats().inc(Counter::UpstreamRqPendingOverflow);
  s.pendingToken.reset();
  if (!s.reqDone) s.keepAlive = false;
  http::HeaderMap extra;
  extra.add("x-envoy-overloaded", "true");
  localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", "UO",
             &extra);
}

void HttpExchange::onRouteTimeout() {
  if (!stream_) return;
  wk_.stats().inc(Counter::UpstreamRqTimeout);
  if (stream_->respStarted) {
    // The route timeout covers the whole response: past it, a response
    // still streaming is cut off.
    cutResponse("UT");
    return;
  }
  if ((up_ || h2up_) && !stream_->respHeadDone)
    reportOutcome(upstream::Outcome::LocalOriginFailure);  // the host never answered
  releaseUpstream(false);
  if (!stream_->reqDone) stream_->keepAlive = false;
  localReply(504, "upstream request timeout", "UT");
}

void HttpExchange::onPerTryTimeout() {
  if (!stream_) return;
  wk_.stats().inc(Counter::UpstreamRqPerTryTimeout);
  if (stream_->respStarted) {
    cutResponse("UT");
    return;
  }
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  releaseUpstream(false);
  failAttempt(route::AttemptFailure::PerTryTimeout, 504, "upstream request timeout", "UT");
}

void HttpExchange::reportOutcome(upstream::Outcome o) {
  Stream* s = stream_.get();
  if (s && s->health && s->endpoint >= 0)
    s->health->report(size_t(s->endpoint), o, wk_.clock().nowNs());
}

void HttpExchange::releaseUpstream(bool reusable) {
  Stream* s = stream_.get();
  if (s && s->ep) {
    s->ep->decActive();
    s->ep = nullptr;
  }
  if (h2up_) {
    std::shared_ptr<H2UpstreamStream> h2 = std::move(h2up_);
    h2->cancel();  // a stream not done both ways is reset
    return;
  }
  if (!up_) return;
  UpstreamConn* up = up_;
  up_ = nullptr;
  if (reusable && !info_.draining) {
    up->release();
  } else {
    up->detach();
    up->close();
  }
}

}  // namespace sluice::proxy
