// SPDX-License-Identifier: GPL-2.0
/* sk_msg on sluice_socks: a sendmsg() on a node-local socket whose peer socket
 * is also in the map is delivered straight into the peer's receive queue
 * (BPF_F_INGRESS), skipping the loopback TCP stack. Anything else passes to
 * TCP untouched, and so is everything a socket sends once its peer fell
 * too far behind (see may_redirect). */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "lib/common.h"

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* include/net/sock.h: the low bits of sk_user_data are flags; this one says
 * the pointer is the socket's sk_psock. */
#define SK_USER_DATA_PSOCK 4ul
#define SK_USER_DATA_FLAGS 7ul

/* Bytes redirected into `sk` that its reader has not taken yet: the length
 * of its psock's ingress list. 0 on a kernel whose sk_psock lacks
 * msg_tot_len (no bound there). */
static __always_inline __u32 ingress_queued(struct sock *sk)
{
	unsigned long data = (unsigned long)sk->sk_user_data;
	struct sk_psock *psock;

	if (!bpf_core_field_exists(struct sk_psock, msg_tot_len))
		return 0;
	if (!(data & SK_USER_DATA_PSOCK) || !(data & ~SK_USER_DATA_FLAGS))
		return 0;
	psock = bpf_rdonly_cast((void *)(data & ~SK_USER_DATA_FLAGS),
				bpf_core_type_id_kernel(struct sk_psock));
	return psock->msg_tot_len;
}

/* Whether TCP has ever carried data for this socket: sent, or queued to
 * send. */
static __always_inline bool used_tcp(struct tcp_sock *self)
{
	return self->bytes_sent || self->write_seq != self->snd_nxt;
}

/* Whether the message the helper just aimed at `target` (the peer, still
 * in the sockhash, so alive) may really go into its receive queue.
 *
 * Bounded: the kernel queues a redirected message on the receiver without
 * any per-socket limit, and the sender's call returns at once. A peer that
 * reads nothing (a stalled upstream, an app that stops reading) would let
 * this socket fill the node's TCP memory. Past SLUICE_MSG_MAX_QUEUED unread
 * bytes the socket moves to TCP, whose window stops the sender.
 *
 * For good: once TCP carried data for this socket, its sends stay there.
 * A reader takes redirected bytes before TCP's, so going back could overtake
 * bytes TCP still holds; and even after the reader took them all, a reader
 * blocked inside a TCP read for more (MSG_WAITALL, SO_RCVLOWAT) watches only
 * TCP's queue and would never see what came on the redirect queue. The same
 * keeps a socket that used TCP before its peer joined the sockhash on TCP. */
static __always_inline bool may_redirect(struct sk_msg_md *msg, struct sock *target,
					 bool *moved)
{
	struct bpf_sock *self_sk = msg->sk;
	struct tcp_sock *self;

	*moved = false;
	if (!self_sk || !target)
		return false;
	self = bpf_skc_to_tcp_sock(self_sk);
	if (!self || used_tcp(self))
		return false;
	if (ingress_queued(target) <= SLUICE_MSG_MAX_QUEUED)
		return true;
	*moved = true;
	return false;
}

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
	struct sk_msg *kmsg;
	bool moved;

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

	if (bpf_msg_redirect_hash(msg, &sluice_socks, &peer, BPF_F_INGRESS) != SK_PASS) {
		/* No peer in the map: the helper set no redirect, so passing
		 * hands the data to TCP as if no program were attached. */
		cnt_inc(SLUICE_CNT_MSG_PASSED);
		return SK_PASS;
	}
	/* The helper recorded the peer's socket in the kernel's message; an
	 * sk_msg program cannot look it up itself (a sockhash lookup takes a
	 * reference it has no helper to drop). */
	kmsg = bpf_cast_to_kern_ctx(msg);
	if (!may_redirect(msg, kmsg->sk_redir, &moved) &&
	    /* Aimed back out of this socket instead: TCP carries it, as a
	     * plain pass would (a redirect, once set, cannot be unset). This
	     * socket is in the map (the program runs for it), so it works. */
	    bpf_msg_redirect_hash(msg, &sluice_socks, &self, 0) == SK_PASS) {
		if (moved)
			cnt_inc(SLUICE_CNT_MSG_BACKLOGGED);
		cnt_add(SLUICE_CNT_MSG_KEPT_ON_TCP_BYTES, size);
		return SK_PASS;
	}
	cnt_inc(SLUICE_CNT_MSG_REDIRECTED);
	cnt_add(SLUICE_CNT_MSG_REDIRECTED_BYTES, size);
	account_redirected(msg, &self, size);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
