"""``NodeSocketLB``: one node's socket load-balancer, used next to ``NodeDatapath``.

    with NodeSocketLB() as lb:
        lb.attach_cgroup("/sys/fs/cgroup/unified/twt-node-ab12")
        lb.set_services(lb_table)               # LBTable from twin.semantics.lb
        lb.services_entries()                   # what the kernel maps hold

The four cgroup programs of ``bpf_sock.c`` translate connect()/sendmsg() to a
service frontend into a backend before any packet exists, and report the
frontend back from recvmsg()/getpeername().  The tc programs of ``bpf_lxc.c``
therefore only ever see backend addresses: policy applies to the backend's
identity and target port.

Backend ids and rev_nat indices persist across :meth:`set_services` calls
(see :mod:`datapath.compile_lb`); map updates follow the ordering of
:func:`datapath.reconcile.reconcile_lb`.

Reconcile is proportional to the change: an :class:`~datapath.compile_lb.LBCompiler`
keeps what was compiled, :meth:`set_services` compiles only the frontends
that differ from the last table, and :meth:`update_services` takes the
change itself (the services that changed), so adding one service when
10,000 exist writes that service's few entries and nothing else.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from twin.semantics.tables import LBService

from twin.model.enums import Protocol
from twin.semantics.tables import LBTable

from datapath.attach import NetnsRef
from datapath.cgroup import CgroupAttacher, CgroupAttachment, check_cgroup_dir
from datapath.compile_lb import AddrKey, LBCompiler, LBDelta, LBIds, LBMaps, compile_lb
from datapath.errors import CgroupError, DatapathError
from datapath.lifecycle import KernelOwner
from datapath.loader import SockProgram
from datapath.maps import lb_backends, lb_revnat, lb_services, sock_revnat
from datapath.maps.lb_backends import BackendValue
from datapath.maps.lb_revnat import RevNatValue
from datapath.maps.lb_services import ServiceKey, ServiceValue
from datapath.maps.sock_revnat import SockRevNatKey, SockRevNatValue
from datapath.reconcile import CachedMaps, ReconcileResult, apply_lb_delta, reconcile, reconcile_lb
from datapath.sockdiag import destroy_udp_sockets_to

__all__ = ["NodeSocketLB", "LBEntries"]


@dataclass(frozen=True)
class LBEntries:
    """The three LB maps as the kernel holds them."""

    services: Mapping[ServiceKey, ServiceValue]
    backends: Mapping[int, BackendValue]
    revnat: Mapping[int, RevNatValue]


class NodeSocketLB(CachedMaps, KernelOwner):
    """Load, attach (to cgroups), program and tear down one node's socket LB."""

    def __init__(self, *, extra_cflags: Sequence[str] = ()) -> None:
        self._extra_cflags = tuple(extra_cflags)
        self._program: SockProgram | None = None
        self._attacher = CgroupAttacher()
        self._attachments: dict[Path, CgroupAttachment] = {}
        self._compiler = LBCompiler()
        self._by_service: dict[str, set[AddrKey]] = {}  # service key -> its frontends
        self._owner_of: dict[AddrKey, str] = {}  # frontend -> its service key
        self._dirty = False  # a write failed: the kernel may differ from the compiler
        self.last_frontends_compiled = 0
        self._cached = {}  # map name -> CachedMap (see CachedMaps)

    # -- lifecycle -----------------------------------------------------------

    close_error = CgroupError

    def _open(self) -> None:
        """Compile/load the programs."""
        if self._program is None:
            self._program = SockProgram(self._extra_cflags)

    def _release(self) -> list[str]:
        """Detach from every cgroup we attached to, then free programs and maps."""
        errors: list[str] = []
        for path in list(self._attachments):
            try:
                self.detach_cgroup(path)
            except DatapathError as exc:
                errors.append(str(exc))
        if self._program is not None:
            self._program.close()
            self._program = None
        return errors

    @property
    def program(self) -> SockProgram:
        if self._program is None:
            self.open()
        assert self._program is not None
        return self._program

    # -- cgroups ---------------------------------------------------------------

    def attach_cgroup(self, path: str | os.PathLike[str]) -> CgroupAttachment:
        """Attach connect4/sendmsg4/recvmsg4/getpeername4 to a (non-root) cgroup2 dir."""
        p = check_cgroup_dir(path)
        if p in self._attachments:
            return self._attachments[p]
        att = self._attacher.attach(p, self.program)
        self._attachments[p] = att
        return att

    def detach_cgroup(self, path: str | os.PathLike[str]) -> None:
        """Undo :meth:`attach_cgroup` (no-op if not attached)."""
        att = self._attachments.pop(Path(path).resolve(), None)
        if att is not None:
            self._attacher.detach(att)

    @property
    def cgroups(self) -> list[Path]:
        return list(self._attachments)

    # -- services --------------------------------------------------------------

    def compile(self, table: LBTable) -> LBMaps:
        """Desired map contents for ``table`` with this node's current ids (no kernel)."""
        return compile_lb(table, self._compiler.ids)

    def set_services(self, table: LBTable, *,
                     terminate_udp_in: Iterable[NetnsRef] = ()) -> ReconcileResult:
        """Make the LB maps implement ``table``.

        Only frontends that differ from the last table are compiled and
        written.  ``terminate_udp_in``: network namespaces (the node's pods) in
        which connected UDP sockets to backends that left ``lb4_backends`` are
        destroyed afterwards (Cilium's socket termination).
        """
        delta = self._compiler.plan_table(table)
        return self._apply(delta, terminate_udp_in)

    def update_services(self, changed: Mapping[str, Sequence[LBService]], *,
                        terminate_udp_in: Iterable[NetnsRef] = ()) -> ReconcileResult:
        """Set the frontends of each named service to the given ones (none = the
        service is gone); every other service stays as it is, uncompiled and
        unwritten.  This is what an agent that sees services change one by one
        calls: its cost follows the services named, not how many exist."""
        upserts: list[LBService] = []
        removed: list[AddrKey] = []
        for name, fronts in changed.items():
            keys = set()
            for fe in fronts:
                if fe.service != name:
                    raise DatapathError(f"update_services: frontend of {fe.service} given for service {name}")
                key = self._canonical(fe)
                owner = self._owner_of.get(key)
                if owner is not None and owner != name and owner not in changed:
                    raise DatapathError(f"service {name}: frontend {key[0]}:{key[1]}/{key[2].name} "
                                        f"is also defined by {owner}")
                keys.add(key)
                upserts.append(fe)
            removed += [k for k in self._by_service.get(name, ()) if k not in keys]
        return self._apply(self._compiler.plan(upserts, removed), terminate_udp_in)

    @staticmethod
    def _canonical(fe: LBService) -> AddrKey:
        return (ipaddress.IPv4Address(fe.frontend_ip), int(fe.port), Protocol(fe.protocol))

    def _apply(self, delta: LBDelta, terminate_udp_in: Iterable[NetnsRef]) -> ReconcileResult:
        maps = [self._cached_map(c) for c in (lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC)]
        if self._dirty:
            # an earlier write failed part-way: bring the kernel to the compiler's state in full
            self._compiler.commit(delta)
            self._track_owners(delta)
            for m in maps:
                m.resync()
            want = self._compiler.maps()
            result = reconcile_lb(want.services, want.backends, want.revnat, *maps)
            self._dirty = False
        else:
            try:
                result = apply_lb_delta(delta, *maps)
            except BaseException:
                self._dirty = True
                raise
            self._compiler.commit(delta)
            self._track_owners(delta)
        self.last_frontends_compiled = delta.frontends_compiled
        gone = {(k[0], k[1]) for k in delta.be_ids_released if k[2] == Protocol.UDP}
        for netns in terminate_udp_in:
            for ip, port in sorted(gone):
                destroy_udp_sockets_to(netns, ip, port)
        return result

    def _track_owners(self, delta: LBDelta) -> None:
        for key in delta.fronts_removed:
            name = self._owner_of.pop(key)
            self._by_service[name].discard(key)
            if not self._by_service[name]:
                del self._by_service[name]
        for key, front in delta.fronts_set.items():
            prev = self._owner_of.get(key)
            if prev is not None and prev != front.source.service:
                self._by_service[prev].discard(key)
                if not self._by_service[prev]:
                    del self._by_service[prev]
            self._owner_of[key] = front.source.service
            self._by_service.setdefault(front.source.service, set()).add(key)

    @property
    def ids(self) -> LBIds:
        """Backend ids and rev_nat indices assigned so far."""
        return self._compiler.ids

    def services_entries(self) -> LBEntries:
        return LBEntries(
            dict(self._map(lb_services.CODEC).items()),
            dict(self._map(lb_backends.CODEC).items()),
            dict(self._map(lb_revnat.CODEC).items()),
        )

    def sock_revnat_entries(self) -> dict[SockRevNatKey, SockRevNatValue]:
        return dict(self._map(sock_revnat.CODEC).items())

    def flush_sock_revnat(self) -> int:
        return reconcile({}, self._map(sock_revnat.CODEC)).deleted

    def backend_id(self, ip: ipaddress.IPv4Address | str, port: int, protocol: object) -> int | None:
        """The id assigned to a backend, if any."""
        return self._compiler.backend_id((ipaddress.IPv4Address(ip), port, Protocol(protocol)))
