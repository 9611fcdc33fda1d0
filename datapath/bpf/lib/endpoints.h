/* endpoints map: lxc ifindex -> the local endpoint behind it. */
#ifndef __TWIN_ENDPOINTS_H
#define __TWIN_ENDPOINTS_H

#include "lib/common.h"

struct endpoint_info {
	__u32 ep_identity;
	__u32 ep_ip;  /* network order */
};

BPF_HASH(endpoints, __u32, struct endpoint_info, MAX_ENDPOINTS);

static __always_inline struct endpoint_info *lookup_endpoint(__u32 ifindex)
{
	return endpoints.lookup(&ifindex);
}

#endif
