#include "upstream/outlier.h"

#include <algorithm>
#include <optional>

namespace sluice::upstream {
namespace {
// Envoy's cap on one ejection (max_ejection_time's default), unless the
// base time alone is longer.
constexpr uint64_t kMaxEjectionNs = 300'000'000'000ull;
}  // namespace

OutlierConfig OutlierConfig::from(const config::OutlierDetection& od) {
  OutlierConfig c;
  if (od.consecutive5xxErrors) c.consecutive5xx = *od.consecutive5xxErrors;
  if (od.consecutiveGatewayErrors) c.consecutiveGateway = *od.consecutiveGatewayErrors;
  if (od.consecutiveLocalOriginFailures) c.consecutiveLocalOrigin = *od.consecutiveLocalOriginFailures;
  if (od.splitExternalLocalOriginErrors) c.splitLocalOrigin = *od.splitExternalLocalOriginErrors;
  if (od.interval && od.interval->count() > 0) c.intervalNs = uint64_t(od.interval->count());
  if (od.baseEjectionTime && od.baseEjectionTime->count() > 0)
    c.baseEjectionNs = uint64_t(od.baseEjectionTime->count());
  if (od.maxEjectionPercent) c.maxEjectionPercent = uint32_t(std::clamp(*od.maxEjectionPercent, 0, 100));
  if (od.minHealthPercent) c.minHealthPercent = uint32_t(std::clamp(*od.minHealthPercent, 0, 100));
  return c;
}

Outcome outcomeOf(int status) {
  if (status == 502 || status == 503 || status == 504) return Outcome::GatewayError;
  if (status >= 500) return Outcome::Error5xx;
  return Outcome::Success;
}

ClusterHealth::ClusterHealth(std::string name, OutlierConfig cfg, std::vector<route::Endpoint> endpoints)
    : name_(std::move(name)),
      cfg_(cfg),
      endpoints_(std::move(endpoints)),
      eps_(std::make_unique<Ep[]>(endpoints_.size())) {}

void ClusterHealth::report(size_t ep, Outcome o, uint64_t nowNs) {
  if (ep >= endpoints_.size()) return;
  Ep& e = eps_[ep];
  auto bump = [](std::atomic<uint32_t>& c) { return c.fetch_add(1, std::memory_order_relaxed) + 1; };
  auto reset = [](std::atomic<uint32_t>& c) {
    if (c.load(std::memory_order_relaxed) != 0) c.store(0, std::memory_order_relaxed);
  };
  // Without the split, a local-origin failure is what Envoy makes of it: a
  // 503, so a gateway error.
  if (o == Outcome::LocalOriginFailure && !cfg_.splitLocalOrigin) o = Outcome::GatewayError;
  bool trip = false;
  switch (o) {
    case Outcome::Success:
      reset(e.consecutive5xx);
      reset(e.consecutiveGateway);
      reset(e.consecutiveLocal);
      return;
    case Outcome::Error5xx:
      reset(e.consecutiveGateway);
      trip = cfg_.consecutive5xx && bump(e.consecutive5xx) >= cfg_.consecutive5xx;
      break;
    case Outcome::GatewayError: {
      // A gateway error is a 5xx too: it counts towards both.
      bool by5xx = cfg_.consecutive5xx && bump(e.consecutive5xx) >= cfg_.consecutive5xx;
      bool byGw = cfg_.consecutiveGateway && bump(e.consecutiveGateway) >= cfg_.consecutiveGateway;
      trip = by5xx || byGw;
      break;
    }
    case Outcome::LocalOriginFailure:
      trip = cfg_.consecutiveLocalOrigin && bump(e.consecutiveLocal) >= cfg_.consecutiveLocalOrigin;
      break;
  }
  if (trip && !e.ejected.load(std::memory_order_relaxed)) eject(ep, nowNs);
}

void ClusterHealth::eject(size_t ep, uint64_t nowNs) {
  std::lock_guard lock(ejectMu_);
  Ep& e = eps_[ep];
  if (e.ejected.load(std::memory_order_relaxed)) return;
  uint32_t out = ejected_.load(std::memory_order_relaxed);
  // One host may always go; more only within maxEjectionPercent.
  if (out > 0 && uint64_t(out + 1) * 100 > uint64_t(cfg_.maxEjectionPercent) * endpoints_.size()) return;
  uint32_t k = e.ejections.fetch_add(1, std::memory_order_relaxed) + 1;
  uint64_t cap = std::max(kMaxEjectionNs, cfg_.baseEjectionNs);
  uint64_t dur = std::min(cap, cfg_.baseEjectionNs * k);
  e.until.store(nowNs + dur, std::memory_order_relaxed);
  e.consecutive5xx.store(0, std::memory_order_relaxed);
  e.consecutiveGateway.store(0, std::memory_order_relaxed);
  e.consecutiveLocal.store(0, std::memory_order_relaxed);
  e.ejected.store(true, std::memory_order_release);
  ejected_.fetch_add(1, std::memory_order_relaxed);
  ejectionsTotal_.fetch_add(1, std::memory_order_relaxed);
  if (hook_) hook_(endpoints_[ep], true);
}

bool ClusterHealth::panic() const {
  if (cfg_.minHealthPercent == 0 || endpoints_.empty()) return false;
  uint64_t healthy = endpoints_.size() - ejected_.load(std::memory_order_relaxed);
  return healthy * 100 < uint64_t(cfg_.minHealthPercent) * endpoints_.size();
}

bool ClusterHealth::skip(size_t ep) const {
  if (ep >= endpoints_.size() || !eps_[ep].ejected.load(std::memory_order_acquire)) return false;
  return !panic();
}

void ClusterHealth::sweep(uint64_t nowNs) {
  if (nowNs < nextSweepNs_) return;
  nextSweepNs_ = nowNs + cfg_.intervalNs;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    Ep& e = eps_[i];
    if (!e.ejected.load(std::memory_order_acquire) || e.until.load(std::memory_order_relaxed) > nowNs)
      continue;
    std::lock_guard lock(ejectMu_);
    e.ejected.store(false, std::memory_order_release);
    ejected_.fetch_sub(1, std::memory_order_relaxed);
    if (hook_) hook_(endpoints_[i], false);
  }
}

ClusterHealth::EndpointView ClusterHealth::view(size_t ep) const {
  if (ep >= endpoints_.size()) return {};
  const Ep& e = eps_[ep];
  return {e.ejected.load(std::memory_order_relaxed), e.ejections.load(std::memory_order_relaxed),
          e.until.load(std::memory_order_relaxed)};
}

namespace {
bool sameEndpoints(const std::vector<route::Endpoint>& a, const std::vector<route::Endpoint>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].key != b[i].key) return false;
  return true;
}
}  // namespace

std::shared_ptr<const std::vector<std::shared_ptr<ClusterHealth>>> HealthRegistry::adopt(
    const route::Snapshot& snap, const ClusterHealth::Hook& hook) {
  auto settings = [](const route::Cluster& c) -> std::optional<OutlierConfig> {
    if (!c.policy || !c.policy->outlierDetection) return std::nullopt;
    return OutlierConfig::from(*c.policy->outlierDetection);
  };
  return reg_.adopt(
      snap,
      [&](const route::Cluster& c) -> std::shared_ptr<ClusterHealth> {
        auto cfg = settings(c);
        if (!cfg) return nullptr;
        auto h = std::make_shared<ClusterHealth>(c.name, *cfg, c.endpoints);
        h->setHook(hook);
        return h;
      },
      [&](const ClusterHealth& h, const route::Cluster& c) {
        auto cfg = settings(c);
        return cfg && h.config() == *cfg && sameEndpoints(h.endpoints(), c.endpoints);
      });
}

void HealthRegistry::sweep(uint64_t nowNs) {
  for (const auto& h : live()) h->sweep(nowNs);
}

}  // namespace sluice::upstream
