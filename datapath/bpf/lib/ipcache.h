/* ipcache map: IPv4 prefix -> security identity (miss = world). */
#ifndef __TWIN_IPCACHE_H
#define __TWIN_IPCACHE_H

#include "lib/common.h"

struct ipcache_key {
	__u32 prefixlen;
	__u32 ip;  /* network order */
};

struct ipcache_value {
	__u32 identity;
};

BPF_LPM_TRIE(ipcache, struct ipcache_key, struct ipcache_value, MAX_IPCACHE);

static __always_inline __u32 resolve_identity(__u32 ip)
{
	struct ipcache_key key = { .prefixlen = 32, .ip = ip };
	struct ipcache_value *val = ipcache.lookup(&key);

	return val ? val->identity : RESERVED_IDENTITY_WORLD;
}

#endif
