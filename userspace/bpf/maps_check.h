// Compile-time proof that the C++ view of include/sluice/maps.h is the layout
// the BPF programs were built with. If one of these fires, a field was
// reordered or resized in maps.h: fix maps.h, never this file alone.
#pragma once

#include <cstddef>

#include <sluice/maps.h>

namespace sluice::bpf::layout {

static_assert(SLUICE_CNT_MAX == 30, "counter enum changed: update userspace readers");
static_assert(sizeof(sluice_counter) == 4);

static_assert(sizeof(sluice_addr_key) == 8);
static_assert(offsetof(sluice_addr_key, addr) == 0);
static_assert(offsetof(sluice_addr_key, port) == 4);
static_assert(offsetof(sluice_addr_key, _pad) == 6);

static_assert(sizeof(sluice_conn_stats) == 40);
static_assert(offsetof(sluice_conn_stats, opened) == 0);
static_assert(offsetof(sluice_conn_stats, closed) == 8);
static_assert(offsetof(sluice_conn_stats, active) == 16);
static_assert(offsetof(sluice_conn_stats, bytes_sent) == 24);
static_assert(offsetof(sluice_conn_stats, bytes_received) == 32);
static_assert(alignof(sluice_conn_stats) == 8);

static_assert(sizeof(sluice_tuple4) == 12);
static_assert(offsetof(sluice_tuple4, src_addr) == 0);
static_assert(offsetof(sluice_tuple4, dst_addr) == 4);
static_assert(offsetof(sluice_tuple4, src_port) == 8);
static_assert(offsetof(sluice_tuple4, dst_port) == 10);

static_assert(sizeof(sluice_config) == 24);
static_assert(offsetof(sluice_config, proxy_addr) == 0);
static_assert(offsetof(sluice_config, proxy_port) == 4);
static_assert(offsetof(sluice_config, proxy_cgroup_id) == 8);
static_assert(offsetof(sluice_config, flags) == 16);

static_assert(sizeof(sluice_enabled) == 8);
static_assert(sizeof(sluice_service) == 8);
static_assert(sizeof(sluice_endpoint) == 8);

static_assert(sizeof(sluice_l4pair) == 40);
static_assert(offsetof(sluice_l4pair, peer) == 0);
static_assert(offsetof(sluice_l4pair, redirected) == 8);
static_assert(offsetof(sluice_l4pair, kept) == 16);
static_assert(offsetof(sluice_l4pair, held) == 24);
static_assert(offsetof(sluice_l4pair, next_seq) == 28);
static_assert(offsetof(sluice_l4pair, seq_known) == 32);
static_assert(sizeof(sluice_l4copy) == 8);
static_assert(offsetof(sluice_l4copy, copied) == 0);

static_assert(sizeof(sluice_sock_state) == 16);
static_assert(offsetof(sluice_sock_state, orig) == 0);
static_assert(offsetof(sluice_sock_state, flags) == 8);

}  // namespace sluice::bpf::layout
