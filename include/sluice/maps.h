/* Keys and values of every BPF map Sluice shares between the kernel programs
 * (bpf/<hook>.bpf.c) and userspace (userspace/bpf/). This file is the ONLY
 * definition of these layouts: both sides include it, and
 * userspace/bpf/maps_check.h pins sizes and offsets with static_assert.
 *
 * Rules: C only (it is compiled by clang -target bpf and by g++), fixed-width
 * __u8/__u16/__u32/__u64 types, every hole filled by an explicit _pad field,
 * byte order written next to each multi-byte field.
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

/* BPF objects include vmlinux.h first, which already defines __u32 and friends;
 * pulling <linux/types.h> in as well would redefine them (and needs the host's
 * asm/ headers, which -target bpf does not see). */
#if !defined(__bpf__) && !defined(__BPF__)
#include <linux/types.h>
#endif

/* ---- sockops connection accounting (bpf/sockops.bpf.c) ---------------- */

/* Index into the "sluice_cnt" per-CPU array. Userspace sums the per-CPU slots.
 * Values are part of the ABI with the loaded program: append, never renumber. */
enum sluice_sockops_counter {
	SLUICE_CNT_OPENED_ACTIVE = 0,  /* connect() completed in the cgroup */
	SLUICE_CNT_OPENED_PASSIVE = 1, /* accept side established in the cgroup */
	SLUICE_CNT_CLOSED = 2,         /* tracked socket reached TCP_CLOSE */
	/* Gauge: +1 on open, -1 (two's complement) on close. The per-CPU slots
	 * wrap individually, their sum modulo 2^64 is exact; read it as signed. */
	SLUICE_CNT_ACTIVE = 3,
	/* Reasons a connection was not (fully) accounted. */
	SLUICE_CNT_CB_FLAGS_FAILED = 4, /* could not enable the state callback: not tracked */
	SLUICE_CNT_PEER_NOT_IPV4 = 5,   /* tracked globally, not in the per-peer map */
	SLUICE_CNT_PEER_MAP_FULL = 6,   /* per-peer entry could not be created */
	SLUICE_CNT_PEER_MISSING = 7,    /* close of a peer whose entry is gone (LRU) */
	SLUICE_CNT_MAX = 8,
};

/* Key of the "sluice_peers" LRU hash: the remote end of an IPv4 connection,
 * as the socket in the cgroup sees it (for an active open: the server). */
struct sluice_peer_key {
	__u32 addr; /* IPv4 address, network byte order */
	__u16 port; /* TCP port, network byte order */
	__u16 _pad; /* always 0: keys are compared bytewise */
};

/* Value of "sluice_peers". Updated with atomic adds from any CPU. */
struct sluice_peer_stats {
	__u64 opened; /* host byte order */
	__u64 closed; /* host byte order */
	__u64 active; /* host byte order; signed gauge stored as two's complement */
};

#endif /* SLUICE_MAPS_H */
