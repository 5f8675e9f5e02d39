// SPDX-License-Identifier: GPL-2.0
/* sockops: connection accounting for sockets of the cgroup it is attached to.
 * Thin entry point; the logic lives in lib/conn_count.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/conn_count.h"

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
int sluice_sockops_count(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		count_open_error(conn_on_established(skops, true));
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		count_open_error(conn_on_established(skops, false));
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (conn_is_close_transition(skops))
			count_close_error(conn_on_close(skops));
		break;
	default:
		break;
	}
	/* sockops ignores the return value except for a few ops that read
	 * skops->reply; 1 is the conventional "ok". */
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
