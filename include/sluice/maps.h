/* Keys and values of every BPF map Sluice shares between the kernel programs
 * (bpf/<hook>.bpf.c) and userspace (userspace/bpf/). This file is the ONLY
 * definition of these layouts: both sides include it, and
 * userspace/bpf/maps_check.h pins sizes and offsets with static_assert.
 *
 * Rules: C only (it is compiled by clang -target bpf and by g++), fixed-width
 * __u8/__u16/__u32/__u64 types, every hole filled by an explicit _pad field,
 * byte order written next to each multi-byte field.
 *
 * Map names (as pinned, as in the skeletons; the kernel keeps 15 characters)
 * and who writes them:
 *   sluice_cnt        kernel    per-CPU counters, enum sluice_counter
 *   sluice_peers      kernel    per remote endpoint: struct sluice_conn_stats
 *   sluice_svcstat    kernel    per captured service VIP:port: sluice_conn_stats
 *   sluice_config     daemon    one struct sluice_config (where captures go)
 *   sluice_enabled    sluicectl cgroup ids whose processes are captured
 *   sluice_services   daemon    VIP:port of every ServiceEntry address
 *   sluice_endpts     daemon    endpoint address -> id and health
 *   sluice_origdst    kernel    client end of a captured connection -> VIP:port
 *   sluice_sock       kernel    per-socket state (socket local storage)
 *   sluice_socks      kernel    node-local sockets for sk_msg redirection
 *   sluice_l4socks    daemon    spliced L4 sockets, by socket cookie
 *   sluice_l4peer     both      socket cookie -> struct sluice_l4pair (the
 *                               daemon pairs, the verdict counts and holds)
 *   sluice_l4copy     daemon    source cookie -> struct sluice_l4copy
 *   sluice_noredir    kernel    passive ends kept out of sluice_socks
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

/* BPF objects include vmlinux.h first, which already defines __u32 and friends;
 * pulling <linux/types.h> in as well would redefine them (and needs the host's
 * asm/ headers, which -target bpf does not see). */
#if !defined(__bpf__) && !defined(__BPF__)
#include <linux/types.h>
#endif

/* Index into the "sluice_cnt" per-CPU array. Userspace sums the per-CPU slots.
 * Values are part of the ABI with the loaded programs: append, never renumber. */
enum sluice_counter {
	SLUICE_CNT_OPENED_ACTIVE = 0,  /* connect() completed in the cgroup */
	SLUICE_CNT_OPENED_PASSIVE = 1, /* accept side established in the cgroup */
	SLUICE_CNT_CLOSED = 2,         /* tracked socket reached TCP_CLOSE */
	/* Gauge: +1 on open, -1 (two's complement) on close. The per-CPU slots
	 * wrap individually, their sum modulo 2^64 is exact; read it as signed. */
	SLUICE_CNT_ACTIVE = 3,
	/* Reasons a connection was not (fully) accounted. */
	SLUICE_CNT_CB_FLAGS_FAILED = 4, /* could not enable the state callback: not tracked */
	SLUICE_CNT_PEER_NOT_IPV4 = 5,   /* tracked globally, not in the per-peer map */
	SLUICE_CNT_PEER_MAP_FULL = 6,   /* per-peer entry could not be created */
	SLUICE_CNT_PEER_MISSING = 7,    /* close of a peer whose entry is gone (LRU) */
	/* Capture (cgroup/connect4, getpeername4, getsockopt). */
	SLUICE_CNT_CAPTURED = 8,            /* connect() to a VIP rewritten to the proxy */
	SLUICE_CNT_CAPTURE_NO_STORAGE = 9,  /* VIP connect left alone: no socket storage */
	SLUICE_CNT_PEERNAME_REWRITTEN = 10, /* getpeername() answered with the VIP */
	SLUICE_CNT_ORIGDST_ANSWERED = 11,   /* SO_ORIGINAL_DST answered from the map */
	SLUICE_CNT_ORIGDST_RECORDED = 12,   /* 4-tuple entry written on established */
	SLUICE_CNT_ORIGDST_MAP_FULL = 13,   /* 4-tuple entry could not be written */
	/* Socket redirection (sockops + sk_msg). */
	SLUICE_CNT_SOCKHASH_ADDED = 14,    /* node-local socket inserted into sluice_socks */
	SLUICE_CNT_SOCKHASH_FAILED = 15,   /* insertion refused (full, or not insertable) */
	SLUICE_CNT_MSG_REDIRECTED = 16,    /* sendmsg delivered straight to the peer socket */
	SLUICE_CNT_MSG_REDIRECTED_BYTES = 17,
	SLUICE_CNT_MSG_PASSED = 18,        /* sendmsg left to TCP: peer not in the sockhash */
	/* L4 splice (sk_skb stream verdict on sluice_l4socks). */
	SLUICE_CNT_L4_SPLICED_BYTES = 19,  /* bytes moved socket to socket in the kernel */
	SLUICE_CNT_L4_NO_PEER = 20,        /* skb on a spliced socket without a partner: kept there */
	SLUICE_CNT_L4_HELD = 21,           /* a spliced direction held: its reader fell behind */
	SLUICE_CNT_L4_HELD_BYTES = 22,     /* bytes kept on the source socket for the daemon to copy */
	SLUICE_CNT_SOCKHASH_KEPT_OUT = 23, /* passive end of a never-redirected socket left out */
	SLUICE_CNT_L4_RESUMED = 24,        /* a held direction spliced again (all caught up) */
	SLUICE_CNT_L4_TRIMMED = 25,        /* spliced skb that began with bytes already passed on */
	SLUICE_CNT_L4_TRIMMED_BYTES = 26,  /* those bytes, cut off before the skb went on */
	SLUICE_CNT_L4_BROKEN = 27,         /* a spliced stream the verdict could not keep exact */
	/* A node-local socket moved to TCP for good: its peer had more than
	 * SLUICE_MSG_MAX_QUEUED redirected bytes unread (see sk_msg.bpf.c). */
	SLUICE_CNT_MSG_BACKLOGGED = 28,
	/* Bytes sent through TCP although the peer is in the sockhash: by
	 * sockets moved there, or that used TCP before their peer joined. */
	SLUICE_CNT_MSG_KEPT_ON_TCP_BYTES = 29,
	SLUICE_CNT_MAX = 30,
};

/* An IPv4 endpoint: the key of sluice_peers, sluice_svcstat,
 * sluice_services and sluice_endpts, and the value of sluice_origdst. */
struct sluice_addr_key {
	__u32 addr; /* IPv4 address, network byte order */
	__u16 port; /* TCP port, network byte order */
	__u16 _pad; /* always 0: keys are compared bytewise */
};

/* Connection counters of one endpoint or one service. Updated with atomic
 * adds from any CPU. Bytes are payload bytes: TCP-acknowledged ones, added
 * when the socket closes, plus bytes sk_msg handed straight to the peer
 * socket (those never pass through TCP), added as they move. */
struct sluice_conn_stats {
	__u64 opened;         /* host byte order */
	__u64 closed;         /* host byte order */
	__u64 active;         /* host byte order; signed gauge, two's complement */
	__u64 bytes_sent;     /* host byte order; by the sockets in scope */
	__u64 bytes_received; /* host byte order */
};

/* A TCP connection seen from one of its ends: the key of sluice_socks (the
 * socket whose local end is src) and of sluice_origdst (src = the client). */
struct sluice_tuple4 {
	__u32 src_addr; /* network byte order */
	__u32 dst_addr; /* network byte order */
	__u16 src_port; /* network byte order */
	__u16 dst_port; /* network byte order */
};

/* sluice_config.flags */
#define SLUICE_CFG_CAPTURE (1u << 0)  /* connect4 rewrites VIP connects */
#define SLUICE_CFG_REDIRECT (1u << 1) /* sockops fills sluice_socks for sk_msg */

/* The only entry (key 0) of the "sluice_config" array. */
struct sluice_config {
	__u32 proxy_addr;      /* outbound listener, network byte order */
	__u16 proxy_port;      /* network byte order */
	__u16 _pad0;
	__u64 proxy_cgroup_id; /* the daemon's own cgroup: never captured */
	__u32 flags;           /* SLUICE_CFG_* */
	__u32 _pad1;
};

/* Value of "sluice_enabled" (key: __u64 cgroup id, the cgroup2 inode
 * number). A process is captured when its cgroup or any ancestor is in it. */
struct sluice_enabled {
	__u32 flags; /* reserved, 0 */
	__u32 _pad;
};

/* sluice_service.flags */
#define SLUICE_SVC_L4 (1u << 0) /* a TCP service port: proxied at L4, maybe spliced */

/* Value of "sluice_services" (key: VIP:port from ServiceEntry addresses). */
struct sluice_service {
	__u32 id;    /* daemon-assigned, stable within one config version */
	__u32 flags; /* SLUICE_SVC_* */
};

/* sluice_endpoint.flags */
#define SLUICE_EP_EJECTED (1u << 0) /* outlier detection took it out */

/* Value of "sluice_endpts" (key: endpoint address:port). */
struct sluice_endpoint {
	__u32 id;
	__u32 flags; /* SLUICE_EP_* */
};

/* sluice_sock_state.flags */
#define SLUICE_SOCK_CAPTURED (1u << 0)   /* app end of a captured connection */
#define SLUICE_SOCK_PROXY_SIDE (1u << 1) /* the proxy's accepted end of one */
#define SLUICE_SOCK_COUNTED (1u << 2)    /* opened counted in sluice_svcstat */
/* Never put in sluice_socks: the daemon splices it at L4, and sk_msg would
 * deliver its peer's bytes where the stream verdict cannot see them. Set by
 * the daemon (userspace update keyed by the socket fd) before connect(), or
 * by sockops for the proxy's end of a captured L4 connection. */
#define SLUICE_SOCK_NO_REDIRECT (1u << 3)

/* How many redirected bytes may wait unread in a socket's receive queue
 * (its psock's ingress list) before sk_msg stops redirecting to it. The
 * kernel charges those bytes to the receiver without any per-socket limit,
 * and the sender's call returns as soon as they are queued: a reader that
 * stops reading would otherwise let its peer fill the node's TCP memory.
 * Past the bound the sender's socket moves to TCP, whose window pushes
 * back. One sendmsg may still add its own chunk past the bound (up to 17
 * page-frag elements of at most 32 KiB each, about 544 KiB). */
#define SLUICE_MSG_MAX_QUEUED (4u << 20)

/* sluice_l4pair.held */
#define SLUICE_L4_HELD 1u
/* The daemon pairs the sockets in this state: whatever arrived before the
 * pair was complete must not be overtaken, so the first skb is redirected
 * only if nothing was kept before it; one kept makes it SLUICE_L4_HELD. */
#define SLUICE_L4_STARTING 2u
/* The verdict met an skb whose head it had passed on already and could not
 * cut that head off: it drops everything from then on, and the daemon
 * closes the pair with an error rather than deliver some bytes twice. */
#define SLUICE_L4_BROKEN 3u
/* How much of an skb's head the verdict can cut off (see sk_skb.bpf.c): the
 * kernel helper takes at most 4095 bytes per call. */
#define SLUICE_L4_TRIM_STEP 4095u
#define SLUICE_L4_TRIM_STEPS 128u
/* How far the sk_skb splice may run ahead of the socket it sends out of:
 * bytes given to the destination that its TCP has not yet taken. A
 * redirected skb no longer counts against the source's receive buffer, so
 * without this bound a reader that stops reading would let the sender fill
 * the kernel's memory. Past it the direction is held: see sluice_l4pair. */
#define SLUICE_L4_MAX_AHEAD (16u << 20)

/* Value of "sluice_l4peer" (key: __u64 socket cookie of one spliced end).
 * The daemon writes peer (and zeroes the rest) when it pairs two sockets;
 * after that only the verdict writes it (the socket's verdicts run one at a
 * time; the counters are added atomically all the same).
 *
 * Held: once the destination is SLUICE_L4_MAX_AHEAD behind, bytes stay on
 * this socket, charged to its receive buffer, so TCP pushes back on the
 * sender; the daemon reads them and writes them to the destination itself,
 * after every byte redirected before them (sluice_l4copy says how far it
 * got). The verdict redirects again only when the daemon has passed on every
 * kept byte and the destination's TCP has taken everything, redirected or
 * written: nothing can then be overtaken. */
struct sluice_l4pair {
	__u64 peer;       /* cookie of the socket this one's bytes go out of */
	__u64 redirected; /* host byte order; payload bytes sent to peer so far */
	__u64 kept;       /* host byte order; payload bytes kept here while held */
	__u32 held;       /* SLUICE_L4_HELD, SLUICE_L4_STARTING, SLUICE_L4_BROKEN or 0 */
	__u32 next_seq;   /* TCP sequence after the last byte the verdict passed on */
	__u32 seq_known;  /* next_seq is set (0 until the first skb) */
	__u32 _pad;
};

/* Value of "sluice_l4copy" (key: __u64 cookie of the source socket of a
 * spliced direction). Written by the daemon only, read by the verdict. The
 * daemon writes to the destination only bytes it read back from kept ones,
 * so this is also all it has given the destination itself. */
struct sluice_l4copy {
	__u64 copied; /* host byte order; kept bytes the daemon wrote on */
};

/* Socket local storage ("sluice_sock"): what the kernel remembers about one
 * socket between hooks. */
struct sluice_sock_state {
	struct sluice_addr_key orig; /* the VIP:port the app dialled */
	__u32 flags;                 /* SLUICE_SOCK_* */
	__u32 _pad;
};

#endif /* SLUICE_MAPS_H */
