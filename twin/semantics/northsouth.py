"""North-south traffic to a LoadBalancer IP, as Cilium's BPF NodePort path handles it
(kube-proxy replacement, native routing, ``bpf.lbMode=snat``, the default).

* The packet reaches the node that answered ARP for the LB IP (the lease
  holder, or whichever node the client's ARP cache still names).  Any node
  whose datapath has the frontend load-balances it: LB frontends are
  programmed on every node, whoever holds the lease.
* The receiving node chooses a backend uniformly among the frontend's active
  backends (:func:`twin.semantics.lb.choose`), DNATs to it, and
  - **local backend**: the backend sees the client's own address, so its
    ingress policy sees the client's identity (``world`` for the external host);
  - **remote backend**: the node also SNATs to its own node IP before
    forwarding, so the backend sees the receiving node's IP, whose identity on
    the backend's node is ``remote-node``.
  Replies go back through the receiving node, which reverses both translations.
* A frontend with no active backend drops the packet (the client times out).

Both backends use these functions: the twin to predict, the datapath's
compiler to decide what the host program does (it does the same DNAT/SNAT).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.objects import Cluster
from twin.semantics.tables import LBService, LBTable

#: the frontend kinds the host program serves to traffic arriving on the LAN
NORTH_SOUTH_KINDS = ("LoadBalancer", "ExternalIP")


@dataclass(frozen=True)
class NorthSouthPath:
    """What happens to one connection from ``client_ip`` to a frontend received by ``node``."""

    node: str  # the receiving node
    backend: str | None  # ns/pod, None: no active backend (dropped)
    source_seen: ipaddress.IPv4Address | None  # the source address the backend sees
    snat: bool  # the receiving node SNATed to its own IP (remote backend)


def north_south_frontends(table: LBTable) -> tuple[LBService, ...]:
    """The frontends reachable from outside the cluster (LB IPs and external IPs)."""
    return tuple(s for s in table.services if s.kind in NORTH_SOUTH_KINDS)


def north_south_path(cluster: Cluster, node: str, backend_pod: str | None,
                     client_ip: ipaddress.IPv4Address) -> NorthSouthPath:
    """The path of a connection that ``node`` load-balanced to ``backend_pod``."""
    if backend_pod is None:
        return NorthSouthPath(node, None, None, False)
    pod = cluster.pod(backend_pod)
    if pod.node == node:
        return NorthSouthPath(node, backend_pod, client_ip, False)
    return NorthSouthPath(node, backend_pod, cluster.node(node).ip, True)
