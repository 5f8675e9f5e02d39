// SPDX-License-Identifier: GPL-2.0
/* cgroup/getpeername4: a captured socket reports the VIP:port its app dialled,
 * not the proxy it was rewritten to. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/capture.h"

SEC("cgroup/getpeername4")
int sluice_getpeername4(struct bpf_sock_addr *ctx)
{
	struct sluice_sock_state *st = sock_state(ctx->sk);

	if (st && (st->flags & SLUICE_SOCK_CAPTURED)) {
		ctx->user_ip4 = st->orig.addr;
		ctx->user_port = st->orig.port;
		cnt_inc(SLUICE_CNT_PEERNAME_REWRITTEN);
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
