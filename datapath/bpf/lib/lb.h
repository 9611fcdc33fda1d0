/* Socket load-balancing (IPv4), modelled on Cilium's lb4 maps.
 *
 *   lb4_services     (frontend ip, port, slot, proto) -> service / backend slot
 *                    slot LB_SLOT_MASTER: count = active backends, rev_nat_index
 *                    slots LB_SLOT_FIRST_BACKEND.. : one active backend id each
 *   lb4_backends     backend id -> backend address, port, proto, state flags
 *   lb4_reverse_nat  rev_nat_index -> frontend address and port
 *   lb4_sock_revnat  (socket cookie, backend ip, port) -> frontend, written on
 *                    every translation, read by recvmsg4/getpeername4
 *
 * Addresses and ports are in network byte order everywhere.  Every constant
 * (slots, states, sizes, socket types) arrives as a -D flag from
 * datapath/constants.py (sock_cflags).
 */
#ifndef __TWIN_LB_H
#define __TWIN_LB_H

#include "lib/common.h"

#if !defined(BACKEND_STATE_ACTIVE) || !defined(LB_SLOT_MASTER) || \
    !defined(LB_SLOT_FIRST_BACKEND) || !defined(SOCK_TYPE_STREAM) || \
    !defined(SOCK_TYPE_DGRAM) || !defined(PROTOCOL_ANY) || \
    !defined(LB_MAP_SIZE_SERVICES) || !defined(LB_MAP_SIZE_BACKENDS) || \
    !defined(LB_MAP_SIZE_REVNAT) || !defined(LB_MAP_SIZE_SOCK_REVNAT)
#error "LB constants missing: compile through datapath.loader.SockProgram (sock_cflags)"
#endif

struct lb4_key {
	__u32 address;
	__u16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 pad[3];
};

struct lb4_service {
	__u32 backend_id;     /* slots >= LB_SLOT_FIRST_BACKEND */
	__u16 count;          /* master: number of active backends */
	__u16 rev_nat_index;  /* master */
};

struct lb4_backend {
	__u32 address;
	__u16 port;
	__u8 proto;
	__u8 flags;  /* BACKEND_STATE_* */
};

struct lb4_reverse_nat {
	__u32 address;
	__u16 port;
	__u16 pad;
};

struct lb4_sock_revnat_key {
	__u64 cookie;
	__u32 address;
	__u16 port;
	__u16 pad;
};

struct lb4_sock_revnat_value {
	__u32 address;
	__u16 port;
	__u16 rev_nat_index;
};

BPF_HASH(lb4_services, struct lb4_key, struct lb4_service, LB_MAP_SIZE_SERVICES);
BPF_HASH(lb4_backends, __u32, struct lb4_backend, LB_MAP_SIZE_BACKENDS);
BPF_HASH(lb4_reverse_nat, __u16, struct lb4_reverse_nat, LB_MAP_SIZE_REVNAT);
BPF_TABLE("lru_hash", struct lb4_sock_revnat_key, struct lb4_sock_revnat_value,
	  lb4_sock_revnat, LB_MAP_SIZE_SOCK_REVNAT);

/* Outcome of a forward translation attempt. */
enum lb_xlate {
	LB_XLATE_NONE,        /* not a service: leave the address alone */
	LB_XLATE_DONE,        /* rewritten to a backend */
	LB_XLATE_NO_BACKEND,  /* a service without an active backend */
};

/* The L4 protocol of the socket behind ctx, or PROTOCOL_ANY when the socket
 * LB does not translate it (only TCP stream and UDP datagram sockets). */
static __always_inline __u8 sock_l4_proto(struct bpf_sock_addr *ctx)
{
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;

	if (type == SOCK_TYPE_STREAM && protocol == PROTOCOL_TCP)
		return PROTOCOL_TCP;
	if (type == SOCK_TYPE_DGRAM && protocol == PROTOCOL_UDP)
		return PROTOCOL_UDP;
	return PROTOCOL_ANY;
}

/* connect4 / sendmsg4: if (user_ip4, user_port, proto) is a frontend, pick a
 * uniformly random active backend, rewrite the destination to it and record
 * the reverse translation for this socket. */
static __always_inline enum lb_xlate lb4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct lb4_key key = {};
	struct lb4_sock_revnat_key rkey = {};
	struct lb4_sock_revnat_value rval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id;
	__u16 count, rev_nat_index;
	__u8 proto = sock_l4_proto(ctx);

	if (proto == PROTOCOL_ANY)
		return LB_XLATE_NONE;
	key.address = ctx->user_ip4;
	key.dport = (__u16)ctx->user_port;
	key.proto = proto;
	key.backend_slot = LB_SLOT_MASTER;
	svc = lb4_services.lookup(&key);
	if (!svc)
		return LB_XLATE_NONE;
	count = svc->count;
	rev_nat_index = svc->rev_nat_index;
	if (!count)
		return LB_XLATE_NO_BACKEND;

	key.backend_slot = LB_SLOT_FIRST_BACKEND + bpf_get_prandom_u32() % count;
	svc = lb4_services.lookup(&key);
	if (!svc)
		return LB_XLATE_NO_BACKEND;  /* slot missing: mid-update, treat as none */
	backend_id = svc->backend_id;
	be = lb4_backends.lookup(&backend_id);
	if (!be || be->flags != BACKEND_STATE_ACTIVE)
		return LB_XLATE_NO_BACKEND;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = be->address;
	rkey.port = be->port;
	rval.address = key.address;
	rval.port = key.dport;
	rval.rev_nat_index = rev_nat_index;
	lb4_sock_revnat.update(&rkey, &rval);

	ctx->user_ip4 = be->address;
	ctx->user_port = (__u32)be->port;
	return LB_XLATE_DONE;
}

/* recvmsg4 / getpeername4: report the frontend instead of the backend when
 * this socket's destination was translated. */
static __always_inline void lb4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_sock_revnat_key rkey = {};
	struct lb4_sock_revnat_value *rval;

	if (sock_l4_proto(ctx) == PROTOCOL_ANY)
		return;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__u16)ctx->user_port;
	rval = lb4_sock_revnat.lookup(&rkey);
	if (!rval)
		return;
	ctx->user_ip4 = rval->address;
	ctx->user_port = (__u32)rval->port;
}

#endif
