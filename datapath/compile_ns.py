"""Pure compiler for the host program on a node's LAN interface(s).

* :func:`compile_north_south`  the north-south frontends of an LB table ->
  the host program's ``lb4_*`` maps (the socket LB's compiler, on the
  frontends :func:`twin.semantics.northsouth.north_south_frontends` keeps)
  and ``ns_remote_backends`` (backends the receiving node SNATs to, as
  :func:`twin.semantics.northsouth.north_south_path` says)
* :func:`plan_host`  what a node's host program must hold: the interfaces
  to attach (the node's uplink, plus the interfaces the L2 announcements
  select on this node), the ARP responder entries for the leases this node
  holds (every IP of the announcement x every selected interface of this
  node, as Cilium programs ``cilium_l2_responder_v4``), and the north-south
  frontends.

No kernel, no I/O: tested in the pure tier.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Collection, Mapping

from twin.model.objects import Cluster
from twin.semantics.l2 import Announcement, announcements
from twin.semantics.lb import lb_table
from twin.semantics.lbipam import Allocation, allocate
from twin.semantics.northsouth import north_south_frontends, north_south_path
from twin.semantics.tables import LBService, LBTable

from datapath.compile_lb import LBIds, LBMaps, compile_lb, lb_dump_lines
from datapath.errors import LBCompileError

__all__ = ["NSMaps", "HostPlan", "compile_north_south", "plan_host", "ns_dump_lines"]

#: a client address for north_south_path: only its SNAT decision is used here
_ANY_CLIENT = ipaddress.IPv4Address("0.0.0.0")


@dataclass(frozen=True)
class NSMaps:
    """Desired contents of the host program's maps for north-south traffic."""

    lb: LBMaps  # lb4_services / lb4_backends / lb4_reverse_nat (north-south frontends only)
    remote: Mapping[ipaddress.IPv4Address, ipaddress.IPv4Address]  # backend ip -> its node's ip


def compile_north_south(frontends: LBTable | tuple[LBService, ...], cluster: Cluster, node: str,
                        ids: LBIds | None = None) -> NSMaps:
    """The host program's maps on ``node`` for the north-south frontends of ``frontends``.

    ``frontends`` may be the whole LB table: frontends of other kinds
    (ClusterIP) are left out here.  A backend is *remote* (SNATed) when the
    semantics says the receiving node SNATs to it, i.e. its pod is on another
    node."""
    table = frontends if isinstance(frontends, LBTable) else LBTable(tuple(frontends))
    ns = LBTable(north_south_frontends(table))
    try:
        cluster.node(node)
    except KeyError as exc:
        raise LBCompileError(f"north-south compile: node {node!r} is not in the cluster") from exc
    remote: dict[ipaddress.IPv4Address, ipaddress.IPv4Address] = {}
    for fe in ns.services:
        for be in fe.backends:
            try:
                pod = cluster.pod(be.pod)
            except KeyError as exc:
                raise LBCompileError(f"service {fe.service}: backend pod {be.pod!r} is not in the cluster") from exc
            path = north_south_path(cluster, node, be.pod, _ANY_CLIENT)
            if path.snat:
                remote[ipaddress.IPv4Address(be.ip)] = cluster.node(pod.node).ip
    return NSMaps(compile_lb(ns, ids), remote)


@dataclass(frozen=True)
class HostPlan:
    """What one node's host program must hold."""

    node: str
    node_ip: ipaddress.IPv4Address
    interfaces: tuple[str, ...]  # to attach to: the uplink first
    responders: frozenset[tuple[ipaddress.IPv4Address, str]]  # (LB/external IP, interface)
    frontends: tuple[LBService, ...]  # north-south frontends
    announcements: Mapping[str, Announcement]


def plan_host(cluster: Cluster, node: str, held_leases: Collection[str], *,
              allocation: Allocation | None = None, table: LBTable | None = None,
              endpoint_states: Mapping[str, str] | None = None) -> HostPlan:
    """The host program's desired state on ``node``, which holds ``held_leases``
    (lease names, ``cilium-l2announce-<ns>-<svc>``).

    A lease only yields responder entries while its service is announced and
    this node is one of its candidates (a lease held for a service that is no
    longer announced, or no longer by this node, answers nothing)."""
    try:
        me = cluster.node(node)
    except KeyError as exc:
        raise LBCompileError(f"host plan: node {node!r} is not in the cluster") from exc
    alloc = allocation if allocation is not None else allocate(cluster)
    anns = announcements(cluster, alloc)
    held = set(held_leases)
    interfaces = [me.uplink]
    responders: set[tuple[ipaddress.IPv4Address, str]] = set()
    for ann in anns.values():
        if not ann.announced or node not in ann.interfaces:
            continue
        ifaces = ann.interfaces[node]
        interfaces += [i for i in ifaces if i not in interfaces]
        if ann.lease in held:
            responders |= {(ipaddress.IPv4Address(ip), i) for ip in ann.ips for i in ifaces}
    lb = table if table is not None else lb_table(cluster, endpoint_states, alloc)
    return HostPlan(node, me.ip, tuple(interfaces), frozenset(responders), north_south_frontends(lb), anns)


def ns_dump_lines(maps: NSMaps) -> list[str]:
    """Sorted one-line-per-entry dump (for golden-style tests and messages)."""
    lines = lb_dump_lines(maps.lb.services, maps.lb.backends, maps.lb.revnat)
    lines += [f"remote {ip} via node {node_ip}" for ip, node_ip in sorted(maps.remote.items())]
    return lines
