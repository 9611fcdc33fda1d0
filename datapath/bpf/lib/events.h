/* events perf buffer: one flow_event per drop and per new allowed flow. */
#ifndef __TWIN_EVENTS_H
#define __TWIN_EVENTS_H

#include "lib/common.h"

struct flow_event {
	__u64 ts_ns;
	__u32 ifindex;
	__u32 ep_identity;
	__u32 peer_identity;
	__u32 saddr;  /* network order */
	__u32 daddr;  /* network order */
	__u16 sport;  /* network order */
	__u16 dport;  /* network order */
	__u8 protocol;
	__u8 direction;
	__u8 verdict;  /* FLOW_VERDICT_* */
	__u8 is_reply;
	__u16 drop_reason;
	__u16 pad;
	__u32 rule_ref;
};

BPF_PERF_OUTPUT(events);

static __always_inline void
emit_flow_event(struct __sk_buff *skb, const struct flow_tuple *t,
		__u32 ep_identity, __u32 peer_identity, __u8 direction,
		__u8 verdict, __u8 is_reply, __u16 drop_reason, __u32 rule_ref)
{
	struct flow_event ev = {};

	ev.ts_ns = bpf_ktime_get_ns();
	ev.ifindex = skb->ifindex;
	ev.ep_identity = ep_identity;
	ev.peer_identity = peer_identity;
	ev.saddr = t->saddr;
	ev.daddr = t->daddr;
	ev.sport = t->sport;
	ev.dport = t->dport;
	ev.protocol = t->protocol;
	ev.direction = direction;
	ev.verdict = verdict;
	ev.is_reply = is_reply;
	ev.drop_reason = drop_reason;
	ev.rule_ref = rule_ref;
	events.perf_submit(skb, &ev, sizeof(ev));
}

#endif
