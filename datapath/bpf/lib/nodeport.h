/* North-south load-balancing on the node's LAN interface (Cilium's BPF
 * NodePort path for LoadBalancer/external IPs, bpf.lbMode=snat), as stated
 * in twin/semantics/northsouth.py.
 *
 * Frontends and backends are the lb4_* maps of lib/lb.h (this object's own
 * copies, holding only the north-south frontends).  Two more maps:
 *
 *   ns_remote_backends  backend ip -> its node's ip: backends on another
 *                       node; connections to them are also SNATed
 *   ns_nat              one entry per direction of each translated
 *                       connection (LRU):
 *     NAT_DIR_FWD          client -> frontend, at LAN ingress: DNAT to the
 *                          backend (+ SNAT to node_ip:nat_port if remote)
 *     NAT_DIR_REV_EGRESS   local backend -> client, at LAN egress:
 *                          source back to the frontend
 *     NAT_DIR_REV_INGRESS  remote backend -> node_ip:nat_port, at LAN
 *                          ingress: source back to the frontend and
 *                          destination back to the client
 *
 * In an entry's value a zero address or port means "leave it".  Remote
 * connections (and their replies) are sent out of the LAN interface with
 * bpf_redirect_neigh: the kernel's own input path would drop a packet whose
 * source is one of the node's own addresses (martian source).
 */
#ifndef __TWIN_NODEPORT_H
#define __TWIN_NODEPORT_H

#include "lib/common.h"
#include "lib/lb.h"
#include "lib/l2_responder.h"

#if !defined(NAT_DIR_FWD) || !defined(NAT_DIR_REV_EGRESS) || !defined(NAT_DIR_REV_INGRESS) || \
    !defined(NAT_PORT_MIN) || !defined(NAT_PORT_MAX) || !defined(NAT_PORT_TRIES) || \
    !defined(NS_NAT_MAP_SIZE) || !defined(NS_REMOTE_MAP_SIZE) || !defined(HOST_COUNTERS) || \
    !defined(HOST_COUNTER_NS_NEW_LOCAL) || !defined(HOST_COUNTER_NS_NEW_REMOTE) || \
    !defined(HOST_COUNTER_NS_DROP_NO_BACKEND) || !defined(HOST_COUNTER_NS_DROP_NAT_PORTS) || \
    !defined(HOST_COUNTER_NS_DROP_REWRITE)
#error "NAT constants missing: compile through datapath.loader.HostProgram (host_cflags)"
#endif

#define TCP_CSUM_OFF 16
#define UDP_CSUM_OFF 6
#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))

/* bcc 0.26 declares bpf_redirect_neigh with the 5.10 signature (ifindex,
 * params, flags); since 5.11 the kernel's helper takes (ifindex, params,
 * plen, flags).  Declare the kernel's. */
static long (*dp_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

struct ns_nat_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 dir;  /* NAT_DIR_* */
	__u16 pad;
};

struct ns_nat_entry {
	__u32 to_saddr;
	__u32 to_daddr;
	__u16 to_sport;
	__u16 to_dport;
	__u32 packets;
	__u64 last_seen_ns;
};

struct ns_remote_backend {
	__u32 node_ip;
};

BPF_TABLE("lru_hash", struct ns_nat_key, struct ns_nat_entry, ns_nat, NS_NAT_MAP_SIZE);
BPF_HASH(ns_remote_backends, __u32, struct ns_remote_backend, NS_REMOTE_MAP_SIZE);
BPF_ARRAY(host_stats, __u64, HOST_COUNTERS);

static __always_inline void host_count(__u32 counter)
{
	__u64 *c = host_stats.lookup(&counter);

	if (c)
		__sync_fetch_and_add(c, 1);
}

/* A TCP/UDP IPv4 packet: its tuple and where its L4 header starts. */
struct ns_packet {
	struct flow_tuple t;
	__u32 l4_off;
};

/* 1 if the packet is a first-fragment-or-unfragmented IPv4 TCP/UDP packet. */
static __always_inline int ns_parse(struct __sk_buff *skb, struct ns_packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 *ports;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end || eth->h_proto != dp_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	if (ip->protocol != PROTOCOL_TCP && ip->protocol != PROTOCOL_UDP)
		return 0;
	if (ip->frag_off & dp_htons(0x1fff))
		return 0;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;
	ports = (void *)ip + ihl;
	if ((void *)(ports + 2) > data_end)
		return 0;
	p->t.saddr = ip->saddr;
	p->t.daddr = ip->daddr;
	p->t.protocol = ip->protocol;
	p->t.sport = ports[0];
	p->t.dport = ports[1];
	p->l4_off = ETH_HLEN + ihl;
	return 1;
}

static __always_inline void ns_key(struct ns_nat_key *k, __u32 saddr, __u32 daddr, __u16 sport,
				   __u16 dport, __u8 protocol, __u8 dir)
{
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->protocol = protocol;
	k->dir = dir;
}

static __always_inline int ns_rewrite_addr(struct __sk_buff *skb, const struct ns_packet *p,
					   __u32 off, __u32 from, __u32 to)
{
	__u32 csum_off = p->l4_off + (p->t.protocol == PROTOCOL_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);

	if (p->t.protocol == PROTOCOL_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, flags) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline int ns_rewrite_port(struct __sk_buff *skb, const struct ns_packet *p,
					   __u32 off, __u16 from, __u16 to)
{
	__u32 csum_off = p->l4_off + (p->t.protocol == PROTOCOL_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	__u64 flags = sizeof(to);

	if (p->t.protocol == PROTOCOL_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, flags) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + off, &to, sizeof(to), 0);
}

/* Apply an entry's translation to the packet; -1 if the kernel refused a write. */
static __always_inline int ns_apply(struct __sk_buff *skb, const struct ns_packet *p,
				    struct ns_nat_entry *e)
{
	e->last_seen_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&e->packets, 1);
	if (e->to_daddr && ns_rewrite_addr(skb, p, IP_DADDR_OFF, p->t.daddr, e->to_daddr) < 0)
		return -1;
	if (e->to_saddr && ns_rewrite_addr(skb, p, IP_SADDR_OFF, p->t.saddr, e->to_saddr) < 0)
		return -1;
	if (e->to_dport && ns_rewrite_port(skb, p, 2, p->t.dport, e->to_dport) < 0)
		return -1;
	if (e->to_sport && ns_rewrite_port(skb, p, 0, p->t.sport, e->to_sport) < 0)
		return -1;
	return 0;
}

/* The verdict after applying e: remote (SNATed) traffic leaves by the LAN. */
static __always_inline int ns_forward(struct __sk_buff *skb, const struct ns_packet *p,
				      struct ns_nat_entry *e, int snat)
{
	if (ns_apply(skb, p, e) < 0) {
		host_count(HOST_COUNTER_NS_DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	if (snat)
		return dp_redirect_neigh(skb->ifindex, NULL, 0, 0);
	return HOST_PASS;
}

/* A new connection to a frontend: choose a backend, create both entries. */
static __always_inline int ns_new_connection(struct __sk_buff *skb, const struct ns_packet *p)
{
	struct lb4_key key = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	struct ns_nat_key fkey = {}, rkey = {};
	struct ns_nat_entry fwd = {}, rev = {};
	struct host_iface *iface;
	__u32 ifindex = skb->ifindex;
	__u32 backend_id, be_addr;
	__u16 count, be_port, nat_port = 0;
	int i, snat;

	key.address = p->t.daddr;
	key.dport = p->t.dport;
	key.proto = p->t.protocol;
	key.backend_slot = LB_SLOT_MASTER;
	svc = lb4_services.lookup(&key);
	if (!svc)
		return HOST_PASS;  /* not a north-south frontend */
	count = svc->count;
	if (!count)
		goto no_backend;  /* the client times out */
	key.backend_slot = LB_SLOT_FIRST_BACKEND + bpf_get_prandom_u32() % count;
	svc = lb4_services.lookup(&key);
	if (!svc)
		goto no_backend;  /* slot missing: mid-update */
	backend_id = svc->backend_id;
	be = lb4_backends.lookup(&backend_id);
	if (!be || be->flags != BACKEND_STATE_ACTIVE)
		goto no_backend;
	be_addr = be->address;
	be_port = be->port;
	snat = ns_remote_backends.lookup(&be_addr) != NULL;

	fwd.to_daddr = be_addr;
	fwd.to_dport = be_port;
	if (snat) {
		iface = host_ifaces.lookup(&ifindex);
		if (!iface || !iface->node_ip)
			goto nat_ports;  /* no SNAT address on this interface */
		/* NAT port: random in range, claimed with BPF_NOEXIST */
		rev.to_saddr = p->t.daddr;
		rev.to_sport = p->t.dport;
		rev.to_daddr = p->t.saddr;
		rev.to_dport = p->t.sport;
		rev.last_seen_ns = bpf_ktime_get_ns();
#pragma unroll
		for (i = 0; i < NAT_PORT_TRIES; i++) {
			__u16 port = NAT_PORT_MIN + bpf_get_prandom_u32() % (NAT_PORT_MAX - NAT_PORT_MIN + 1);

			ns_key(&rkey, be_addr, iface->node_ip, be_port, dp_htons(port), p->t.protocol,
			       NAT_DIR_REV_INGRESS);
			if (ns_nat.insert(&rkey, &rev) == 0) {
				nat_port = dp_htons(port);
				break;
			}
		}
		if (!nat_port)
			goto nat_ports;
		fwd.to_saddr = iface->node_ip;
		fwd.to_sport = nat_port;
	} else {
		rev.to_saddr = p->t.daddr;
		rev.to_sport = p->t.dport;
		rev.last_seen_ns = bpf_ktime_get_ns();
		ns_key(&rkey, be_addr, p->t.saddr, be_port, p->t.sport, p->t.protocol, NAT_DIR_REV_EGRESS);
		ns_nat.update(&rkey, &rev);
	}
	ns_key(&fkey, p->t.saddr, p->t.daddr, p->t.sport, p->t.dport, p->t.protocol, NAT_DIR_FWD);
	ns_nat.update(&fkey, &fwd);
	host_count(snat ? HOST_COUNTER_NS_NEW_REMOTE : HOST_COUNTER_NS_NEW_LOCAL);
	return ns_forward(skb, p, &fwd, snat);
no_backend:
	host_count(HOST_COUNTER_NS_DROP_NO_BACKEND);
	return TC_ACT_SHOT;
nat_ports:
	host_count(HOST_COUNTER_NS_DROP_NAT_PORTS);
	return TC_ACT_SHOT;
}

/* tc ingress of the LAN interface. */
static __always_inline int ns_ingress(struct __sk_buff *skb)
{
	struct ns_packet p = {};
	struct ns_nat_key key = {};
	struct ns_nat_entry *e;

	if (!ns_parse(skb, &p))
		return HOST_PASS;
	/* a reply from a remote backend to one of our NAT ports */
	ns_key(&key, p.t.saddr, p.t.daddr, p.t.sport, p.t.dport, p.t.protocol, NAT_DIR_REV_INGRESS);
	e = ns_nat.lookup(&key);
	if (e)
		return ns_forward(skb, &p, e, 1);
	/* a packet of a connection already translated */
	key.dir = NAT_DIR_FWD;
	e = ns_nat.lookup(&key);
	if (e)
		return ns_forward(skb, &p, e, e->to_saddr != 0);
	return ns_new_connection(skb, &p);
}

/* tc egress of the LAN interface: replies of local backends. */
static __always_inline int ns_egress(struct __sk_buff *skb)
{
	struct ns_packet p = {};
	struct ns_nat_key key = {};
	struct ns_nat_entry *e;

	if (!ns_parse(skb, &p))
		return HOST_PASS;
	ns_key(&key, p.t.saddr, p.t.daddr, p.t.sport, p.t.dport, p.t.protocol, NAT_DIR_REV_EGRESS);
	e = ns_nat.lookup(&key);
	if (!e)
		return HOST_PASS;
	if (ns_apply(skb, &p, e) < 0) {
		host_count(HOST_COUNTER_NS_DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return HOST_PASS;
}

#endif
