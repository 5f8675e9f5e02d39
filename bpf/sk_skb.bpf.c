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

/* The TCP sequence number of the skb's first byte. The verdict's skb still
 * carries TCP's control block, whose first word is that number (struct
 * tcp_skb_cb.seq), and __sk_buff's cb[0] reads exactly that word. */
static __always_inline __u32 skb_tcp_seq(struct __sk_buff *skb)
{
	return skb->cb[0];
}

/* Bytes at the head of `skb` the verdict has passed on already.
 *
 * TCP queues a segment that begins below rcv_nxt and ends above it (a
 * retransmission that overlaps what arrived, common once a held source's
 * full receive buffer made TCP drop segments) with its head intact: a read
 * skips that head by copied_seq, but the stream verdict is handed the whole
 * skb. Passed on as is, the overlap would reach the destination twice.
 *
 * Before the pair's first skb nothing was passed on by the verdict, but the
 * daemon may have read part of the first queued skb (copied_seq). */
static __always_inline __u32 seen_before(struct __sk_buff *skb, struct sluice_l4pair *pair)
{
	__u32 seq = skb_tcp_seq(skb);
	__u32 next = seq;
	__s32 behind;

	if (pair->seq_known) {
		next = pair->next_seq;
	} else {
		struct bpf_sock *sk = skb->sk;
		struct tcp_sock *tp;

		/* Keeps clang from loading skb->sk again after the check. */
		barrier_var(sk);
		tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;
		if (tp)
			next = tp->copied_seq;
	}
	behind = (__s32)(next - seq);
	return behind > 0 ? (__u32)behind : 0;
}

struct trim {
	struct __sk_buff *skb;
	__u32 left;
	int failed;
};

static long trim_step(__u32 i, void *arg)
{
	struct trim *t = arg;
	__u32 step = t->left < SLUICE_L4_TRIM_STEP ? t->left : SLUICE_L4_TRIM_STEP;

	if (!step)
		return 1;
	if (bpf_skb_adjust_room(t->skb, -(__s32)step, 0, 0)) {
		t->failed = 1;
		return 1;
	}
	t->left -= step;
	return 0;
}

/* Cuts `n` bytes off the head of `skb`: 0, or -1 if the helper refused. It
 * takes at most SLUICE_L4_TRIM_STEP bytes per call, hence the loop. */
static __always_inline int trim_head(struct __sk_buff *skb, __u32 n)
{
	struct trim t = { .skb = skb, .left = n };

	bpf_loop(SLUICE_L4_TRIM_STEPS, trim_step, &t, 0);
	return t.failed || t.left ? -1 : 0;
}

SEC("sk_skb/stream_verdict")
int sluice_sk_skb(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sluice_l4pair *pair = bpf_map_lookup_elem(&sluice_l4peer, &cookie);
	struct sluice_l4copy *copy;
	__u64 copied = 0, given;
	__u32 len = skb->len;
	__u32 end_seq, overlap;
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
	if (pair->held == SLUICE_L4_BROKEN)
		return SK_DROP;
	end_seq = skb_tcp_seq(skb) + len;
	overlap = seen_before(skb, pair);
	if (overlap >= len) {
		/* Wholly passed on before. TCP drops such a segment itself; this
		 * is only a safeguard. */
		cnt_inc(SLUICE_CNT_L4_TRIMMED);
		cnt_add(SLUICE_CNT_L4_TRIMMED_BYTES, len);
		return SK_DROP;
	}
	if (overlap) {
		/* Cut off, the kernel also accounts only the new bytes as read. */
		if (trim_head(skb, overlap)) {
			pair->held = SLUICE_L4_BROKEN;
			cnt_inc(SLUICE_CNT_L4_BROKEN);
			return SK_DROP;
		}
		cnt_inc(SLUICE_CNT_L4_TRIMMED);
		cnt_add(SLUICE_CNT_L4_TRIMMED_BYTES, overlap);
		len = skb->len;
	}
	pair->next_seq = end_seq;
	pair->seq_known = 1;
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
