// SPDX-License-Identifier: GPL-2.0
/* sockops: on every established connection of a socket in scope, account it,
 * remember the VIP of captured ones by 4-tuple, and put node-local ends into
 * the sockhash sk_msg redirects through; on close, account and forget.
 * Thin entry point; the logic lives in lib/conn_count.h and lib/redirect.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/redirect.h"

/* Error of a helper -> the reason counter that makes it visible. */
static __always_inline void count_open_error(int err)
{
	switch (err) {
	case 0:
		break;
	case -EAFNOSUPPORT:
		cnt_inc(SLUICE_CNT_PEER_NOT_IPV4);
		break;
	case -ENOSPC:
		cnt_inc(SLUICE_CNT_PEER_MAP_FULL);
		break;
	default:
		cnt_inc(SLUICE_CNT_CB_FLAGS_FAILED);
		break;
	}
}

static __always_inline void count_close_error(int err)
{
	if (err == -EAFNOSUPPORT)
		cnt_inc(SLUICE_CNT_PEER_NOT_IPV4);
	else if (err)
		cnt_inc(SLUICE_CNT_PEER_MISSING);
}

SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *skops)
{
	struct sluice_tuple4 t;

	if (skops->family != AF_INET) {
		/* Counted globally only; nothing else here speaks IPv6 yet. */
		if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ||
		    skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
			count_open_error(conn_on_established(skops, NULL));
		else if (skops->op == BPF_SOCK_OPS_STATE_CB && conn_is_close_transition(skops))
			count_close_error(conn_on_close(skops, NULL));
		return 1;
	}
	tuple_from(skops, &t);
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		count_open_error(conn_on_established(skops, &t));
		captured_on_established(skops, &t);
		sockhash_on_established(skops, &t);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		count_open_error(conn_on_established(skops, &t));
		proxy_side_on_established(skops, &t);
		sockhash_on_established(skops, &t);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (conn_is_close_transition(skops)) {
			count_close_error(conn_on_close(skops, &t));
			captured_on_close(skops, &t);
			noredir_on_close(skops, &t);
		}
		break;
	default:
		break;
	}
	/* sockops ignores the return value except for a few ops that read
	 * skops->reply; 1 is the conventional "ok". */
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
