/* Connection accounting for sockops: open/close/active and bytes, globally,
 * per remote IPv4 endpoint and per captured service. Helpers return 0 or
 * -errno; the SEC() entry point in bpf/sockops.bpf.c maps errors to reason
 * counters. */
#ifndef SLUICE_BPF_LIB_CONN_COUNT_H
#define SLUICE_BPF_LIB_CONN_COUNT_H

#include "lib/common.h"

/* Set by the loader in .rodata before load; the verifier then prunes the
 * disabled branch entirely. */
const volatile __u8 sluice_track_peers = 1;

static __always_inline int stats_on_open(void *map, struct sluice_addr_key *key)
{
	struct sluice_conn_stats *st = stats_get_or_create(map, key);

	if (!st)
		return -ENOSPC;
	__sync_fetch_and_add(&st->opened, 1);
	__sync_fetch_and_add(&st->active, 1);
	return 0;
}

static __always_inline int stats_on_close(void *map, struct sluice_addr_key *key,
					  __u64 sent, __u64 received)
{
	struct sluice_conn_stats *st = bpf_map_lookup_elem(map, key);

	if (!st)
		return -ENOENT;
	__sync_fetch_and_add(&st->closed, 1);
	__sync_fetch_and_add(&st->active, (__u64)-1);
	if (sent)
		__sync_fetch_and_add(&st->bytes_sent, sent);
	if (received)
		__sync_fetch_and_add(&st->bytes_received, received);
	return 0;
}

/* TCP's byte counters count sequence space, not payload: bytes_acked includes
 * our SYN and, once acknowledged, our FIN; bytes_received includes the peer's
 * FIN. Called on the transition into TCP_CLOSE, whose old state (args[0])
 * tells how the connection ended: leaving FIN_WAIT2, CLOSING, LAST_ACK or
 * TIME_WAIT means both FINs were exchanged (FIN_WAIT2 also ends on
 * tcp_fin_timeout without the peer's FIN; that rare close counts one byte
 * short in received). Anything else (RST, timeout) exchanged no FIN. */
static __always_inline void tcp_payload_bytes(const struct bpf_sock_ops *skops, __u64 *sent,
					      __u64 *received)
{
	__u64 acked = skops->bytes_acked;
	__u64 rcvd = skops->bytes_received;
	__u32 old = skops->args[0];
	__u64 fin = old == BPF_TCP_FIN_WAIT2 || old == BPF_TCP_CLOSING ||
		    old == BPF_TCP_LAST_ACK || old == BPF_TCP_TIME_WAIT;

	acked = acked > 1 + fin ? acked - 1 - fin : 0;
	rcvd = rcvd > fin ? rcvd - fin : 0;
	*sent = acked;
	*received = rcvd;
}

/* Both ends of the established transition. The close is only observable if
 * the state callback is switched on for this socket; a socket whose callback
 * cannot be enabled is not counted at all, so opened - closed stays exact. */
/* `t` is the connection from this socket's side, NULL for a non-IPv4 one
 * (counted globally, not per peer). */
static __always_inline int conn_on_established(struct bpf_sock_ops *skops,
					       const struct sluice_tuple4 *t)
{
	bool active = skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
	struct sluice_addr_key key;
	long err;

	err = bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						       BPF_SOCK_OPS_STATE_CB_FLAG);
	if (err)
		return (int)err;
	cnt_inc(active ? SLUICE_CNT_OPENED_ACTIVE : SLUICE_CNT_OPENED_PASSIVE);
	cnt_inc(SLUICE_CNT_ACTIVE);
	if (!sluice_track_peers)
		return 0;
	if (!t)
		return -EAFNOSUPPORT;
	key.addr = t->dst_addr;
	key.port = t->dst_port;
	key._pad = 0;
	return stats_on_open(&sluice_peers, &key);
}

/* args[0] is the old state, args[1] the new one. TCP_CLOSE is reached exactly
 * once per socket (tcp_done, also on the way into TIME_WAIT), but guard
 * against a CLOSE->CLOSE call anyway so a socket is never closed twice. */
static __always_inline bool conn_is_close_transition(const struct bpf_sock_ops *skops)
{
	return skops->args[1] == BPF_TCP_CLOSE && skops->args[0] != BPF_TCP_CLOSE;
}

static __always_inline int conn_on_close(struct bpf_sock_ops *skops,
					 const struct sluice_tuple4 *t)
{
	struct sluice_addr_key key;
	__u64 sent, received;

	cnt_inc(SLUICE_CNT_CLOSED);
	cnt_add(SLUICE_CNT_ACTIVE, (__u64)-1);
	if (!sluice_track_peers)
		return 0;
	if (!t)
		return -EAFNOSUPPORT;
	key.addr = t->dst_addr;
	key.port = t->dst_port;
	key._pad = 0;
	tcp_payload_bytes(skops, &sent, &received);
	return stats_on_close(&sluice_peers, &key, sent, received);
}

#endif /* SLUICE_BPF_LIB_CONN_COUNT_H */
