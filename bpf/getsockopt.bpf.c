// SPDX-License-Identifier: GPL-2.0
/* cgroup/getsockopt: getsockopt(SOL_IP, SO_ORIGINAL_DST) on either end of a
 * captured connection (the app's socket or the proxy's accepted one) returns
 * the VIP:port the app dialled, as it would under an iptables REDIRECT. Every
 * other option keeps the kernel's own answer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/capture.h"

SEC("cgroup/getsockopt")
int sluice_getsockopt(struct bpf_sockopt *ctx)
{
	struct sluice_sock_state *st;
	struct sockaddr_in *sin;

	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	st = sock_state(ctx->sk);
	if (!st || !(st->flags & (SLUICE_SOCK_CAPTURED | SLUICE_SOCK_PROXY_SIDE)))
		return 1;
	sin = ctx->optval;
	if ((void *)(sin + 1) > ctx->optval_end)
		return 1; /* caller's buffer too small: the kernel's error stands */
	__builtin_memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = st->orig.port;
	sin->sin_addr.s_addr = st->orig.addr;
	ctx->optlen = sizeof(*sin);
	ctx->retval = 0;
	cnt_inc(SLUICE_CNT_ORIGDST_ANSWERED);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
