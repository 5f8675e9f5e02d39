// SPDX-License-Identifier: GPL-2.0
/* sk_msg on sluice_socks: a sendmsg() on a node-local socket whose peer socket
 * is also in the map is delivered straight into the peer's receive queue
 * (BPF_F_INGRESS), skipping the loopback TCP stack. Anything else passes to
 * TCP untouched. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/common.h"

/* Bytes moved by redirection never reach TCP's counters, so they are added
 * here: to the endpoints on both ends and, for a captured connection, to its
 * service (seen from the app: what it sent and what it received). */
static __always_inline void account_redirected(struct sk_msg_md *msg,
					       struct sluice_tuple4 *self, __u64 size)
{
	struct sluice_addr_key remote = { .addr = self->dst_addr, .port = self->dst_port };
	struct sluice_addr_key local = { .addr = self->src_addr, .port = self->src_port };
	struct sluice_tuple4 peer;
	struct sluice_addr_key *vip;

	stats_add_bytes(&sluice_peers, &remote, size, 0);
	stats_add_bytes(&sluice_peers, &local, 0, size);

	vip = bpf_map_lookup_elem(&sluice_origdst, self);
	if (vip) { /* the app's end: it sent */
		stats_add_bytes(&sluice_svcstat, vip, size, 0);
		return;
	}
	peer.src_addr = self->dst_addr;
	peer.dst_addr = self->src_addr;
	peer.src_port = self->dst_port;
	peer.dst_port = self->src_port;
	vip = bpf_map_lookup_elem(&sluice_origdst, &peer);
	if (vip) /* the proxy's end: the app received */
		stats_add_bytes(&sluice_svcstat, vip, 0, size);
}

SEC("sk_msg")
int sluice_sk_msg(struct sk_msg_md *msg)
{
	struct sluice_tuple4 self, peer;
	__u64 size = msg->size;

	if (msg->family != AF_INET)
		return SK_PASS;
	self.src_addr = msg->local_ip4;
	self.dst_addr = msg->remote_ip4;
	self.src_port = local_port_be(msg->local_port);
	self.dst_port = remote_port_be(msg->remote_port);
	/* The peer socket is keyed by its own view: ends swapped. */
	peer.src_addr = self.dst_addr;
	peer.dst_addr = self.src_addr;
	peer.src_port = self.dst_port;
	peer.dst_port = self.src_port;

	if (bpf_msg_redirect_hash(msg, &sluice_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		cnt_inc(SLUICE_CNT_MSG_REDIRECTED);
		cnt_add(SLUICE_CNT_MSG_REDIRECTED_BYTES, size);
		account_redirected(msg, &self, size);
	} else {
		/* No peer in the map: the helper set no redirect, so passing
		 * hands the data to TCP as if no program were attached. */
		cnt_inc(SLUICE_CNT_MSG_PASSED);
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
