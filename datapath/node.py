"""``NodeDatapath``: one node's eBPF datapath behind a small facade.

    with NodeDatapath("twt-node-ab12") as dp:
        dp.attach(["lxc1", "lxc2"])
        dp.set_endpoints([EndpointSpec("lxc1", 256, ip1), ...])
        dp.set_ipcache({IPv4Network("10.0.0.1/32"): 256, ...})
        dp.set_policy(policy_table)
        records = dp.read_events(timeout_ms=100)

        # the node's LAN interface(s): ARP responder and north-south LB (bpf_host.c)
        dp.attach_host(["ens5"], IPv4Address("192.168.10.11"))
        dp.set_l2_responders([(IPv4Address("10.10.200.1"), "ens5")])
        dp.set_north_south(lb_table, cluster, "k8s-w1")

        # per-pod egress limits on those interfaces (datapath/bandwidth.py)
        dp.set_bandwidth({IPv4Address("10.0.1.5"): 1_250_000})   # pod IP -> bytes/s
        dp.bandwidth_limits()                                     # read back from the kernel

The host program is compiled and loaded on the first :meth:`attach_host`,
so a node that never needs it does not pay for it.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from twin.model.objects import Cluster
from twin.semantics.tables import LBService, LBTable, PolicyTable

from datapath import compile as dpcompile
from datapath.bandwidth import Mechanism, NodeBandwidth, PodBandwidth, probe_mechanism
from datapath.attach import HOST_FILTER_PRIO, LxcAttachment, NetnsRef, TcAttacher
from datapath.compile_lb import LBIds
from datapath.compile_ns import compile_north_south
from datapath.errors import AttachError, DatapathError
from datapath.lifecycle import KernelOwner
from datapath.loader import HostProgram, NodeProgram
from datapath.maps import conntrack, endpoints, host_ifaces, ipcache, l2_responder, lb_backends, lb_revnat
from datapath.maps import bandwidth as bw_pods, lb_services, ns_nat, policy
from datapath.maps.conntrack import CtKey, CtValue
from datapath.maps.events import EventReader, FlowRecord
from datapath.maps.policy import PolicyKey, PolicyValue
from datapath.maps.host_ifaces import HostIface
from datapath.maps.l2_responder import L2ResponderKey
from datapath.maps.ns_nat import NatEntry, NatKey
from datapath.reconcile import CachedMap, CachedMaps, ReconcileResult, reconcile, reconcile_lb

__all__ = ["EndpointSpec", "NodeDatapath", "HostMaps"]

#: an ARP responder entry: (IP answered for, interface name)
Responder = tuple[ipaddress.IPv4Address, str]


@dataclass(frozen=True)
class EndpointSpec:
    """A pod on this node, named by its host-side lxc device."""

    ifname: str
    identity: int
    ip: ipaddress.IPv4Address


class NodeDatapath(CachedMaps, KernelOwner):
    """Load, attach, program and tear down the datapath of one node netns."""

    def __init__(self, netns: NetnsRef, *, extra_cflags: Sequence[str] = (),
                 bandwidth_mechanism: Mechanism | None = None) -> None:
        """``bandwidth_mechanism``: how the host program enforces pod egress
        limits (None: :func:`datapath.bandwidth.probe_mechanism`, when the host
        program is loaded)."""
        self.netns = os.fspath(netns)
        self._extra_cflags = tuple(extra_cflags)
        self._bw_mechanism = bandwidth_mechanism
        self._bandwidth: NodeBandwidth | None = None
        self._bw_limits: dict[ipaddress.IPv4Address, int] = {}
        self._program: NodeProgram | None = None
        self._attacher: TcAttacher | None = None
        self._events: EventReader | None = None
        self._attachments: dict[str, LxcAttachment] = {}
        self._cached = {}  # map name -> CachedMap (see CachedMaps)
        self._host: HostMaps | None = None  # bpf_host, loaded by attach_host
        self._host_attachments: dict[str, LxcAttachment] = {}
        self._host_macs: dict[str, str] = {}  # ifname -> MAC, read once at attach
        self._node_ip: ipaddress.IPv4Address | None = None
        self._ns_ids: LBIds | None = None

    # -- lifecycle ---------------------------------------------------------

    close_error = AttachError

    def _describe(self) -> str:
        return f"NodeDatapath for {self.netns!r}"

    def _open(self) -> None:
        """Compile/load the program and open the netns."""
        if self._attacher is None:
            self._attacher = TcAttacher(self.netns)
        if self._program is None:
            self._program = NodeProgram(self._extra_cflags)
        if self._events is None:
            self._events = EventReader(self._program.bpf)

    def _release(self) -> list[str]:
        """Detach everything we attached and free the maps."""
        errors: list[str] = []
        if self._bandwidth is not None:
            errors += self._bandwidth.close()
            self._bandwidth = None
            self._bw_limits = {}
        if self._attacher is not None:
            for name, att in [*self._attachments.items(), *self._host_attachments.items()]:
                try:
                    self._attacher.detach(att)
                except DatapathError as exc:
                    errors.append(str(exc))
            self._attachments.clear()
            self._host_attachments.clear()
            self._attacher.close()
            self._attacher = None
        self._events = None
        self._cached.clear()
        if self._program is not None:
            self._program.close()
            self._program = None
        if self._host is not None:
            self._host.close()
            self._host = None
        return errors

    @property
    def program(self) -> NodeProgram:
        if self._program is None:
            self.open()
        assert self._program is not None
        return self._program

    @property
    def _tc(self) -> TcAttacher:
        if self._attacher is None:
            self.open()
        assert self._attacher is not None
        return self._attacher

    # -- devices -------------------------------------------------------------

    def attach(self, ifnames: Iterable[str]) -> dict[str, int]:
        """Attach both lxc programs to each device; returns {ifname: ifindex}."""
        prog = self.program
        for name in ifnames:
            if name in self._attachments:
                continue
            self._attachments[name] = self._tc.attach(
                name, from_container=prog.from_container, to_container=prog.to_container
            )
        return {n: a.ifindex for n, a in self._attachments.items()}

    def detach(self, ifname: str) -> None:
        """Undo :meth:`attach` for one device (no-op if not attached)."""
        att = self._attachments.pop(ifname, None)
        if att is not None:
            self._tc.detach(att)

    @property
    def attached(self) -> dict[str, int]:
        return {n: a.ifindex for n, a in self._attachments.items()}

    # -- maps ------------------------------------------------------------------

    def set_endpoints(self, specs: Iterable[EndpointSpec]) -> ReconcileResult:
        """Make the endpoints map hold exactly ``specs`` (ifnames resolved here)."""
        local = [
            dpcompile.LocalEndpoint(self._ifindex(s.ifname), s.identity, ipaddress.IPv4Address(s.ip))
            for s in specs
        ]
        return reconcile(dpcompile.compile_endpoints(local), self._cached_map(endpoints.CODEC))

    def set_ipcache(self, prefixes: Mapping[ipaddress.IPv4Network | str, int]) -> ReconcileResult:
        return reconcile(dpcompile.compile_ipcache(prefixes), self._cached_map(ipcache.CODEC))

    def set_policy(
        self, table: PolicyTable, *, endpoint_identities: Iterable[int] = ()
    ) -> ReconcileResult:
        desired = dpcompile.compile_policy(table, endpoint_identities=endpoint_identities)
        return reconcile(desired, self._cached_map(policy.CODEC))

    def policy_entries(self) -> dict[PolicyKey, PolicyValue]:
        return dict(self._map(policy.CODEC).items())

    def conntrack_entries(self) -> dict[CtKey, CtValue]:
        return dict(self._map(conntrack.CODEC).items())

    def flush_conntrack(self) -> int:
        """Delete every conntrack entry; returns how many."""
        return reconcile({}, self._map(conntrack.CODEC)).deleted

    # -- events ----------------------------------------------------------------

    def read_events(self, timeout_ms: int = 0) -> list[FlowRecord]:
        """Flow records emitted since the last call (waits up to ``timeout_ms``)."""
        self.open()
        assert self._events is not None
        return self._events.poll(timeout_ms)

    # -- the host program on the LAN interface(s) -------------------------------

    @property
    def host(self) -> "HostMaps":
        """The loaded host program (:meth:`attach_host` loads it)."""
        if self._host is None:
            raise DatapathError(f"{self._describe()}: the host program is not loaded; call attach_host first")
        return self._host

    def attach_host(self, ifnames: Sequence[str], node_ip: ipaddress.IPv4Address | str) -> dict[str, int]:
        """Make bpf_host attached (tc ingress + egress) to exactly ``ifnames``.

        Loads the program on first use; idempotent.  Interfaces attached
        before and not listed now are detached (their ``host_ifaces`` entry
        removed).  ``node_ip`` is the node's own address: the SNAT source for
        remote backends.  Returns {ifname: ifindex} of the host attachments."""
        node_ip = ipaddress.IPv4Address(node_ip)
        tc = self._tc
        if self._host is None:
            self._host = HostMaps(HostProgram(self._extra_cflags, bandwidth_mode=self.bandwidth_mechanism.mode))
        prog = self._host.program
        wanted = list(dict.fromkeys(ifnames))
        for name in sorted(set(self._host_attachments) - set(wanted)):
            tc.detach(self._host_attachments.pop(name))
            self._host_macs.pop(name, None)
        for name in wanted:
            if name not in self._host_attachments:
                self._host_macs[name] = tc.mac(name)
                self._host_attachments[name] = tc.attach(
                    name, from_container=prog.from_netdev, to_container=prog.to_netdev, prio=HOST_FILTER_PRIO)
        self._node_ip = node_ip
        # no netlink call when nothing changed: the elector's thread may get here
        # while the agent's thread attaches lxc programs with the same socket
        desired = {a.ifindex: HostIface(self._host_macs[n], node_ip) for n, a in self._host_attachments.items()}
        reconcile(desired, self._host.cached(host_ifaces.CODEC))
        if self._bandwidth is not None and set(self._bandwidth.devices) != set(self._host_attachments):
            self._bandwidth.apply(self._bw_limits, self.host_attached)
        return self.host_attached

    @property
    def host_attached(self) -> dict[str, int]:
        return {n: a.ifindex for n, a in self._host_attachments.items()}

    def set_l2_responders(self, entries: Iterable[Responder]) -> ReconcileResult:
        """Make ``l2_responder`` hold exactly ``entries`` (IP, interface name).

        Each interface must carry the host program (:meth:`attach_host`);
        the reply counters of entries that stay are kept."""
        index = self.host_attached
        cached = self.host.cached(l2_responder.CODEC)
        current = dict(cached.items())
        desired: dict[L2ResponderKey, int] = {}
        for ip, ifname in entries:
            if ifname not in index:
                raise AttachError(f"{self._describe()}: ARP responder for {ip} on {ifname!r}: the host program "
                                  f"is not attached there (attached: {sorted(index) or 'nothing'})")
            key = L2ResponderKey(ipaddress.IPv4Address(ip), index[ifname])
            desired[key] = current.get(key, 0)
        return reconcile(desired, cached)

    def l2_responder_stats(self) -> dict[Responder, int]:
        """(IP, interface) -> ARP replies sent, read from the kernel map."""
        if self._host is None:
            return {}
        names = {i: n for n, i in self.host_attached.items()}
        out: dict[Responder, int] = {}
        for key, sent in self._host.live(l2_responder.CODEC).items():
            name = names.get(key.ifindex) or self._tc.ifname(key.ifindex) or f"ifindex {key.ifindex}"
            out[(key.ip, name)] = sent
        return out

    def l2_responders(self) -> set[Responder]:
        """The (IP, interface) entries of ``l2_responder`` as the kernel holds them."""
        return set(self.l2_responder_stats())

    def set_north_south(self, frontends: LBTable | Sequence[LBService], cluster: Cluster,
                        node: str) -> ReconcileResult:
        """Program the north-south frontends of ``frontends`` (the LB table, or
        its frontends; other kinds are left out) as the receiving ``node``."""
        maps = compile_north_south(frontends if isinstance(frontends, LBTable) else tuple(frontends),
                                   cluster, node, self._ns_ids)
        h = self.host
        remote = h.cached(ns_nat.REMOTE_CODEC)
        # remote backends are added before the frontends point at them and removed
        # only after: a new connection never misses its SNAT decision
        added = reconcile({**dict(remote.items()), **maps.remote}, remote)
        result = reconcile_lb(maps.lb.services, maps.lb.backends, maps.lb.revnat,
                              h.cached(lb_services.CODEC), h.cached(lb_backends.CODEC), h.cached(lb_revnat.CODEC))
        removed = reconcile(maps.remote, remote)
        unchanged = removed.unchanged - added.added - added.updated
        result += ReconcileResult(added.added, added.updated, removed.deleted, unchanged)
        self._ns_ids = maps.lb.ids
        return result

    def host_stats(self) -> dict[str, int]:
        """The host program's counters (``HostCounter`` name -> value); {} before attach_host."""
        if self._host is None:
            return {}
        table = self._host.program.table(ns_nat.STATS_MAP_NAME)
        return {c.name: int(table[table.Key(int(c))].value) for c in ns_nat.HostCounter}

    def ns_connections(self) -> dict[NatKey, NatEntry]:
        """The host program's north-south NAT entries (kernel map)."""
        return dict(self._host.live(ns_nat.CODEC).items()) if self._host is not None else {}

    # -- per-pod egress bandwidth on the host interfaces -------------------------

    @property
    def bandwidth_mechanism(self) -> Mechanism:
        """How this node enforces egress limits (probed once per process unless given)."""
        if self._bw_mechanism is None:
            self._bw_mechanism = probe_mechanism()
        return self._bw_mechanism

    def set_bandwidth(self, limits: Mapping[ipaddress.IPv4Address | str, int]) -> ReconcileResult:
        """Make the host interfaces limit exactly ``limits`` (pod IP -> bytes/s, the
        enforced limits of ``twin.semantics.bandwidth.node_limits``), in place:
        a changed rate is a tc class change, no program reload.  Needs
        :meth:`attach_host`.  Raises :class:`~datapath.bandwidth.BandwidthError`
        (a DatapathError) when a device's root qdisc is not ours to replace."""
        h = self.host
        if self._bandwidth is None:
            if not limits:
                return ReconcileResult()
            self._bandwidth = NodeBandwidth(self.netns, self.bandwidth_mechanism, h.cached(bw_pods.CODEC))
        wanted = {ipaddress.IPv4Address(ip): int(bps) for ip, bps in limits.items()}
        result = self._bandwidth.apply(wanted, self.host_attached)
        self._bw_limits = wanted
        return result

    def bandwidth_limits(self) -> dict[ipaddress.IPv4Address, PodBandwidth]:
        """Pod IP -> its limit as the kernel holds it (``bw_pods`` entry and class rates)."""
        if self._bandwidth is None or self._host is None:
            return {}
        return self._bandwidth.limits(self._host.live(bw_pods.CODEC))

    def bandwidth_classes(self) -> dict[str, set[int]]:
        """Host interface -> classids of the bandwidth manager's classes (kernel)."""
        return self._bandwidth.class_handles() if self._bandwidth is not None else {}

    @property
    def bandwidth_devices(self) -> list[str]:
        """The interfaces carrying the bandwidth manager's root qdisc."""
        return self._bandwidth.devices if self._bandwidth is not None else []

    # -- helpers ---------------------------------------------------------------

    def _ifindex(self, ifname: str) -> int:
        att = self._attachments.get(ifname)
        return att.ifindex if att is not None else self._tc.ifindex(ifname)


class HostMaps(CachedMaps):
    """The host program and the write-through view of the maps only we write."""

    def __init__(self, program: HostProgram) -> None:
        self.program = program
        self._cached = {}

    def cached(self, codec: object) -> "CachedMap":
        return self._cached_map(codec)

    def live(self, codec: object) -> dict:
        """A map as the kernel holds it now (counters, connections)."""
        return dict(self._map(codec).items())

    def close(self) -> None:
        self._cached.clear()
        self.program.close()
