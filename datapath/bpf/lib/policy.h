/* policy map: (endpoint, direction, peer, protocol, port prefix) -> verdict.
 *
 * Prefix lengths (bits of key data after prefixlen):
 *   64        endpoint + direction: direction not enforced, allow all
 *   96        + peer: any protocol, any port (L3 only)
 *   112 + p   + protocol + p bits of the port (p = 0: all ports)
 */
#ifndef __TWIN_POLICY_H
#define __TWIN_POLICY_H

#include "lib/common.h"

struct policy_key {
	__u32 prefixlen;
	__u32 ep_identity;
	__u8 direction;
	__u8 pad0[3];
	__u32 peer_identity;
	__u8 protocol;
	__u8 pad1;
	__u16 dport;  /* network order */
};

struct policy_value {
	__u8 verdict;  /* MAP_VERDICT_* */
	__u8 pad;
	__u16 drop_reason;
	__u32 rule_ref;
};

BPF_LPM_TRIE(policy, struct policy_key, struct policy_value, MAX_POLICY);

struct policy_decision {
	__u16 drop_reason;  /* 0 = allowed */
	__u32 rule_ref;
};

static __always_inline struct policy_decision
policy_check(__u32 ep_identity, __u8 direction, __u32 peer_identity,
	     __u8 protocol, __u16 dport)
{
	struct policy_decision dec = { .drop_reason = DROP_REASON_POLICY_DENIED,
				       .rule_ref = 0 };
	struct policy_key key = {};
	struct policy_value *val;

	key.prefixlen = 128;
	key.ep_identity = ep_identity;
	key.direction = direction;
	key.peer_identity = peer_identity;
	key.protocol = protocol;
	key.dport = dport;

	val = policy.lookup(&key);
	if (!val)
		return dec;
	dec.rule_ref = val->rule_ref;
	if (val->verdict == MAP_VERDICT_ALLOW)
		dec.drop_reason = 0;
	else if (val->verdict == MAP_VERDICT_DENY)
		dec.drop_reason = val->drop_reason ? val->drop_reason
						   : DROP_REASON_POLICY_DENY;
	else if (val->verdict == MAP_VERDICT_REDIRECT_L7)
		dec.drop_reason = DROP_REASON_PROXY_UNSUPPORTED;
	return dec;
}

#endif
