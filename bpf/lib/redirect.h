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

static __always_inline void sockhash_on_established(struct bpf_sock_ops *skops,
						    struct sluice_tuple4 *t)
{
	struct sluice_config *cfg = config_get();
	struct sluice_sock_state *st;

	if (!cfg || !(cfg->flags & SLUICE_CFG_REDIRECT) || !is_node_local(t))
		return;
	st = sock_state(skops->sk);
	if (st && (st->flags & SLUICE_SOCK_NO_REDIRECT))
		return;
	if (bpf_sock_hash_update(skops, &sluice_socks, t, BPF_NOEXIST) == 0)
		cnt_inc(SLUICE_CNT_SOCKHASH_ADDED);
	else
		cnt_inc(SLUICE_CNT_SOCKHASH_FAILED);
}

#endif /* SLUICE_BPF_LIB_REDIRECT_H */
