// DownstreamConn: how attempts fail and what follows – retries with
// back-off, per-try and route timeouts, circuit-breaker overflow, the end of
// an injected delay. The request flow itself is in http_session.cc.
#include <fmt/format.h>

#include "proxy/engine.h"
#include "proxy/exchange.h"
#include "proxy/http_session.h"
#include "proxy/worker.h"

namespace sluice::proxy {

using stats::Counter;

void DownstreamConn::onUpstreamClosed(int err) {
  const bool wasReused = up_ && up_->reused();
  up_ = nullptr;  // the connection closed itself
  if (!ex_) return;
  Exchange& ex = *ex_;
  if (ex.ep) {
    ex.ep->decActive();
    ex.ep = nullptr;
  }
  if (ex.respHeadDone) {
    if (err == 0 && ex.tunnel) {
      finishExchange(false);  // the upstream ended the conversation: the client's bytes flush, then close
      return;
    }
    if (err == 0 && ex.respBody.framing().kind == http::Framing::Kind::UntilClose) {
      finishExchange(false);
    } else {
      cutResponse("UC");
    }
    return;
  }
  perTryTimer_.cancel();
  worker_.stats().inc(Counter::UpstreamRqResetBeforeResponse);
  // A pooled connection the server closed just as we reused it: the request
  // never reached the application, so send it again on a new connection
  // without counting an attempt.
  if (wasReused && !ex.raceRetried && ex.replayable()) {
    ex.raceRetried = true;
    worker_.stats().inc(Counter::UpstreamRqRetry);
    ex.endpoint = -1;
    dispatch();
    return;
  }
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  failAttempt(ex.attemptWrote ? route::AttemptFailure::Reset : route::AttemptFailure::ResetBeforeRequest, 503,
              "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
              "UC");
}

void DownstreamConn::onUpstreamConnectFailed(bool timeout) {
  up_ = nullptr;
  if (!ex_) return;
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  if (ex_->ep) {
    ex_->ep->decActive();
    ex_->ep = nullptr;
  }
  perTryTimer_.cancel();
  failAttempt(route::AttemptFailure::ConnectFailure, 503,
              timeout ? "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
                      : "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
              "UF");
}

void DownstreamConn::failAttempt(route::AttemptFailure failure, int status, std::string_view body,
                                 std::string_view flags) {
  Exchange& ex = *ex_;
  route::RetryDecision d = ex.retry ? ex.retry->onFailure(failure, ex.attemptWrote) : route::RetryDecision::NoRetry;
  if (scheduleRetry(d)) return;
  if (!ex.reqDone) ex.keepAlive = false;
  std::string f = ex.retryLimitHit ? "URX," + std::string(flags) : std::string(flags);
  localReply(status, body, f);
}

bool DownstreamConn::scheduleRetry(route::RetryDecision decision) {
  Exchange& ex = *ex_;
  if (decision == route::RetryDecision::LimitExceeded) {
    worker_.stats().inc(Counter::UpstreamRqRetryLimitExceeded);
    ex.retryLimitHit = true;
    return false;
  }
  if (decision != route::RetryDecision::Retry) return false;
  // Body bytes already went out and were too many to keep: nothing to send
  // again.
  if (!ex.replayable()) return false;
  if (!ex.retryToken) {
    // maxRetries bounds retries in flight across the cluster.
    if (auto t = upstream::acquire(ex.limits, upstream::ClusterLimits::kRetries)) {
      ex.retryToken = std::move(*t);
    } else {
      ex.limits->rqRetryOverflow.fetch_add(1, std::memory_order_relaxed);
      worker_.stats().inc(Counter::UpstreamRqRetryOverflow);
      return false;
    }
  }
  ex.retried = true;
  worker_.stats().inc(Counter::UpstreamRqRetry);
  worker_.timers().schedule(retryTimer_, ex.retry->backoffNs());
  return true;
}

void DownstreamConn::onRetryTimer() {
  if (ex_ && !up_) dispatch();
}

void DownstreamConn::onPoolSlot() {
  if (!ex_ || up_ || !ex_->pendingToken) return;
  wokenFirst_ = true;
  dispatch();
  wokenFirst_ = false;
}

void DownstreamConn::onPoolConnection(UpstreamConn* c) {
  Exchange& ex = *ex_;
  ex.ep = &c->endpointState();  // the endpoint this request chose
  up_ = c;
  up_->attach(this);
  beginAttempt();
  sendUpstreamHead();
}

void DownstreamConn::waitForConnection(EndpointState& wanted) {
  Exchange& ex = *ex_;
  ex.limits->cxOverflow.fetch_add(1, std::memory_order_relaxed);
  worker_.stats().inc(Counter::UpstreamCxOverflow);
  if (!ex.pendingToken) {
    auto pending = upstream::acquire(ex.limits, upstream::ClusterLimits::kPending);
    if (!pending) {
      overflow(false);
      return;
    }
    ex.pendingToken = std::move(*pending);
  }
  worker_.pool().wait(*this, ex.limits, wanted, wokenFirst_);
}

// A connection-pool circuit breaker tripped: answer at once, as Envoy does.
void DownstreamConn::overflow(bool) {
  Exchange& ex = *ex_;
  if (ex.limits) ex.limits->rqPendingOverflow.fetch_add(1, std::memory_order_relaxed);
  worker_.stats().inc(Counter::UpstreamRqPendingOverflow);
  ex.pendingToken.reset();
  if (!ex.reqDone) ex.keepAlive = false;
  localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", "UO",
             "x-envoy-overloaded: true\r\n");
}

void DownstreamConn::onRouteTimeout() {
  if (!ex_) return;
  worker_.stats().inc(Counter::UpstreamRqTimeout);
  if (ex_->respStarted) {
    // The route timeout covers the whole response: past it, a response
    // still streaming is cut off.
    cutResponse("UT");
    return;
  }
  if (up_ && !ex_->respHeadDone) reportOutcome(upstream::Outcome::LocalOriginFailure);  // the host never answered
  releaseUpstream(false);
  if (!ex_->reqDone) ex_->keepAlive = false;
  localReply(504, "upstream request timeout", "UT");
}

void DownstreamConn::onPerTryTimeout() {
  if (!ex_) return;
  worker_.stats().inc(Counter::UpstreamRqPerTryTimeout);
  if (ex_->respStarted) {
    cutResponse("UT");
    return;
  }
  reportOutcome(upstream::Outcome::LocalOriginFailure);
  releaseUpstream(false);
  failAttempt(route::AttemptFailure::PerTryTimeout, 504, "upstream request timeout", "UT");
}

void DownstreamConn::onFaultDelayDone() {
  if (ex_) continueRequest();
}

void DownstreamConn::reportOutcome(upstream::Outcome o) {
  Exchange* ex = ex_.get();
  if (ex && ex->health && ex->endpoint >= 0)
    ex->health->report(size_t(ex->endpoint), o, worker_.clock().nowNs());
}

void DownstreamConn::releaseUpstream(bool reusable) {
  Exchange* ex = ex_.get();
  if (ex && ex->ep) {
    ex->ep->decActive();
    ex->ep = nullptr;
  }
  if (!up_) return;
  UpstreamConn* up = up_;
  up_ = nullptr;
  if (reusable && !draining_) {
    up->release();
  } else {
    up->detach();
    up->close();
  }
}

}  // namespace sluice::proxy
