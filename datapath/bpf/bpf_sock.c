/* cgroup sock_addr programs: socket load-balancing (kube-proxy replacement).
 *
 *   sock4_connect      BPF_CGROUP_INET4_CONNECT      translate VIP -> backend
 *   sock4_sendmsg      BPF_CGROUP_UDP4_SENDMSG       same, per datagram
 *   sock4_recvmsg      BPF_CGROUP_UDP4_RECVMSG       backend -> VIP (source)
 *   sock4_getpeername  BPF_CGROUP_INET4_GETPEERNAME  backend -> VIP (peer)
 *
 * A frontend without an active backend fails connect()/sendmsg() with
 * EHOSTUNREACH: bpf_set_retval(-EHOSTUNREACH), then return SOCK_HOOK_REJECT
 * (kernel >= 5.19; bpf_set_retval needs the program loaded with its expected
 * attach type).  recvmsg4/getpeername4 cannot reject and always proceed.
 */
#include "lib/common.h"
#include "lib/lb.h"

#if !defined(SOCK_HOOK_REJECT) || !defined(SOCK_HOOK_PROCEED) || \
    !defined(ERRNO_EHOSTUNREACH)
#error "socket hook constants missing: compile through datapath.loader.SockProgram"
#endif

static __always_inline int sock4_forward(struct bpf_sock_addr *ctx)
{
	if (lb4_xlate_fwd(ctx) == LB_XLATE_NO_BACKEND) {
		bpf_set_retval(-ERRNO_EHOSTUNREACH);
		return SOCK_HOOK_REJECT;
	}
	return SOCK_HOOK_PROCEED;
}

int sock4_connect(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	lb4_xlate_rev(ctx);
	return SOCK_HOOK_PROCEED;
}

int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	lb4_xlate_rev(ctx);
	return SOCK_HOOK_PROCEED;
}
