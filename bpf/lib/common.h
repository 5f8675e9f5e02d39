/* Small pieces every program uses: uapi constants vmlinux.h lacks, the
 * counter helpers and the config lookup. */
#ifndef SLUICE_BPF_LIB_COMMON_H
#define SLUICE_BPF_LIB_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <sluice/maps.h>

#include "lib/maps.h"

/* uapi #defines are not BTF, so vmlinux.h does not carry them. */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef SOL_IP
#define SOL_IP 0
#endif
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef ENOSPC
#define ENOSPC 28
#endif
#ifndef EAFNOSUPPORT
#define EAFNOSUPPORT 97
#endif

/* Atomic even on a per-CPU slot: a process-context connect() can be
 * interrupted on the same CPU by a softirq running a program for another
 * socket, and a plain += would lose one of the two updates. The result is not
 * used, so clang emits a plain BPF atomic add, valid for every -mcpu. */
static __always_inline void cnt_add(__u32 idx, __u64 delta)
{
	__u64 *v = bpf_map_lookup_elem(&sluice_cnt, &idx);

	if (v)
		__sync_fetch_and_add(v, delta);
}

static __always_inline void cnt_inc(__u32 idx)
{
	cnt_add(idx, 1);
}

static __always_inline struct sluice_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sluice_config, &zero);
}

/* 127.0.0.0/8, address in network byte order. */
static __always_inline bool is_loopback4(__u32 addr_be)
{
	return (bpf_ntohl(addr_be) >> 24) == 127;
}

/* The remote_port quirk of struct bpf_sock_ops and struct sk_msg_md: the
 * kernel loads the 16-bit port (network order) and, on little-endian hosts,
 * shifts it left by 16 (see sock_ops_convert_ctx_access). So the __u32 behaves
 * like a big-endian 32-bit number whose value is the port: ntohl() gives the
 * host-order port on either endianness, and htons() of that the network-order
 * __u16 we key on. local_port, by contrast, is already host order. */
static __always_inline __u16 remote_port_be(__u32 remote_port)
{
	return bpf_htons((__u16)bpf_ntohl(remote_port));
}

static __always_inline __u16 local_port_be(__u32 local_port)
{
	return bpf_htons((__u16)local_port);
}

/* Adds to one field of a conn_stats entry that must already exist: bytes are
 * only ever added to endpoints and services the open path created. */
static __always_inline void stats_add_bytes(void *map, struct sluice_addr_key *key,
					    __u64 sent, __u64 received)
{
	struct sluice_conn_stats *st = bpf_map_lookup_elem(map, key);

	if (!st)
		return;
	if (sent)
		__sync_fetch_and_add(&st->bytes_sent, sent);
	if (received)
		__sync_fetch_and_add(&st->bytes_received, received);
}

/* Looks the entry up, creating a zeroed one first if needed. NULL when the
 * map is full (LRU maps evict instead, so only on memory pressure). */
static __always_inline struct sluice_conn_stats *stats_get_or_create(void *map,
								   struct sluice_addr_key *key)
{
	struct sluice_conn_stats zero = {};
	struct sluice_conn_stats *st;

	st = bpf_map_lookup_elem(map, key);
	if (st)
		return st;
	/* -EEXIST here means another CPU created it first: fine. */
	bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

#endif /* SLUICE_BPF_LIB_COMMON_H */
