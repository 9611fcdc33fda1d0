/* tc programs for a pod's host-side veth (lxc*), clsact direct-action.
 *
 *   from_container  tc ingress on lxc: packets leaving the pod  (EGRESS)
 *   to_container    tc egress on lxc:  packets entering the pod (INGRESS)
 *
 * IPv4 only; anything else passes untouched.  Packets on an lxc without an
 * endpoints entry pass and are not reported.
 */
#include "lib/common.h"
#include "lib/endpoints.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/events.h"

/* L4 header prefix shared by TCP, UDP and SCTP: source and destination port. */
struct l4_ports {
	__u16 sport;
	__u16 dport;
};

/* ICMP echo header (request and reply). */
struct icmp_echo {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 id;
	__u16 seq;
};

/* Parse an IPv4 packet into *t.  Returns 0 if the packet is not IPv4.
 * Non-first fragments, truncated L4 headers and other ICMP types get ports 0.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb,
				      struct flow_tuple *t)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto != dp_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->protocol = ip->protocol;
	if (ip->frag_off & dp_htons(0x1fff))  /* not the first fragment */
		return 1;

	l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == PROTOCOL_TCP || ip->protocol == PROTOCOL_UDP ||
	    ip->protocol == PROTOCOL_SCTP) {
		struct l4_ports *ports = l4;

		if ((void *)(ports + 1) <= data_end) {
			t->sport = ports->sport;
			t->dport = ports->dport;
		}
	} else if (ip->protocol == PROTOCOL_ICMP) {
		struct icmp_echo *icmp = l4;

		if ((void *)(icmp + 1) <= data_end &&
		    (icmp->type == ICMP_ECHO_TYPE ||
		     icmp->type == ICMP_ECHOREPLY_TYPE)) {
			/* The echo id plays both ports, so a reply reverses
			 * onto its request. */
			t->sport = icmp->id;
			t->dport = icmp->id;
		}
	}
	return 1;
}

static __always_inline __u16 policy_port(const struct flow_tuple *t)
{
	if (t->protocol == PROTOCOL_TCP || t->protocol == PROTOCOL_UDP ||
	    t->protocol == PROTOCOL_SCTP)
		return t->dport;
	return 0;
}

static __always_inline int handle_lxc(struct __sk_buff *skb, __u8 direction)
{
	struct flow_tuple t = {};
	struct endpoint_info *ep;
	struct policy_decision dec;
	__u32 ep_identity, peer_identity;

	ep = lookup_endpoint(skb->ifindex);
	if (!ep)
		return TC_ACT_OK;
	ep_identity = ep->ep_identity;

	if (!parse_ipv4(skb, &t))
		return TC_ACT_OK;

	if (ct_lookup(&t, direction) != CT_NEW)
		return TC_ACT_OK;

	peer_identity = resolve_identity(direction == DIRECTION_EGRESS ? t.daddr
								       : t.saddr);
	dec = policy_check(ep_identity, direction, peer_identity, t.protocol,
			   policy_port(&t));
	if (dec.drop_reason) {
		emit_flow_event(skb, &t, ep_identity, peer_identity, direction,
				FLOW_VERDICT_DROPPED, 0, dec.drop_reason,
				dec.rule_ref);
		return TC_ACT_SHOT;
	}
	ct_create(&t, direction, dec.rule_ref);
	emit_flow_event(skb, &t, ep_identity, peer_identity, direction,
			FLOW_VERDICT_FORWARDED, 0, 0, dec.rule_ref);
	return TC_ACT_OK;
}

int from_container(struct __sk_buff *skb)
{
	return handle_lxc(skb, DIRECTION_EGRESS);
}

int to_container(struct __sk_buff *skb)
{
	return handle_lxc(skb, DIRECTION_INGRESS);
}
