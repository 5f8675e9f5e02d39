/* Capture decisions shared by connect4, getpeername4, getsockopt and sockops:
 * is this process in an enabled cgroup, is this a service VIP, and what the
 * kernel remembered about a captured socket. */
#ifndef SLUICE_BPF_LIB_CAPTURE_H
#define SLUICE_BPF_LIB_CAPTURE_H

#include "lib/common.h"

/* Deeper than any real hierarchy (a Kubernetes container sits at depth 4-5
 * below the cgroup2 root); the walk stops at the first level that does not
 * exist, so the bound only matters for the verifier. */
#define SLUICE_MAX_CGROUP_DEPTH 32

/* True when the current task's cgroup, or one of its ancestors, is in
 * sluice_enabled. Enabling a pod's cgroup therefore covers its containers. */
static __always_inline bool current_cgroup_enabled(void)
{
	for (int level = 0; level < SLUICE_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (id == 0)
			return false;
		if (bpf_map_lookup_elem(&sluice_enabled, &id))
			return true;
	}
	return false;
}

/* Existing state of a socket, or NULL. */
static __always_inline struct sluice_sock_state *sock_state(struct bpf_sock *sk)
{
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sluice_sock, sk, 0, 0);
}

static __always_inline struct sluice_sock_state *sock_state_create(struct bpf_sock *sk)
{
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sluice_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

#endif /* SLUICE_BPF_LIB_CAPTURE_H */
