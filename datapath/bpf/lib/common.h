/* Shared definitions for the lxc datapath.
 *
 * Every numeric constant that Python also knows (directions, verdicts, drop
 * reasons, reserved identities, protocols) arrives as a -D flag built from
 * twin.model.enums by datapath/loader.py; this header only checks they exist.
 */
#ifndef __TWIN_COMMON_H
#define __TWIN_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

#if !defined(DIRECTION_INGRESS) || !defined(DIRECTION_EGRESS) || \
    !defined(MAP_VERDICT_ALLOW) || !defined(MAP_VERDICT_DENY) || \
    !defined(MAP_VERDICT_REDIRECT_L7) || \
    !defined(DROP_REASON_POLICY_DENIED) || !defined(DROP_REASON_POLICY_DENY) || \
    !defined(DROP_REASON_PROXY_UNSUPPORTED) || \
    !defined(RESERVED_IDENTITY_WORLD) || !defined(PROTOCOL_ICMP) || \
    !defined(PROTOCOL_TCP) || !defined(PROTOCOL_UDP) || \
    !defined(PROTOCOL_SCTP) || !defined(FLOW_VERDICT_FORWARDED) || \
    !defined(FLOW_VERDICT_DROPPED)
#error "constants missing: compile through datapath.loader (cflags from twin.model.enums)"
#endif

#ifndef MAX_ENDPOINTS
#define MAX_ENDPOINTS 1024
#endif
#ifndef MAX_IPCACHE
#define MAX_IPCACHE 16384
#endif
#ifndef MAX_POLICY
#define MAX_POLICY 65536
#endif
#ifndef MAX_CONNTRACK
#define MAX_CONNTRACK 65536
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define dp_htons(x) ((__u16)__builtin_bswap16(x))
#else
#define dp_htons(x) ((__u16)(x))
#endif

#define ICMP_ECHOREPLY_TYPE 0
#define ICMP_ECHO_TYPE 8

/* The 5-tuple of one packet; ports and addresses in network byte order. */
struct flow_tuple {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
};

#endif
