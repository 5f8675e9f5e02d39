#include "proxy/tls_transport.h"

#include <arpa/inet.h>

#include <cstdio>

#include "core/clock.h"
#include "proxy/worker.h"
#include "route/table.h"
#include "tls/credential_store.h"

namespace sluice::proxy {

using stats::Counter;

namespace {

// Handshake failures are logged at most once per interval per worker, with
// how many were left unlogged since: a scanner cannot flood the log.
constexpr uint64_t kLogIntervalNs = 10'000'000'000ull;

}  // namespace

void logTlsFailure(Worker& worker, const std::string& peer, std::string_view reason) {
  thread_local uint64_t lastNs = 0;
  thread_local uint64_t suppressed = 0;
  const uint64_t now = worker.clock().nowNs();
  if (lastNs != 0 && now - lastNs < kLogIntervalNs) {
    ++suppressed;
    return;
  }
  fprintf(stderr, "sluiced: tls: %s: %.*s", peer.c_str(), int(reason.size()), reason.data());
  if (suppressed > 0) fprintf(stderr, " (and %llu more failures since the last line)", (unsigned long long)suppressed);
  fputc('\n', stderr);
  lastNs = now;
  suppressed = 0;
}

namespace {

Counter counterFor(tls::Failure f) {
  switch (f) {
    case tls::Failure::kNoCertificate: return Counter::SslNoCertificate;
    case tls::Failure::kVerifySan: return Counter::SslFailVerifySan;
    case tls::Failure::kVerify: return Counter::SslFailVerifyError;
    case tls::Failure::kConnection: return Counter::SslConnectionError;
    default: return Counter::SslHandshakeError;
  }
}

}  // namespace

TlsServerTransport::TlsServerTransport(Worker& worker, std::shared_ptr<const tls::ServerContext> ctx,
                                       std::string sni, std::string peer)
    : worker_(worker), session_(std::move(ctx)), sni_(std::move(sni)), peer_(std::move(peer)) {}

TlsServerTransport::~TlsServerTransport() = default;

bool TlsServerTransport::fail(std::string_view reason) {
  failed_ = true;
  held_.clear();
  logTlsFailure(worker_, peer_, reason);
  return false;
}

bool TlsServerTransport::onReceived(std::string_view received, std::string& plain, std::string& wire) {
  if (failed_) return false;
  const bool wasEstablished = session_.established();
  if (!session_.receive(received, plain, wire)) {
    worker_.stats().inc(counterFor(session_.failure()));
    return fail(std::string(wasEstablished ? "" : "handshake: ") + session_.failureDetail() +
                (sni_.empty() ? "" : " (SNI " + sni_ + ")"));
  }
  if (!wasEstablished && session_.established()) {
    worker_.stats().inc(Counter::SslHandshake);
    if (!held_.empty()) {
      session_.send(held_, wire);
      held_.clear();
    }
  }
  return true;
}

void TlsServerTransport::onWrite(std::string_view plain, std::string& wire) {
  if (failed_) return;
  if (!established()) {
    held_.append(plain);
    return;
  }
  session_.send(plain, wire);
}

TlsClientTransport::TlsClientTransport(Worker& worker, std::shared_ptr<const tls::ClientContext> ctx,
                                       std::shared_ptr<tls::ResumptionSlot> resume, std::string peer)
    : worker_(worker), session_(std::move(ctx), std::move(resume)), peer_(std::move(peer)) {}

void TlsClientTransport::onStart(std::string& wire) { session_.start(wire); }

bool TlsClientTransport::onReceived(std::string_view received, std::string& plain, std::string& wire) {
  if (failed_) return false;
  const bool wasEstablished = session_.established();
  if (!session_.receive(received, plain, wire)) {
    failed_ = true;
    held_.clear();
    if (!wasEstablished) worker_.stats().inc(Counter::UpstreamSslHandshakeError);
    logTlsFailure(worker_, peer_, std::string("upstream ") + (wasEstablished ? "" : "handshake: ") +
                                   session_.failureDetail());
    return false;
  }
  if (!wasEstablished && session_.established()) {
    worker_.stats().inc(Counter::UpstreamSslHandshake);
    if (session_.resumed()) worker_.stats().inc(Counter::UpstreamSslSessionReused);
    if (!held_.empty()) {
      session_.send(held_, wire);
      held_.clear();
    }
  }
  return true;
}

void TlsClientTransport::onWrite(std::string_view plain, std::string& wire) {
  if (failed_) return;
  if (!session_.established()) {
    held_.append(plain);
    return;
  }
  session_.send(plain, wire);
}

void TlsServerTransport::noteHandshakeTimeout() {
  if (established() || failed_) return;
  worker_.stats().inc(Counter::SslHandshakeTimeout);
  fail("handshake timeout");
}

std::unique_ptr<TlsClientTransport> makeClientTls(Worker& worker, const route::UpstreamSettings& settings,
                                                  EndpointState& state, const sockaddr_in& addr) {
  std::shared_ptr<const tls::ClientContext> ctx = settings.tlsCredentials ? settings.tlsCredentials->current() : nullptr;
  if (!ctx) return nullptr;
  if (!state.tlsSession || state.tlsSessionContext != ctx.get()) {
    state.tlsSession = std::make_shared<tls::ResumptionSlot>();
    state.tlsSessionContext = ctx.get();
  }
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
  return std::make_unique<TlsClientTransport>(worker, std::move(ctx), state.tlsSession,
                                              std::string(ip) + ":" + std::to_string(ntohs(addr.sin_port)));
}

}  // namespace sluice::proxy
