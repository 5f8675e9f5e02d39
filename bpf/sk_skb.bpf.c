// SPDX-License-Identifier: GPL-2.0
/* sk_skb/stream_verdict on sluice_l4socks: every skb received on one end of
 * a spliced L4 connection is sent out of its partner (egress redirect), so
 * the bytes of a TCP route never reach userspace. The daemon pairs the two
 * sockets by cookie in sluice_l4peer and inserts both; it watches for EOF
 * and errors itself, and forwards what was kept back (see below). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/common.h"

/* Payload bytes the socket `cookie` has taken for sending so far (sent once,
 * or queued), or -1 if it cannot be read. Not bytes_acked + (write_seq -
 * snd_una): an active opener's bytes_acked counts its SYN too, one byte
 * more than it sent, and the verdict compares this with exact counts. */
static __always_inline __s64 bytes_taken(__u64 *cookie)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&sluice_l4socks, cookie);
	struct tcp_sock *tp;
	__s64 taken = -1;

	if (!sk)
		return -1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		taken = (__s64)(tp->bytes_sent - tp->bytes_retrans) +
			(__s64)(__u32)(tp->write_seq - tp->snd_nxt);
	bpf_sk_release(sk);
	return taken;
}

SEC("sk_skb/stream_verdict")
int sluice_sk_skb(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sluice_l4pair *pair = bpf_map_lookup_elem(&sluice_l4peer, &cookie);
	struct sluice_l4copy *copy;
	__u64 copied = 0, given;
	__u32 len = skb->len;
	__s64 taken;

	/* The peer's FIN reaches the verdict as an skb without payload. TCP
	 * has already taken note of it (the daemon passes the EOF on itself);
	 * redirected, it would make the partner's sender report EPIPE. */
	if (len == 0)
		return SK_DROP;
	/* Not paired (only while the daemon detaches): keep the bytes on this
	 * socket. TCP has already acknowledged them, so dropping would lose
	 * them. */
	if (!pair) {
		cnt_inc(SLUICE_CNT_L4_NO_PEER);
		return SK_PASS;
	}
	/* A redirected skb leaves this socket's receive buffer at once, so TCP
	 * keeps its window open however far behind the partner is: the queue
	 * in front of the partner would grow without bound. So the verdict
	 * compares what the partner was given (redirected here, written by the
	 * daemon) with what its TCP has taken, and holds the direction past
	 * SLUICE_L4_MAX_AHEAD (see struct sluice_l4pair). */
	copy = bpf_map_lookup_elem(&sluice_l4copy, &cookie);
	if (copy)
		copied = copy->copied;
	given = pair->redirected + copied;
	taken = bytes_taken(&pair->peer);
	if (pair->held) {
		/* Caught up: every kept byte passed on, and taken. */
		if (taken >= 0 && pair->kept == copied && (__u64)taken >= given) {
			if (pair->held == SLUICE_L4_HELD)
				cnt_inc(SLUICE_CNT_L4_RESUMED);
			pair->held = 0;
		} else if (pair->held == SLUICE_L4_STARTING) {
			pair->held = SLUICE_L4_HELD;
			cnt_inc(SLUICE_CNT_L4_HELD);
		}
	} else if (taken < 0 || (__s64)given - taken > (__s64)SLUICE_L4_MAX_AHEAD) {
		pair->held = SLUICE_L4_HELD;
		cnt_inc(SLUICE_CNT_L4_HELD);
	}
	/* The partner left the sockhash (teardown): keep, as held. */
	if (!pair->held &&
	    bpf_sk_redirect_hash(skb, &sluice_l4socks, &pair->peer, 0) != SK_PASS) {
		cnt_inc(SLUICE_CNT_L4_NO_PEER);
		pair->held = SLUICE_L4_HELD;
	}
	if (pair->held) {
		__sync_fetch_and_add(&pair->kept, len);
		cnt_add(SLUICE_CNT_L4_HELD_BYTES, len);
		return SK_PASS;
	}
	__sync_fetch_and_add(&pair->redirected, len);
	cnt_add(SLUICE_CNT_L4_SPLICED_BYTES, len);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
