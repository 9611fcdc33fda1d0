"""Per-concern reconcilers of a node agent.

Each one owns one part of the node's kernel state and says which kinds of
desired-state change concern it (``concerns``); the agent runs, in order,
the reconcilers a change concerns.  New concerns (L2 responders, lease
electors, bandwidth classes, an L7 proxy) are new classes with the same
shape, appended to :attr:`NodeAgent.reconcilers`.
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping, Protocol

from twin.model.objects import Cluster
from twin.semantics.bandwidth import node_limits

from datapath.agent.store import CLUSTER, ENDPOINT_STATES, DesiredState
from datapath.agent.tables import ClusterTables
from datapath.compile_ns import plan_host
from datapath.errors import UnsupportedPolicyError
from datapath.node import EndpointSpec, NodeDatapath
from datapath.reconcile import ReconcileResult
from datapath.socklb import NodeSocketLB

__all__ = ["NodeHost", "Reconciler", "EndpointsReconciler", "IpcacheReconciler", "PolicyReconciler",
           "ServicesReconciler", "HostResult", "reconcile_host", "HostReconciler", "BandwidthReconciler",
           "compile_bandwidth"]


@dataclass(frozen=True)
class NodeHost:
    """What the host gives a node's agent: where its node lives.

    ``lxc_of`` names a local pod's host-side device in the node netns;
    ``cgroup`` is the node's cgroup2 directory (where its pods' processes
    run; the socket LB attaches there); ``pod_netns`` names a pod's network
    namespace (for destroying UDP sockets to removed backends)."""

    name: str
    netns: str
    lxc_of: Callable[[str], str]
    cgroup: Path | None = None
    pod_netns: Callable[[str], str] | None = None


class Reconciler(Protocol):
    name: str
    concerns: frozenset[str]

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        """Make this concern's kernel state implement ``desired``; raise on failure."""
        ...


class EndpointsReconciler:
    """The node's pods: attach the lxc programs to their devices, fill ``endpoints``."""

    name = "endpoints"
    concerns = frozenset({CLUSTER})

    def __init__(self, host: NodeHost, dp: NodeDatapath) -> None:
        self.host, self.dp = host, dp

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        local = [p for p in desired.cluster.pods if p.node == self.host.name]
        devices = {self.host.lxc_of(p.key): p for p in local}
        for gone in sorted(set(self.dp.attached) - set(devices)):
            self.dp.detach(gone)
        self.dp.attach(sorted(devices))
        ids = tables.view.ids
        return self.dp.set_endpoints([EndpointSpec(dev, ids.pod_identity(p), p.ip) for dev, p in devices.items()])


class IpcacheReconciler:
    """``ipcache``: every address the node knows -> its identity."""

    name = "ipcache"
    concerns = frozenset({CLUSTER})

    def __init__(self, host: NodeHost, dp: NodeDatapath) -> None:
        self.host, self.dp = host, dp

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        return self.dp.set_ipcache(tables.view.ids.ipcache(self.host.name))


class PolicyReconciler:
    """``policy``: the policy table for the node's endpoints."""

    name = "policy"
    concerns = frozenset({CLUSTER})

    def __init__(self, host: NodeHost, dp: NodeDatapath) -> None:
        self.host, self.dp = host, dp

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        ids = tables.view.ids
        local = [ids.pod_identity(p) for p in desired.cluster.pods if p.node == self.host.name]
        try:
            return self.dp.set_policy(tables.policy_table, endpoint_identities=local)
        except UnsupportedPolicyError as exc:
            raise UnsupportedPolicyError(f"the real datapath cannot enforce this policy yet: {exc}") from exc


class ServicesReconciler:
    """The socket LB maps, rewritten in proportion to the change: when only
    services changed (``DesiredState.services``) or only endpoint states
    (``DesiredState.pods``), only the services concerned (plus any whose
    LB-IPAM address moved) are recomputed by the semantics and compiled;
    any other cluster change diffs the whole LB table by frontend (still
    compiling only the frontends that differ)."""

    name = "services"
    concerns = frozenset({CLUSTER, ENDPOINT_STATES})

    def __init__(self, host: NodeHost, lb: NodeSocketLB) -> None:
        self.host, self.lb = host, lb
        self._cluster: object = None  # the cluster state the maps implement (None: unsure, diff in full)
        self._tables: ClusterTables | None = None
        self.last_path = ""  # "full", "services" or "endpoints": how the last reconcile went

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        cluster, states = desired.cluster, desired.endpoint_states
        terminate = [self.host.pod_netns(p.key) for p in cluster.pods if p.node == self.host.name] \
            if self.host.pod_netns is not None and cluster.values.terminate_pod_connections else []
        affected: set[str] = set()
        if ENDPOINT_STATES in desired.changed:
            affected |= set().union(*(tables.services_of_pod.get(p, frozenset()) for p in desired.pods))
        prev, baseline = self._tables, self._cluster
        self._cluster = None  # until this reconcile succeeded
        if CLUSTER in desired.changed or cluster is not baseline:
            if desired.services is None or prev is None or baseline is None or baseline is cluster:
                result = self.lb.set_services(tables.lb_table(states), terminate_udp_in=terminate)
                self.last_path = "full"
                self._cluster, self._tables = cluster, tables
                return result
            old_ips, new_ips = prev.view.allocation.ips, tables.view.allocation.ips
            affected |= set(desired.services)
            affected |= {k for k in old_ips.keys() | new_ips.keys() if old_ips.get(k) != new_ips.get(k)}
            self.last_path = "services"
        else:
            self.last_path = "endpoints"
        result = self.lb.update_services(tables.lb_frontends(sorted(affected), states), terminate_udp_in=terminate) \
            if affected else ReconcileResult()
        self._cluster, self._tables = cluster, tables
        return result


@dataclass(frozen=True)
class HostResult:
    """What :func:`reconcile_host` did on one node's LAN interface(s)."""

    interfaces: Mapping[str, int]  # ifname -> ifindex carrying the host program
    responders: ReconcileResult  # l2_responder
    responders_added: tuple[tuple[ipaddress.IPv4Address, str], ...]  # new entries: send GARP for these
    responders_removed: tuple[tuple[ipaddress.IPv4Address, str], ...]
    north_south: ReconcileResult  # lb4_* + ns_remote_backends of the host program
    responder_fault: bool  # the responder was deliberately left unprogrammed

    @property
    def total(self) -> ReconcileResult:
        return self.responders + self.north_south

    def as_dict(self) -> dict:
        return {"interfaces": dict(self.interfaces), "responders": self.responders,
                "responders_added": list(self.responders_added),
                "responders_removed": list(self.responders_removed),
                "north_south": self.north_south, "responder_fault": self.responder_fault}


def reconcile_host(dp: NodeDatapath, tables: ClusterTables | Cluster, node: str, held_leases: Collection[str],
                   responder_fault: bool = False,
                   endpoint_states: Mapping[str, str] | None = None) -> HostResult:
    """Make ``node``'s host program implement the semantics: attached to the
    node's uplink and the interfaces its L2 announcements select, answering
    ARP for the IPs of the leases in ``held_leases`` on those interfaces
    (:func:`datapath.compile_ns.plan_host`), and load-balancing the
    north-south frontends.

    ``responder_fault`` injects cilium#48626 (lease held, responder not
    programmed): the responder map is emptied instead, everything else as
    usual.  The caller sends gratuitous ARP for ``responders_added``
    (:func:`datapath.garp.send_garp`)."""
    if isinstance(tables, Cluster):
        tables = ClusterTables(tables)
    cluster = tables.cluster
    states = endpoint_states or {}
    plan = plan_host(cluster, node, held_leases, allocation=tables.view.allocation,
                     table=tables.lb_table(states))
    interfaces = dp.attach_host(plan.interfaces, plan.node_ip)
    before = dp.l2_responders()
    wanted = set() if responder_fault else set(plan.responders)
    responders = dp.set_l2_responders(sorted(wanted))
    north_south = dp.set_north_south(plan.frontends, cluster, node)
    return HostResult(interfaces, responders, tuple(sorted(wanted - before)), tuple(sorted(before - wanted)),
                      north_south, responder_fault)


class HostReconciler:
    """:func:`reconcile_host` as an agent reconciler, with the elector's entry point.

    The agent's loop calls :meth:`reconcile` on cluster and endpoint-state
    changes; the node's elector calls :meth:`set_leases` whenever the set of
    leases this node holds changes (from its own thread: both are serialised
    here).  Responder entries that appear are announced with one gratuitous
    ARP each (``garp(ip, ifname)``; default :func:`datapath.garp.send_garp` in
    the node's netns).  Until the first desired state arrives, leases are
    only remembered."""

    name = "host"
    concerns = frozenset({CLUSTER, ENDPOINT_STATES})

    def __init__(self, host: NodeHost, dp: NodeDatapath, *,
                 garp: Callable[[ipaddress.IPv4Address, str], None] | None = None) -> None:
        self.host, self.dp = host, dp
        self._garp = garp
        self._lock = threading.Lock()
        self._held: frozenset[str] = frozenset()
        self._fault = False
        self._desired: tuple[ClusterTables, Mapping[str, str]] | None = None
        self.last_result: HostResult | None = None
        self.garps_sent: list[tuple[ipaddress.IPv4Address, str]] = []

    @property
    def held_leases(self) -> frozenset[str]:
        return self._held

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        with self._lock:
            self._desired = (tables, desired.endpoint_states)
            return self._apply().total

    def set_leases(self, held: Collection[str], responder_fault: bool | None = None) -> HostResult | None:
        """This node now holds ``held`` (lease names); ``responder_fault`` (when
        given) turns the cilium#48626 fault on or off."""
        with self._lock:
            self._held = frozenset(held)
            if responder_fault is not None:
                self._fault = responder_fault
            return self._apply() if self._desired is not None else None

    def _apply(self) -> HostResult:
        assert self._desired is not None
        tables, states = self._desired
        result = reconcile_host(self.dp, tables, self.host.name, self._held, self._fault, states)
        self.last_result = result
        for ip, ifname in result.responders_added:
            if self._garp is not None:
                self._garp(ip, ifname)
            else:
                from datapath.garp import send_garp
                send_garp(self.host.netns, ifname, ip)
            self.garps_sent.append((ip, ifname))
        return result


def compile_bandwidth(cluster: Cluster, node: str) -> tuple[dict[ipaddress.IPv4Address, int], dict[str, ipaddress.IPv4Address]]:
    """``node``'s pod egress limits as the datapath programs them: pod IP ->
    bytes/s from :func:`twin.semantics.bandwidth.node_limits` (only enforced
    limits), and the limited pods' IPs by pod key."""
    limits = node_limits(cluster, node)
    ips = {p.key: ipaddress.IPv4Address(p.ip) for p in cluster.pods if p.key in limits}
    return {ips[key]: lim.bytes_per_s for key, lim in limits.items()}, ips


class BandwidthReconciler:
    """Per-pod egress limits (Cilium's Bandwidth Manager): the node's enforced
    limits (:func:`compile_bandwidth`) into :meth:`NodeDatapath.set_bandwidth`
    on the interfaces carrying the host program (the :class:`HostReconciler`
    runs first and attaches it).  Changed limits change in place."""

    name = "bandwidth"
    concerns = frozenset({CLUSTER})

    def __init__(self, host: NodeHost, dp: NodeDatapath) -> None:
        self.host, self.dp = host, dp
        self.ips: dict[str, ipaddress.IPv4Address] = {}  # limited pod key -> its IP, as last programmed

    def reconcile(self, desired: DesiredState, tables: ClusterTables) -> ReconcileResult:
        limits, ips = compile_bandwidth(desired.cluster, self.host.name)
        result = self.dp.set_bandwidth(limits)
        self.ips = ips
        return result
