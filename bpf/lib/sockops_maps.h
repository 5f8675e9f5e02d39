/* Maps written by the sockops program. Layouts come from include/sluice/maps.h;
 * sizes here are defaults that the loader may change before load
 * (bpf_map__set_max_entries), never from the Makefile. */
#ifndef SLUICE_BPF_LIB_SOCKOPS_MAPS_H
#define SLUICE_BPF_LIB_SOCKOPS_MAPS_H

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
	__type(key, struct sluice_peer_key);
	__type(value, struct sluice_peer_stats);
} sluice_peers SEC(".maps");

#endif /* SLUICE_BPF_LIB_SOCKOPS_MAPS_H */
