"""``NodeDatapath``: one node's eBPF datapath behind a small facade.

    with NodeDatapath("twt-node-ab12") as dp:
        dp.attach(["lxc1", "lxc2"])
        dp.set_endpoints([EndpointSpec("lxc1", 256, ip1), ...])
        dp.set_ipcache({IPv4Network("10.0.0.1/32"): 256, ...})
        dp.set_policy(policy_table)
        records = dp.read_events(timeout_ms=100)
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from twin.semantics.tables import PolicyTable

from datapath import compile as dpcompile
from datapath.attach import LxcAttachment, NetnsRef, TcAttacher
from datapath.errors import AttachError, DatapathError
from datapath.lifecycle import KernelOwner
from datapath.loader import NodeProgram
from datapath.maps import conntrack, endpoints, ipcache, policy
from datapath.maps.conntrack import CtKey, CtValue
from datapath.maps.events import EventReader, FlowRecord
from datapath.maps.policy import PolicyKey, PolicyValue
from datapath.reconcile import CachedMaps, ReconcileResult, reconcile

__all__ = ["EndpointSpec", "NodeDatapath"]


@dataclass(frozen=True)
class EndpointSpec:
    """A pod on this node, named by its host-side lxc device."""

    ifname: str
    identity: int
    ip: ipaddress.IPv4Address


class NodeDatapath(CachedMaps, KernelOwner):
    """Load, attach, program and tear down the datapath of one node netns."""

    def __init__(self, netns: NetnsRef, *, extra_cflags: Sequence[str] = ()) -> None:
        self.netns = os.fspath(netns)
        self._extra_cflags = tuple(extra_cflags)
        self._program: NodeProgram | None = None
        self._attacher: TcAttacher | None = None
        self._events: EventReader | None = None
        self._attachments: dict[str, LxcAttachment] = {}
        self._cached = {}  # map name -> CachedMap (see CachedMaps)

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
        if self._attacher is not None:
            for name, att in list(self._attachments.items()):
                try:
                    self._attacher.detach(att)
                except DatapathError as exc:
                    errors.append(str(exc))
                del self._attachments[name]
            self._attacher.close()
            self._attacher = None
        self._events = None
        self._cached.clear()
        if self._program is not None:
            self._program.close()
            self._program = None
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

    # -- helpers ---------------------------------------------------------------

    def _ifindex(self, ifname: str) -> int:
        att = self._attachments.get(ifname)
        return att.ifindex if att is not None else self._tc.ifindex(ifname)
