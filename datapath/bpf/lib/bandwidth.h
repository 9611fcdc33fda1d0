/* Per-pod egress bandwidth on the node's LAN interface (Cilium's Bandwidth
 * Manager, kubernetes.io/egress-bandwidth), as stated in
 * twin/semantics/bandwidth.py and programmed by datapath/bandwidth.py.
 *
 *   bw_pods   pod IPv4 (network order) -> struct bw_info; one entry per pod
 *             of this node whose limit is enforced, nothing for the others
 *
 * Looked up by the packet's IPv4 source at tc egress, BEFORE the north-south
 * reverse NAT rewrites that source (lib/nodeport.h ns_egress).  Two variants,
 * chosen at compile time by BW_MODE (-D flag from datapath.constants):
 *
 *   BW_MODE_HTB  skb->priority = classid: the device's root HTB qdisc puts
 *                the packet into the pod's leaf class (rate = ceil = bps);
 *                for kernels without sch_fq.
 *   BW_MODE_EDT  Cilium's earliest departure time (edt_sched_departure):
 *                skb->tstamp is the packet's departure time at the pod's
 *                rate, the device's root fq qdisc holds it until then;
 *                a departure beyond the drop horizon drops the packet.
 */
#ifndef __TWIN_BANDWIDTH_H
#define __TWIN_BANDWIDTH_H

#include "lib/common.h"

#if !defined(BW_MAP_SIZE) || !defined(BW_MODE) || !defined(BW_MODE_HTB) || !defined(BW_MODE_EDT) || \
    !defined(BW_NSEC_PER_SEC)
#error "bandwidth constants missing: compile through datapath.loader.HostProgram (host_cflags)"
#endif

struct bw_info {
	__u64 bps;            /* bytes per second (Cilium: uint64(bits/8)) */
	__u64 t_last;         /* EDT: departure time of the pod's last packet; written here only */
	__u64 t_horizon_drop; /* EDT: a departure this far (ns) beyond now drops the packet */
	__u32 classid;        /* HTB: major:minor of the pod's leaf class */
	__u32 pad;
};

BPF_HASH(bw_pods, __u32, struct bw_info, BW_MAP_SIZE);

/* one load and one store of t_last (several CPUs update it, as in Cilium) */
#define BW_READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define BW_WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

#define BW_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))

/* TC_ACT_SHOT if the packet is dropped (EDT horizon), otherwise TC_ACT_UNSPEC
 * with the packet classified (HTB) or stamped (EDT) when its source is a
 * limited pod, untouched when not. */
static __always_inline int bw_egress(struct __sk_buff *skb)
{
	struct bw_info *info;
	__u32 saddr;

	if (skb->protocol != dp_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, BW_SADDR_OFF, &saddr, sizeof(saddr)) < 0)
		return TC_ACT_UNSPEC;
	info = bw_pods.lookup(&saddr);
	if (!info)
		return TC_ACT_UNSPEC;
#if BW_MODE == BW_MODE_HTB
	skb->priority = info->classid;
	return TC_ACT_UNSPEC;
#elif BW_MODE == BW_MODE_EDT
	{
		__u64 now = bpf_ktime_get_ns();
		__u64 t = skb->tstamp, t_next, delay, bps = info->bps;

		if (!bps)
			return TC_ACT_UNSPEC;
		if (t < now)
			t = now;
		/* the same bytes the qdisc counts: the packet on the wire (qdisc_pkt_len) */
		delay = ((__u64)skb->wire_len) * BW_NSEC_PER_SEC / bps;
		t_next = BW_READ_ONCE(info->t_last) + delay;
		if (t_next <= t) {
			BW_WRITE_ONCE(info->t_last, t);
			return TC_ACT_UNSPEC;
		}
		if (t_next - now >= info->t_horizon_drop)
			return TC_ACT_SHOT;
		BW_WRITE_ONCE(info->t_last, t_next);
		skb->tstamp = t_next;
		return TC_ACT_UNSPEC;
	}
#else
#error "BW_MODE must be BW_MODE_HTB or BW_MODE_EDT"
#endif
}

#endif
