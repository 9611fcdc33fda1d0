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
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from twin.model.enums import Protocol
from twin.semantics.tables import LBTable

from datapath.attach import NetnsRef
from datapath.cgroup import CgroupAttacher, CgroupAttachment, check_cgroup_dir
from datapath.compile_lb import LBIds, LBMaps, compile_lb
from datapath.errors import CgroupError, DatapathError
from datapath.loader import SockProgram
from datapath.maps import lb_backends, lb_revnat, lb_services, sock_revnat
from datapath.maps.lb_backends import BackendValue
from datapath.maps.lb_revnat import RevNatValue
from datapath.maps.lb_services import ServiceKey, ServiceValue
from datapath.maps.sock_revnat import SockRevNatKey, SockRevNatValue
from datapath.reconcile import BccMap, CachedMap, ReconcileResult, reconcile, reconcile_lb
from datapath.sockdiag import destroy_udp_sockets_to

__all__ = ["NodeSocketLB", "LBEntries"]


@dataclass(frozen=True)
class LBEntries:
    """The three LB maps as the kernel holds them."""

    services: Mapping[ServiceKey, ServiceValue]
    backends: Mapping[int, BackendValue]
    revnat: Mapping[int, RevNatValue]


class NodeSocketLB:
    """Load, attach (to cgroups), program and tear down one node's socket LB."""

    def __init__(self, *, extra_cflags: Sequence[str] = ()) -> None:
        self._extra_cflags = tuple(extra_cflags)
        self._program: SockProgram | None = None
        self._attacher = CgroupAttacher()
        self._attachments: dict[Path, CgroupAttachment] = {}
        self._ids = LBIds()
        self._cached: dict[str, CachedMap] = {}
        self._closed = False

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> "NodeSocketLB":
        """Compile/load the programs (idempotent)."""
        if self._closed:
            raise DatapathError("NodeSocketLB is closed; create a new one")
        if self._program is None:
            self._program = SockProgram(self._extra_cflags)
        return self

    def close(self) -> None:
        """Detach from every cgroup we attached to, then free programs and maps."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for path in list(self._attachments):
            try:
                self.detach_cgroup(path)
            except DatapathError as exc:
                errors.append(str(exc))
        if self._program is not None:
            self._program.close()
            self._program = None
        if errors:
            raise CgroupError("; ".join(errors))

    def __enter__(self) -> "NodeSocketLB":
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _map(self, codec: object) -> BccMap:
        return BccMap(self.program.table(codec.map_name), codec)  # type: ignore[attr-defined]

    def compile(self, table: LBTable) -> LBMaps:
        """Desired map contents for ``table`` with this node's current ids (no kernel)."""
        return compile_lb(table, self._ids)

    def set_services(self, table: LBTable, *,
                     terminate_udp_in: Iterable[NetnsRef] = ()) -> ReconcileResult:
        """Make the LB maps implement ``table``.

        ``terminate_udp_in``: network namespaces (the node's pods) in which
        connected UDP sockets to backends that left ``lb4_backends`` are
        destroyed afterwards (Cilium's socket termination).
        """
        desired = compile_lb(table, self._ids)
        svc_map, be_map, rn_map = (self._cached_map(c) for c in (lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC))
        before = dict(be_map.items())
        result = reconcile_lb(desired.services, desired.backends, desired.revnat, svc_map, be_map, rn_map)
        self._ids = desired.ids
        gone = {(b.ip, b.port) for b in before.values() if b.protocol == Protocol.UDP} - {
            (b.ip, b.port) for b in desired.backends.values() if b.protocol == Protocol.UDP
        }
        for netns in terminate_udp_in:
            for ip, port in sorted(gone):
                destroy_udp_sockets_to(netns, ip, port)
        return result

    def _cached_map(self, codec: object) -> CachedMap:
        """This node's LB maps as the agent last wrote them (loaded from the kernel once)."""
        name = codec.map_name  # type: ignore[attr-defined]
        if name not in self._cached:
            self._cached[name] = CachedMap(self._map(codec))
        return self._cached[name]

    def resync(self) -> None:
        """Reload the cached view of the LB maps from the kernel."""
        for m in self._cached.values():
            m.resync()

    @property
    def ids(self) -> LBIds:
        """Backend ids and rev_nat indices assigned so far."""
        return self._ids

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
        return self._ids.backends.get((ipaddress.IPv4Address(ip), port, Protocol(protocol)))
