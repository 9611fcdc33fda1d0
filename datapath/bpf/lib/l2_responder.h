/* ARP responder for L2 announcements (Cilium's cilium_l2_responder_v4).
 *
 *   l2_responder  (ip, ifindex) -> responses sent; an entry means "this node
 *                 answers who-has ip on that interface" (it holds the lease)
 *   host_ifaces   ifindex -> the interface's MAC and the node's IP, written
 *                 when the host program is attached to the interface
 *
 * An ARP request (Ethernet/IPv4, op 1) for an IP with an entry for the
 * ingress ifindex is turned into the reply in place and sent back out of the
 * same interface.  Gratuitous requests (sender IP == target IP) are not
 * answered; everything else is left to the kernel.
 */
#ifndef __TWIN_L2_RESPONDER_H
#define __TWIN_L2_RESPONDER_H

#include "lib/common.h"

#if !defined(L2_RESPONDER_MAP_SIZE) || !defined(HOST_IFACES_MAP_SIZE)
#error "host constants missing: compile through datapath.loader.HostProgram (host_cflags)"
#endif

/* "Not ours, carry on": TC_ACT_UNSPEC lets a later filter on the same hook
 * (another component's, e.g. bandwidth EDT on the uplink) still see the
 * packet; at the end of the chain the kernel treats it as TC_ACT_OK. */
#define HOST_PASS TC_ACT_UNSPEC

#define ETH_P_ARP_ 0x0806
#define ARPHRD_ETHER_ 1
#define ARPOP_REQUEST_ 1
#define ARPOP_REPLY_ 2

struct l2_responder_key {
	__u32 ip;  /* network order */
	__u32 ifindex;
};

struct l2_responder_stats {
	__u64 responses_sent;
};

struct host_iface {
	__u8 mac[6];
	__u16 pad;
	__u32 node_ip;  /* network order */
};

/* The ARP payload for Ethernet/IPv4. */
struct arp_eth_ipv4 {
	__u16 htype;
	__u16 ptype;
	__u8 hlen;
	__u8 plen;
	__u16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

BPF_HASH(l2_responder, struct l2_responder_key, struct l2_responder_stats, L2_RESPONDER_MAP_SIZE);
BPF_HASH(host_ifaces, __u32, struct host_iface, HOST_IFACES_MAP_SIZE);

/* HOST_PASS if the packet is not ARP for an entry; otherwise the redirect. */
static __always_inline int l2_respond(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp;
	struct l2_responder_key key = {};
	struct l2_responder_stats *stats;
	struct host_iface *iface;
	__u32 ifindex = skb->ifindex;
	__u32 sip, tip;
	__u8 requester[6];

	if ((void *)(eth + 1) > data_end)
		return HOST_PASS;
	if (eth->h_proto != dp_htons(ETH_P_ARP_))
		return HOST_PASS;
	arp = (void *)(eth + 1);
	if ((void *)(arp + 1) > data_end)
		return HOST_PASS;
	if (arp->htype != dp_htons(ARPHRD_ETHER_) || arp->ptype != dp_htons(ETH_P_IP) ||
	    arp->hlen != 6 || arp->plen != 4 || arp->op != dp_htons(ARPOP_REQUEST_))
		return HOST_PASS;
	__builtin_memcpy(&sip, arp->spa, 4);
	__builtin_memcpy(&tip, arp->tpa, 4);
	if (sip == tip)  /* gratuitous: an announcement, not a question */
		return HOST_PASS;

	key.ip = tip;
	key.ifindex = ifindex;
	stats = l2_responder.lookup(&key);
	if (!stats)
		return HOST_PASS;
	iface = host_ifaces.lookup(&ifindex);
	if (!iface)
		return HOST_PASS;

	__builtin_memcpy(requester, arp->sha, 6);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, iface->mac, 6);
	arp->op = dp_htons(ARPOP_REPLY_);
	__builtin_memcpy(arp->tha, requester, 6);
	__builtin_memcpy(arp->tpa, &sip, 4);
	__builtin_memcpy(arp->sha, iface->mac, 6);
	__builtin_memcpy(arp->spa, &tip, 4);
	__sync_fetch_and_add(&stats->responses_sent, 1);
	return bpf_redirect(ifindex, 0);
}

#endif
