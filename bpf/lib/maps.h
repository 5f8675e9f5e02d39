/* Every map of the data path. Each bpf/<hook>.bpf.c includes this header, so
 * each object carries the same definitions; the loader creates the maps once
 * and hands the same fds to every object (bpf_map__reuse_fd), so all programs
 * share one instance of each. Layouts come from include/sluice/maps.h; sizes
 * here are defaults that the loader may change before load
 * (bpf_map__set_max_entries), never from the Makefile. */
#ifndef SLUICE_BPF_LIB_MAPS_H
#define SLUICE_BPF_LIB_MAPS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <sluice/maps.h>

/* Per-CPU so the hot path never bounces a cache line between cores; userspace
 * sums the slots. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLUICE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sluice_cnt SEC(".maps");

/* LRU rather than plain hash: a node talks to an unbounded set of peers and a
 * full hash would silently stop accounting new ones. An evicted peer that
 * still has open connections shows up as SLUICE_CNT_PEER_MISSING on close. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sluice_addr_key);
	__type(value, struct sluice_conn_stats);
} sluice_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sluice_addr_key);
	__type(value, struct sluice_conn_stats);
} sluice_svcstat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_config);
} sluice_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct sluice_enabled);
} sluice_enabled SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sluice_addr_key);
	__type(value, struct sluice_service);
} sluice_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sluice_addr_key);
	__type(value, struct sluice_endpoint);
} sluice_endpts SEC(".maps");

/* LRU: an entry whose close was never seen (state callback refused) must not
 * pin a slot forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sluice_tuple4);
	__type(value, struct sluice_addr_key);
} sluice_origdst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sluice_sock_state);
} sluice_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sluice_tuple4);
	__type(value, __u64);
} sluice_socks SEC(".maps");

/* L4 splice: both ends of a proxied TCP connection, by socket cookie, and
 * which cookie each one's bytes go to. Written by the daemon only. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sluice_l4socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sluice_l4pair);
} sluice_l4peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sluice_l4copy);
} sluice_l4copy SEC(".maps");

/* Passive ends to keep out of sluice_socks, by their own tuple: the
 * node-local peer of an active socket that is never redirected (an L4
 * upstream socket of the daemon). Its sends would run sk_msg for nothing,
 * and a copy through sk_msg costs more than plain TCP. LRU: that peer may
 * never show up here (outside the attached tree), and the active end's
 * close forgets it anyway. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sluice_tuple4);
	__type(value, __u8);
} sluice_noredir SEC(".maps");

#endif /* SLUICE_BPF_LIB_MAPS_H */
