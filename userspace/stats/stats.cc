#include "stats/stats.h"

#include <algorithm>

#include <fmt/format.h>

#include <map>
#include <tuple>

namespace sluice::stats {

const char* counterName(Counter c) {
  switch (c) {
    case Counter::DownstreamCxTotal: return "downstream_cx_total";
    case Counter::DownstreamCxActive: return "downstream_cx_active";
    case Counter::DownstreamRqTotal: return "downstream_rq_total";
    case Counter::DownstreamRq1xx: return "downstream_rq_1xx";
    case Counter::DownstreamRq2xx: return "downstream_rq_2xx";
    case Counter::DownstreamRq3xx: return "downstream_rq_3xx";
    case Counter::DownstreamRq4xx: return "downstream_rq_4xx";
    case Counter::DownstreamRq5xx: return "downstream_rq_5xx";
    case Counter::DownstreamRqBad: return "downstream_rq_bad";
    case Counter::DownstreamRqIdleTimeout: return "downstream_rq_idle_timeout";
    case Counter::DownstreamRqHeaderTimeout: return "downstream_rq_header_timeout";
    case Counter::DownstreamCxOverflow: return "downstream_cx_overflow";
    case Counter::DownstreamRqOverload: return "downstream_rq_overload";
    case Counter::DownstreamCxOverloadShed: return "downstream_cx_overload_shed";
    case Counter::DownstreamCxDestroyRemoteActiveRq: return "downstream_cx_destroy_remote_active_rq";
    case Counter::DownstreamCxAcceptError: return "downstream_cx_accept_error";
    case Counter::UpstreamCxTotal: return "upstream_cx_total";
    case Counter::UpstreamCxActive: return "upstream_cx_active";
    case Counter::UpstreamCxConnectFail: return "upstream_cx_connect_fail";
    case Counter::UpstreamCxConnectTimeout: return "upstream_cx_connect_timeout";
    case Counter::UpstreamCxReused: return "upstream_cx_reused";
    case Counter::UpstreamRqTotal: return "upstream_rq_total";
    case Counter::UpstreamRqTimeout: return "upstream_rq_timeout";
    case Counter::UpstreamRqRetry: return "upstream_rq_retry";
    case Counter::UpstreamRqResetBeforeResponse: return "upstream_rq_reset_before_response";
    case Counter::NoRoute: return "no_route";
    case Counter::NoHealthyUpstream: return "upstream_rq_no_healthy_upstream";
    case Counter::RecvBufferExhausted: return "recv_buffer_exhausted";
    case Counter::LoopIterations: return "worker_loop_iterations";
    case Counter::CompletionsRecv: return "worker_completions_recv";
    case Counter::CompletionsSend: return "worker_completions_send";
    case Counter::RecvRearm: return "worker_recv_rearm";
    case Counter::TcpCxTotal: return "tcp_cx_total";
    case Counter::TcpCxSpliced: return "tcp_cx_spliced";
    case Counter::TcpSpliceHeld: return "tcp_splice_held";
    case Counter::TcpBytesCopied: return "tcp_bytes_copied";
    case Counter::TcpDrainTimeout: return "tcp_drain_timeout";
    case Counter::TcpCxError: return "tcp_cx_error";
    case Counter::TcpIdleTimeout: return "tcp_idle_timeout";
    case Counter::UpstreamCxOverflow: return "upstream_cx_overflow";
    case Counter::UpstreamRqPendingOverflow: return "upstream_rq_pending_overflow";
    case Counter::UpstreamRqRetryOverflow: return "upstream_rq_retry_overflow";
    case Counter::UpstreamRqPerTryTimeout: return "upstream_rq_per_try_timeout";
    case Counter::UpstreamRqRetryLimitExceeded: return "upstream_rq_retry_limit_exceeded";
    case Counter::UpstreamRqRetrySuccess: return "upstream_rq_retry_success";
    case Counter::RetryOrShadowAbandoned: return "retry_or_shadow_abandoned";
    case Counter::ShadowRqTotal: return "shadow_rq_total";
    case Counter::ShadowRqShed: return "shadow_rq_shed";
    case Counter::ShadowRqFailed: return "shadow_rq_failed";
    case Counter::FaultDelaysInjected: return "fault_delays_injected";
    case Counter::FaultAbortsInjected: return "fault_aborts_injected";
    case Counter::CorsOriginValid: return "cors_origin_valid";
    case Counter::CorsOriginInvalid: return "cors_origin_invalid";
    case Counter::SslHandshake: return "ssl.handshake";
    case Counter::SslHandshakeError: return "ssl.handshake_error";
    case Counter::SslNoCertificate: return "ssl.no_certificate";
    case Counter::SslFailVerifySan: return "ssl.fail_verify_san";
    case Counter::SslFailVerifyError: return "ssl.fail_verify_error";
    case Counter::SslConnectionError: return "ssl.connection_error";
    case Counter::SslHandshakeTimeout: return "ssl.handshake_timeout";
    case Counter::ListenerNoFilterChainMatch: return "listener.no_filter_chain_match";
    case Counter::UpstreamSslHandshake: return "upstream_ssl.handshake";
    case Counter::UpstreamSslSessionReused: return "upstream_ssl.session_reused";
    case Counter::UpstreamSslHandshakeError: return "upstream_ssl.handshake_error";
    case Counter::DownstreamCxHttp2Total: return "downstream_cx_http2_total";
    case Counter::DownstreamCxHttp2Active: return "downstream_cx_http2_active";
    case Counter::Http2RxReset: return "http2.rx_reset";
    case Counter::Http2TxReset: return "http2.tx_reset";
    case Counter::Http2PrematureResets: return "http2.premature_resets";
    case Counter::Http2HeaderOverflow: return "http2.header_overflow";
    case Counter::Http2InboundControlFlood: return "http2.inbound_control_flood";
    case Counter::Http2ContinuationFlood: return "http2.continuation_flood";
    case Counter::Http2ProtocolError: return "http2.protocol_error";
    case Counter::Http2RxMessagingError: return "http2.rx_messaging_error";
    case Counter::Http2GoawaySent: return "http2.goaway_sent";
    case Counter::UpstreamCxHttp2Total: return "upstream_cx_http2_total";
    case Counter::UpstreamHttp2KeepaliveTimeout: return "upstream_http2.keepalive_timeout";
    case Counter::UpstreamCxProtocolError: return "upstream_cx_protocol_error";
    case Counter::RateLimitOk: return "ratelimit.ok";
    case Counter::RateLimitOverLimit: return "ratelimit.over_limit";
    case Counter::RateLimitError: return "ratelimit.error";
    case Counter::RateLimitFailureModeAllowed: return "ratelimit.failure_mode_allowed";
    case Counter::RedisCxTotal: return "ratelimit.redis_cx_total";
    case Counter::RedisCxConnectFail: return "ratelimit.redis_cx_connect_fail";
    case Counter::RedisCxError: return "ratelimit.redis_cx_error";
    case Counter::kCount: break;
  }
  return "unknown";
}

size_t RequestKeyHash::operator()(const RequestKeyView& k) const {
  // The cluster name already implies service and version.
  std::hash<std::string_view> h;
  size_t v = h(k.cluster);
  v = v * 31 + h(k.responseFlags);
  v = v * 31 + k.responseCode;
  v = v * 31 + size_t(k.grpcStatus + 2) * (k.grpc ? 1 : 0);
  return v;
}

size_t RequestKeyHash::operator()(const RequestKey& k) const {
  return (*this)(RequestKeyView{k.destinationService, k.destinationVersion, k.cluster, k.responseCode,
                                k.responseFlags, k.grpc, k.grpcStatus});
}

void StatsShard::recordRequest(const RequestKeyView& key, uint64_t durationUs, uint64_t reqBytes,
                               uint64_t respBytes, uint64_t reqMessages, uint64_t respMessages) {
  auto it = series_.find(key);  // only this thread inserts: a lock-free read
  if (it == series_.end()) {
    RequestKey owned{std::string(key.destinationService), std::string(key.destinationVersion),
                     std::string(key.cluster), key.responseCode, std::string(key.responseFlags), key.grpc,
                     key.grpcStatus};
    std::lock_guard lock(insertMu_);
    it = series_.emplace(std::move(owned), std::make_unique<RequestSeries>()).first;
  }
  RequestSeries& s = *it->second;
  // Single writer: plain load/store pairs, as in inc().
  auto add = [](std::atomic<uint64_t>& a, uint64_t n) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  };
  add(s.count, 1);
  add(s.durationSumUs, durationUs);
  add(s.requestBytes, reqBytes);
  add(s.responseBytes, respBytes);
  if (reqMessages) add(s.requestMessages, reqMessages);
  if (respMessages) add(s.responseMessages, respMessages);
  double ms = double(durationUs) / 1000.0;
  for (size_t i = 0; i < kDurationBucketsMs.size(); ++i) {
    if (ms <= kDurationBucketsMs[i]) {
      add(s.buckets[i], 1);
      break;  // buckets are stored non-cumulative; rendering accumulates
    }
  }
}

std::vector<StatsShard::SeriesCopy> StatsShard::series() const {
  std::lock_guard lock(insertMu_);
  std::vector<SeriesCopy> out;
  out.reserve(series_.size());
  for (const auto& [k, s] : series_) {
    SeriesCopy c{k,
                 s->count.load(),
                 s->durationSumUs.load(),
                 s->requestBytes.load(),
                 s->responseBytes.load(),
                 s->requestMessages.load(),
                 s->responseMessages.load(),
                 {}};
    for (size_t i = 0; i < c.buckets.size(); ++i) c.buckets[i] = s->buckets[i].load();
    out.push_back(std::move(c));
  }
  return out;
}

uint64_t Registry::total(Counter c) const {
  uint64_t v = 0;
  for (const StatsShard* s : shards_) v += s->get(c);
  return v;
}

namespace {

using MergedKey = std::tuple<std::string, std::string, std::string, uint16_t, std::string, bool, int16_t>;

std::map<MergedKey, StatsShard::SeriesCopy> merge(const std::vector<const StatsShard*>& shards) {
  std::map<MergedKey, StatsShard::SeriesCopy> merged;
  for (const StatsShard* shard : shards) {
    for (auto& c : shard->series()) {
      MergedKey mk{c.key.destinationService, c.key.destinationVersion, c.key.cluster, c.key.responseCode,
                   c.key.responseFlags,         c.key.grpc,               c.key.grpcStatus};
      auto [it, fresh] = merged.emplace(mk, c);
      if (fresh) continue;
      auto& m = it->second;
      m.count += c.count;
      m.durationSumUs += c.durationSumUs;
      m.requestBytes += c.requestBytes;
      m.responseBytes += c.responseBytes;
      m.requestMessages += c.requestMessages;
      m.responseMessages += c.responseMessages;
      for (size_t i = 0; i < m.buckets.size(); ++i) m.buckets[i] += c.buckets[i];
    }
  }
  return merged;
}

// Splits "reviews.default.svc.cluster.local" into name and namespace as
// Istio's destination_service_name / destination_service_namespace do.
std::pair<std::string, std::string> serviceNameNs(const std::string& fqdn) {
  auto dot = fqdn.find('.');
  if (dot == std::string::npos || fqdn.find(".svc.") == std::string::npos) return {fqdn, "unknown"};
  auto dot2 = fqdn.find('.', dot + 1);
  return {fqdn.substr(0, dot), fqdn.substr(dot + 1, dot2 - dot - 1)};
}

// A Prometheus label value: backslash, double quote and newline escaped, as
// the text exposition format requires (a value from configuration must not
// end its label or its line).
std::string lv(std::string_view v) {
  if (v.find_first_of("\\\"\n") == std::string_view::npos) return std::string(v);
  std::string out;
  for (char ch : v) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '"') out += "\\\"";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
  return out;
}

std::string labels(const StatsShard::SeriesCopy& c) {
  auto [name, ns] = serviceNameNs(c.key.destinationService);
  // grpc_response_status is on gRPC series only, as Istio has it.
  std::string grpc;
  if (c.key.grpc)
    grpc = fmt::format(",grpc_response_status=\"{}\"", c.key.grpcStatus >= 0 ? std::to_string(c.key.grpcStatus) : "");
  return fmt::format(
      "reporter=\"source\",request_protocol=\"{}\",response_code=\"{}\",response_flags=\"{}\","
      "destination_service=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\","
      "destination_version=\"{}\",destination_cluster=\"{}\"{}",
      c.key.grpc ? "grpc" : "http", c.key.responseCode, lv(c.key.responseFlags), lv(c.key.destinationService),
      lv(name), lv(ns), lv(c.key.destinationVersion), lv(c.key.cluster), grpc);
}

}  // namespace

std::string renderTcpPrometheus(const std::vector<TcpServiceStats>& services) {
  std::string out;
  auto family = [&](const char* name, uint64_t TcpServiceStats::*field) {
    out += fmt::format("# TYPE {} counter\n", name);
    for (const TcpServiceStats& s : services) {
      auto [svc, ns] = serviceNameNs(s.service);
      out += fmt::format(
          "{}{{reporter=\"source\",request_protocol=\"tcp\",destination_service=\"{}\","
          "destination_service_name=\"{}\",destination_service_namespace=\"{}\","
          "destination_port=\"{}\"}} {}\n",
          name, lv(s.service), lv(svc), lv(ns), s.port, s.*field);
    }
  };
  family("istio_tcp_connections_opened_total", &TcpServiceStats::opened);
  family("istio_tcp_connections_closed_total", &TcpServiceStats::closed);
  family("istio_tcp_sent_bytes_total", &TcpServiceStats::sentBytes);
  family("istio_tcp_received_bytes_total", &TcpServiceStats::receivedBytes);
  return out;
}

std::string renderOutlierPrometheus(const std::vector<OutlierStats>& clusters) {
  std::string out = "# TYPE envoy_cluster_outlier_detection_ejections_active gauge\n";
  for (const auto& c : clusters)
    out += fmt::format("envoy_cluster_outlier_detection_ejections_active{{cluster_name=\"{}\"}} {}\n",
                       lv(c.cluster), c.ejectedNow);
  out += "# TYPE envoy_cluster_outlier_detection_ejections_enforced_total counter\n";
  for (const auto& c : clusters)
    out += fmt::format("envoy_cluster_outlier_detection_ejections_enforced_total{{cluster_name=\"{}\"}} {}\n",
                       lv(c.cluster), c.ejectionsTotal);
  return out;
}

std::string renderOutlierText(const std::vector<OutlierStats>& clusters) {
  std::string out;
  for (const auto& c : clusters) {
    out += fmt::format("cluster.{}.outlier_detection.ejections_active: {}\n", c.cluster, c.ejectedNow);
    out += fmt::format("cluster.{}.outlier_detection.ejections_enforced_total: {}\n", c.cluster,
                       c.ejectionsTotal);
  }
  return out;
}

std::string renderCircuitPrometheus(const std::vector<CircuitStats>& clusters) {
  std::string out;
  auto family = [&](const char* name, const char* type, uint64_t CircuitStats::*field) {
    out += fmt::format("# TYPE envoy_cluster_{} {}\n", name, type);
    for (const auto& c : clusters)
      out += fmt::format("envoy_cluster_{}{{cluster_name=\"{}\"}} {}\n", name, lv(c.cluster), c.*field);
  };
  family("upstream_cx_overflow", "counter", &CircuitStats::cxOverflow);
  family("upstream_rq_pending_overflow", "counter", &CircuitStats::rqPendingOverflow);
  family("upstream_rq_retry_overflow", "counter", &CircuitStats::rqRetryOverflow);
  family("upstream_cx_active", "gauge", &CircuitStats::connections);
  family("upstream_rq_pending_active", "gauge", &CircuitStats::pending);
  family("upstream_rq_active", "gauge", &CircuitStats::requests);
  return out;
}

std::string renderCircuitText(const std::vector<CircuitStats>& clusters) {
  std::string out;
  for (const auto& c : clusters) {
    out += fmt::format("cluster.{}.upstream_cx_overflow: {}\n", c.cluster, c.cxOverflow);
    out += fmt::format("cluster.{}.upstream_rq_pending_overflow: {}\n", c.cluster, c.rqPendingOverflow);
    out += fmt::format("cluster.{}.upstream_rq_retry_overflow: {}\n", c.cluster, c.rqRetryOverflow);
    out += fmt::format("cluster.{}.circuit_breakers.cx_open: {}\n", c.cluster, c.connections);
    out += fmt::format("cluster.{}.circuit_breakers.rq_pending_open: {}\n", c.cluster, c.pending);
    out += fmt::format("cluster.{}.circuit_breakers.rq_open: {}\n", c.cluster, c.requests);
  }
  return out;
}

std::string Registry::renderText() const {
  std::string out;
  for (size_t i = 0; i < size_t(Counter::kCount); ++i) {
    out += fmt::format("{}: {}\n", counterName(Counter(i)), total(Counter(i)));
  }
  out += fmt::format("config_reload_ok: {}\nconfig_reload_fail: {}\n", configReloadOk.load(),
                     configReloadFail.load());
  for (const auto& [k, c] : merge(shards_)) {
    out += fmt::format("cluster.{}.upstream_rq_{}: {}\n", c.key.cluster.empty() ? "none" : c.key.cluster,
                       c.key.responseCode, c.count);
  }
  return out;
}

std::string Registry::renderPrometheus() const {
  std::string out;
  auto merged = merge(shards_);
  out += "# TYPE istio_requests_total counter\n";
  for (const auto& [k, c] : merged) out += fmt::format("istio_requests_total{{{}}} {}\n", labels(c), c.count);
  out += "# TYPE istio_request_duration_milliseconds histogram\n";
  for (const auto& [k, c] : merged) {
    std::string l = labels(c);
    uint64_t cum = 0;
    for (size_t i = 0; i < c.buckets.size(); ++i) {
      cum += c.buckets[i];
      out += fmt::format("istio_request_duration_milliseconds_bucket{{{},le=\"{}\"}} {}\n", l,
                         kDurationBucketsMs[i], cum);
    }
    out += fmt::format("istio_request_duration_milliseconds_bucket{{{},le=\"+Inf\"}} {}\n", l, c.count);
    out += fmt::format("istio_request_duration_milliseconds_sum{{{}}} {:.3f}\n", l,
                       double(c.durationSumUs) / 1000.0);
    out += fmt::format("istio_request_duration_milliseconds_count{{{}}} {}\n", l, c.count);
  }
  out += "# TYPE istio_request_bytes_sum counter\n";
  for (const auto& [k, c] : merged) out += fmt::format("istio_request_bytes_sum{{{}}} {}\n", labels(c), c.requestBytes);
  out += "# TYPE istio_response_bytes_sum counter\n";
  for (const auto& [k, c] : merged) out += fmt::format("istio_response_bytes_sum{{{}}} {}\n", labels(c), c.responseBytes);
  // gRPC messages each way, for gRPC series.
  out += "# TYPE istio_request_messages_total counter\n";
  for (const auto& [k, c] : merged) {
    if (c.key.grpc) out += fmt::format("istio_request_messages_total{{{}}} {}\n", labels(c), c.requestMessages);
  }
  out += "# TYPE istio_response_messages_total counter\n";
  for (const auto& [k, c] : merged) {
    if (c.key.grpc) out += fmt::format("istio_response_messages_total{{{}}} {}\n", labels(c), c.responseMessages);
  }
  for (size_t i = 0; i < size_t(Counter::kCount); ++i) {
    // Envoy's dotted names ("ssl.handshake") become Prometheus names.
    std::string name = counterName(Counter(i));
    std::replace(name.begin(), name.end(), '.', '_');
    out += fmt::format("# TYPE sluice_{} {}\nsluice_{} {}\n", name,
                       (Counter(i) == Counter::DownstreamCxActive || Counter(i) == Counter::UpstreamCxActive ||
                        Counter(i) == Counter::DownstreamCxHttp2Active)
                           ? "gauge" : "counter",
                       name, total(Counter(i)));
  }
  out += fmt::format("# TYPE sluice_config_reload_ok counter\nsluice_config_reload_ok {}\n", configReloadOk.load());
  out += fmt::format("# TYPE sluice_config_reload_fail counter\nsluice_config_reload_fail {}\n", configReloadFail.load());
  return out;
}

}  // namespace sluice::stats
