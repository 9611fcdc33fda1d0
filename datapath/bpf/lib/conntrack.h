/* conntrack map: per-node, direction-scoped connection entries.
 *
 * An entry (tuple, D) is created by the hook of direction D when policy
 * allows a new flow.  At a hook of direction D a packet is
 *   established  if (tuple, D) exists,
 *   reply        if (reverse(tuple), !D) exists: the flow this endpoint
 *                opened (egress) or accepted (ingress) answers back,
 *   new          otherwise (policy decides).
 * Addresses identify the endpoint, so one map per node serves all its pods;
 * on one node a pod-to-pod flow creates (t, EGRESS) at the client and
 * (t, INGRESS) at the server, and both policies are checked.
 */
#ifndef __TWIN_CONNTRACK_H
#define __TWIN_CONNTRACK_H

#include "lib/common.h"

struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 direction;
	__u16 pad;
};

struct ct_value {
	__u64 last_seen_ns;
	__u32 rule_ref;
	__u32 packets;
};

BPF_TABLE("lru_hash", struct ct_key, struct ct_value, conntrack, MAX_CONNTRACK);

enum ct_status {
	CT_NEW = 0,
	CT_ESTABLISHED = 1,
	CT_REPLY = 2,
};

static __always_inline void ct_touch(struct ct_value *val)
{
	val->last_seen_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&val->packets, 1);
}

/* The forward key of a tuple as seen at a hook of the given direction. */
static __always_inline void ct_fill_key(struct ct_key *key, const struct flow_tuple *t,
					__u8 direction)
{
	key->saddr = t->saddr;
	key->daddr = t->daddr;
	key->sport = t->sport;
	key->dport = t->dport;
	key->protocol = t->protocol;
	key->direction = direction;
}

static __always_inline enum ct_status ct_lookup(const struct flow_tuple *t,
						__u8 direction)
{
	struct ct_key key = {};
	struct ct_value *val;

	ct_fill_key(&key, t, direction);
	val = conntrack.lookup(&key);
	if (val) {
		ct_touch(val);
		return CT_ESTABLISHED;
	}

	key.saddr = t->daddr;
	key.daddr = t->saddr;
	key.sport = t->dport;
	key.dport = t->sport;
	key.direction = direction == DIRECTION_INGRESS ? DIRECTION_EGRESS
						      : DIRECTION_INGRESS;
	val = conntrack.lookup(&key);
	if (val) {
		ct_touch(val);
		return CT_REPLY;
	}
	return CT_NEW;
}

static __always_inline void ct_create(const struct flow_tuple *t,
				      __u8 direction, __u32 rule_ref)
{
	struct ct_key key = {};
	struct ct_value val = {};

	ct_fill_key(&key, t, direction);
	val.last_seen_ns = bpf_ktime_get_ns();
	val.rule_ref = rule_ref;
	val.packets = 1;
	conntrack.update(&key, &val);
}

#endif
