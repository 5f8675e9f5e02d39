// SPDX-License-Identifier: GPL-2.0
/* sk_skb/stream_verdict on sluice_l4socks: every skb received on one end of
 * a spliced L4 connection is sent out of its partner (egress redirect), so
 * the bytes of a TCP route never reach userspace. The daemon pairs the two
 * sockets by cookie in sluice_l4peer and inserts both; it watches for EOF
 * and errors itself, and forwards what was kept back (see below). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/common.h"

SEC("sk_skb/stream_verdict")
int sluice_sk_skb(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *peer = bpf_map_lookup_elem(&sluice_l4peer, &cookie);
	__u32 len = skb->len;

	/* The peer's FIN reaches the verdict as an skb without payload. TCP
	 * has already taken note of it (the daemon passes the EOF on itself);
	 * redirected, it would make the partner's sender report EPIPE. */
	if (len == 0)
		return SK_DROP;
	/* No partner yet (the daemon inserts the upstream end first, so only
	 * the upstream's earliest bytes can get here) or any more: keep the
	 * bytes on this socket, where the daemon reads them. TCP has already
	 * acknowledged them, so dropping would lose them. */
	if (!peer || bpf_sk_redirect_hash(skb, &sluice_l4socks, peer, 0) != SK_PASS) {
		cnt_inc(SLUICE_CNT_L4_NO_PEER);
		return SK_PASS;
	}
	cnt_add(SLUICE_CNT_L4_SPLICED_BYTES, len);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
