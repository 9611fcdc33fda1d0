/* tc programs for the node's LAN interface(s), clsact direct-action.
 *
 *   from_netdev  tc ingress: ARP responder (lib/l2_responder.h), then
 *                north-south load-balancing and NAT replies (lib/nodeport.h)
 *   to_netdev    tc egress: per-pod egress bandwidth (lib/bandwidth.h, on the
 *                pod's own source address), then reverse NAT of local
 *                backends' replies
 *
 * Everything that is neither ARP for a responder entry nor traffic of a
 * north-south frontend passes untouched, with TC_ACT_UNSPEC (HOST_PASS), so
 * another component's filter at a later priority on the same interface
 * still runs.  Attached at prio HOST_FILTER_PRIO (datapath/attach.py).
 */
#include "lib/common.h"
#include "lib/lb.h"
#include "lib/l2_responder.h"
#include "lib/nodeport.h"
#include "lib/bandwidth.h"

/* A physical NIC drops unicast frames for another MAC in hardware, so Cilium's
 * from-netdev program never sees them.  A veth delivers every frame and marks
 * those PACKET_OTHERHOST (a bridge floods unknown unicast, e.g. to a node that
 * crashed): leave them to the kernel, which drops them, as the NIC would. */
#define HOST_PACKET_OTHERHOST 3

int from_netdev(struct __sk_buff *skb)
{
	int ret;

	if (skb->pkt_type == HOST_PACKET_OTHERHOST)
		return HOST_PASS;
	ret = l2_respond(skb);

	if (ret != HOST_PASS)
		return ret;
	return ns_ingress(skb);
}

int to_netdev(struct __sk_buff *skb)
{
	/* before ns_egress: a local backend's reply still has its pod's source */
	int ret = bw_egress(skb);

	if (ret != HOST_PASS)
		return ret;
	return ns_egress(skb);
}
