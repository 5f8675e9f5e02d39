/* Connection accounting for sockops: open/close/active, globally and per
 * remote IPv4 endpoint. Helpers return 0 or -errno; the SEC() entry point in
 * bpf/sockops.bpf.c maps errors to reason counters. */
#ifndef SLUICE_BPF_LIB_CONN_COUNT_H
#define SLUICE_BPF_LIB_CONN_COUNT_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <sluice/maps.h>

#include "lib/sockops_maps.h"

#ifndef AF_INET
#define AF_INET 2 /* not in vmlinux.h: it is a uapi #define, not BTF */
#endif
#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef ENOSPC
#define ENOSPC 28
#endif
#ifndef EAFNOSUPPORT
#define EAFNOSUPPORT 97
#endif

/* Set by the loader in .rodata before load; the verifier then prunes the
 * disabled branch entirely. */
const volatile __u8 sluice_track_peers = 1;

/* Atomic even on a per-CPU slot: a process-context connect() can be
 * interrupted on the same CPU by a softirq running this program for another
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

/* struct bpf_sock_ops.remote_port quirk: the kernel loads the 16-bit
 * skc_dport (network order) and, on little-endian hosts, shifts it left by 16
 * (see sock_ops_convert_ctx_access). So the __u32 behaves like a big-endian
 * 32-bit number whose value is the port: ntohl() gives the host-order port on
 * either endianness, and htons() of that gives the network-order __u16 we key
 * on. This is the portable spelling of the usual `remote_port >> 16`.
 * (local_port, by contrast, is already host order.) */
static __always_inline __u16 skops_remote_port_be(const struct bpf_sock_ops *skops)
{
	return bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

static __always_inline int peer_key_from(const struct bpf_sock_ops *skops,
					  struct sluice_peer_key *key)
{
	if (skops->family != AF_INET)
		return -EAFNOSUPPORT;
	key->addr = skops->remote_ip4; /* already network order */
	key->port = skops_remote_port_be(skops);
	key->_pad = 0;
	return 0;
}

static __always_inline int peer_on_open(struct bpf_sock_ops *skops)
{
	struct sluice_peer_stats zero = {};
	struct sluice_peer_stats *st;
	struct sluice_peer_key key;
	int err;

	err = peer_key_from(skops, &key);
	if (err)
		return err;
	st = bpf_map_lookup_elem(&sluice_peers, &key);
	if (!st) {
		/* -EEXIST here means another CPU created it first: fine. */
		bpf_map_update_elem(&sluice_peers, &key, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&sluice_peers, &key);
		if (!st)
			return -ENOSPC;
	}
	__sync_fetch_and_add(&st->opened, 1);
	__sync_fetch_and_add(&st->active, 1);
	return 0;
}

static __always_inline int peer_on_close(struct bpf_sock_ops *skops)
{
	struct sluice_peer_stats *st;
	struct sluice_peer_key key;
	int err;

	err = peer_key_from(skops, &key);
	if (err)
		return err;
	st = bpf_map_lookup_elem(&sluice_peers, &key);
	if (!st)
		return -ENOENT;
	__sync_fetch_and_add(&st->closed, 1);
	__sync_fetch_and_add(&st->active, (__u64)-1);
	return 0;
}

/* Both ends of the established transition. The close is only observable if
 * the state callback is switched on for this socket; a socket whose callback
 * cannot be enabled is not counted at all, so opened - closed stays exact. */
static __always_inline int conn_on_established(struct bpf_sock_ops *skops, bool active)
{
	long err;

	err = bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						       BPF_SOCK_OPS_STATE_CB_FLAG);
	if (err)
		return (int)err;
	cnt_inc(active ? SLUICE_CNT_OPENED_ACTIVE : SLUICE_CNT_OPENED_PASSIVE);
	cnt_inc(SLUICE_CNT_ACTIVE);
	if (!sluice_track_peers)
		return 0;
	return peer_on_open(skops);
}

/* args[0] is the old state, args[1] the new one. TCP_CLOSE is reached exactly
 * once per socket (tcp_done, also on the way into TIME_WAIT), but guard
 * against a CLOSE->CLOSE call anyway so a socket is never closed twice. */
static __always_inline bool conn_is_close_transition(const struct bpf_sock_ops *skops)
{
	return skops->args[1] == BPF_TCP_CLOSE && skops->args[0] != BPF_TCP_CLOSE;
}

static __always_inline int conn_on_close(struct bpf_sock_ops *skops)
{
	cnt_inc(SLUICE_CNT_CLOSED);
	cnt_add(SLUICE_CNT_ACTIVE, (__u64)-1);
	if (!sluice_track_peers)
		return 0;
	return peer_on_close(skops);
}

#endif /* SLUICE_BPF_LIB_CONN_COUNT_H */
