// SPDX-License-Identifier: GPL-2.0
/* cgroup/connect4: a TCP connect() from an enabled cgroup to a service
 * VIP:port is rewritten to the node proxy's outbound listener. The VIP is kept
 * in the socket's local storage for getpeername4, getsockopt and sockops. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/capture.h"

SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx)
{
	struct sluice_sock_state *st;
	struct sluice_config *cfg;
	struct sluice_addr_key vip;

	if (ctx->type != SOCK_STREAM)
		return 1;
	cfg = config_get();
	if (!cfg || !(cfg->flags & SLUICE_CFG_CAPTURE))
		return 1;
	/* The proxy's own upstream connections are never captured, even if an
	 * operator enabled the cgroup the daemon runs in. */
	if (bpf_get_current_cgroup_id() == cfg->proxy_cgroup_id)
		return 1;

	vip.addr = ctx->user_ip4;           /* network order */
	vip.port = (__u16)ctx->user_port;   /* network order in the low 16 bits */
	vip._pad = 0;
	if (!bpf_map_lookup_elem(&sluice_services, &vip))
		return 1;
	if (!current_cgroup_enabled())
		return 1;

	st = sock_state_create(ctx->sk);
	if (!st) {
		/* Without the record getpeername would expose the proxy and
		 * the proxy could not route by VIP: leave the connect alone. */
		cnt_inc(SLUICE_CNT_CAPTURE_NO_STORAGE);
		return 1;
	}
	st->orig = vip;
	st->flags = SLUICE_SOCK_CAPTURED;
	ctx->user_ip4 = cfg->proxy_addr;
	ctx->user_port = cfg->proxy_port;
	cnt_inc(SLUICE_CNT_CAPTURED);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
