/* sockops side of the data path beyond plain accounting: remembering the VIP
 * of captured connections by 4-tuple, and filling the sockhash sk_msg
 * redirects through. */
#ifndef SLUICE_BPF_LIB_REDIRECT_H
#define SLUICE_BPF_LIB_REDIRECT_H

#include "lib/capture.h"
#include "lib/conn_count.h"

/* The connection as this socket sees it (src = local end), every field read
 * from the context exactly once. Reading ctx fields in several places lets
 * clang merge the loads into ctx+offset arithmetic the verifier refuses. */
static __always_inline void tuple_from(const struct bpf_sock_ops *skops, struct sluice_tuple4 *t)
{
	t->src_addr = skops->local_ip4;
	t->dst_addr = skops->remote_ip4;
	t->src_port = local_port_be(skops->local_port);
	t->dst_port = remote_port_be(skops->remote_port);
	barrier_var(t->src_addr);
	barrier_var(t->dst_addr);
}

/* The app's end of a captured connection is established: publish its VIP
 * under the 4-tuple (the proxy finds it by the peer address it accepted) and
 * count the connection for the service. */
static __always_inline void captured_on_established(struct bpf_sock_ops *skops,
						    const struct sluice_tuple4 *t)
{
	struct sluice_sock_state *st = sock_state(skops->sk);
	struct sluice_service *svc;

	if (!st || !(st->flags & SLUICE_SOCK_CAPTURED))
		return;
	/* Its peer (the proxy's end) stays out of the sockhash for the splice;
	 * running sk_msg on every send of this end would find nothing. */
	svc = bpf_map_lookup_elem(&sluice_services, &st->orig);
	if (svc && (svc->flags & SLUICE_SVC_L4))
		st->flags |= SLUICE_SOCK_NO_REDIRECT;
	if (bpf_map_update_elem(&sluice_origdst, t, &st->orig, BPF_ANY) == 0)
		cnt_inc(SLUICE_CNT_ORIGDST_RECORDED);
	else
		cnt_inc(SLUICE_CNT_ORIGDST_MAP_FULL);
	if (stats_on_open(&sluice_svcstat, &st->orig) == 0)
		st->flags |= SLUICE_SOCK_COUNTED;
}

/* The proxy accepted a captured connection: give its socket the same VIP, so
 * SO_ORIGINAL_DST works on the proxy's end too. */
static __always_inline void proxy_side_on_established(struct bpf_sock_ops *skops,
						      const struct sluice_tuple4 *self)
{
	struct sluice_config *cfg = config_get();
	struct sluice_sock_state *st;
	struct sluice_service *svc;
	struct sluice_addr_key *vip;
	struct sluice_tuple4 t;

	if (!cfg || self->src_addr != cfg->proxy_addr || self->src_port != cfg->proxy_port)
		return;
	/* Keyed by the client's view: client end first. */
	t.src_addr = self->dst_addr;
	t.dst_addr = self->src_addr;
	t.src_port = self->dst_port;
	t.dst_port = self->src_port;
	vip = bpf_map_lookup_elem(&sluice_origdst, &t);
	if (!vip)
		return;
	st = sock_state_create(skops->sk);
	if (!st)
		return;
	st->orig = *vip;
	st->flags = SLUICE_SOCK_PROXY_SIDE;
	svc = bpf_map_lookup_elem(&sluice_services, vip);
	if (svc && (svc->flags & SLUICE_SVC_L4))
		st->flags |= SLUICE_SOCK_NO_REDIRECT;
}

static __always_inline void captured_on_close(struct bpf_sock_ops *skops,
					      const struct sluice_tuple4 *t)
{
	struct sluice_sock_state *st = sock_state(skops->sk);

	if (!st || !(st->flags & SLUICE_SOCK_CAPTURED))
		return;
	bpf_map_delete_elem(&sluice_origdst, t);
	if (st->flags & SLUICE_SOCK_COUNTED) {
		__u64 sent, received;

		tcp_payload_bytes(skops, &sent, &received);
		stats_on_close(&sluice_svcstat, &st->orig, sent, received);
	}
}

/* Node-local means both ends on this host: loopback, or the same address. */
static __always_inline bool is_node_local(const struct sluice_tuple4 *t)
{
	return (is_loopback4(t->src_addr) && is_loopback4(t->dst_addr)) ||
	       t->src_addr == t->dst_addr;
}

static __always_inline void reverse_tuple(const struct sluice_tuple4 *t, struct sluice_tuple4 *r)
{
	r->src_addr = t->dst_addr;
	r->dst_addr = t->src_addr;
	r->src_port = t->dst_port;
	r->dst_port = t->src_port;
}

/* A socket that is never redirected keeps its node-local peer out of the
 * sockhash as well: nothing could be redirected to it, and sk_msg on every
 * send of that peer would only cost. The active end establishes first (it
 * sees the SYN-ACK before the passive end sees the final ACK), so it leaves
 * a note under the passive end's tuple, which that end takes. */
static __always_inline bool kept_out_of_sockhash(struct bpf_sock_ops *skops,
						 const struct sluice_tuple4 *t,
						 const struct sluice_sock_state *st)
{
	struct sluice_tuple4 peer;
	__u8 one = 1;

	if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    bpf_map_delete_elem(&sluice_noredir, t) == 0) {
		cnt_inc(SLUICE_CNT_SOCKHASH_KEPT_OUT);
		return true;
	}
	if (!st || !(st->flags & SLUICE_SOCK_NO_REDIRECT))
		return false;
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		reverse_tuple(t, &peer);
		bpf_map_update_elem(&sluice_noredir, &peer, &one, BPF_ANY);
	}
	return true;
}

/* Its close forgets a note the peer never took (a peer outside the tree). */
static __always_inline void noredir_on_close(struct bpf_sock_ops *skops,
					     const struct sluice_tuple4 *t)
{
	struct sluice_sock_state *st = sock_state(skops->sk);
	struct sluice_tuple4 peer;

	if (!st || !(st->flags & SLUICE_SOCK_NO_REDIRECT))
		return;
	reverse_tuple(t, &peer);
	bpf_map_delete_elem(&sluice_noredir, &peer);
}

static __always_inline void sockhash_on_established(struct bpf_sock_ops *skops,
						    struct sluice_tuple4 *t)
{
	struct sluice_config *cfg = config_get();

	if (!cfg || !(cfg->flags & SLUICE_CFG_REDIRECT) || !is_node_local(t))
		return;
	if (kept_out_of_sockhash(skops, t, sock_state(skops->sk)))
		return;
	if (bpf_sock_hash_update(skops, &sluice_socks, t, BPF_NOEXIST) == 0)
		cnt_inc(SLUICE_CNT_SOCKHASH_ADDED);
	else
		cnt_inc(SLUICE_CNT_SOCKHASH_FAILED);
}

#endif /* SLUICE_BPF_LIB_REDIRECT_H */
