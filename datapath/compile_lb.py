"""Pure compiler: an :class:`~twin.semantics.tables.LBTable` -> the three LB maps.

    maps = compile_lb(table, ids)          # ids: LBIds from the previous compile
    maps.services / maps.backends / maps.revnat   desired map contents
    maps.ids                               carry into the next compile

Identifiers are stable across compiles:

* a backend, keyed by (ip, port, protocol), keeps its id while any service
  lists it (active or terminating); one backend shared by several frontends
  has one id.  Ids of backends that disappeared are released.
* a frontend, keyed by (ip, port, protocol), keeps its rev_nat_index while
  it exists.
* new ids come from a cursor that moves forward and wraps, skipping ids in
  use, so a released id is not handed out again right away (a socket that
  still holds an old translation never meets a recycled id soon after).

Slots: slot 0 is the master entry (``count`` = number of *active*
backends, ``rev_nat_index``); slots 1..count hold the active backends in the
table's (stable) order.  Terminating backends are in ``lb4_backends`` with
``BackendState.TERMINATING`` and in no slot.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from twin.model.enums import Protocol
from twin.semantics.tables import LBTable

from datapath.constants import BackendState, LBSlot
from datapath.errors import LBCompileError
from datapath.maps.lb_backends import BackendValue
from datapath.maps.lb_revnat import RevNatValue
from datapath.maps.lb_services import ServiceKey, ServiceValue

__all__ = ["AddrKey", "LBIds", "LBMaps", "compile_lb", "lb_dump_lines", "BACKEND_ID_MAX", "REVNAT_INDEX_MAX"]

#: (ip, port, protocol) of a backend or a frontend.
AddrKey = tuple[ipaddress.IPv4Address, int, Protocol]

BACKEND_ID_MAX = 0xFFFFFFFF
REVNAT_INDEX_MAX = 0xFFFF
_PORT_MAX = 0xFFFF
_SLOT_MAX = 0xFFFF
_STATES = {"active": BackendState.ACTIVE, "terminating": BackendState.TERMINATING}


@dataclass(frozen=True)
class LBIds:
    """Id assignments that persist across compiles (0 is never assigned)."""

    backends: Mapping[AddrKey, int] = field(default_factory=dict)
    frontends: Mapping[AddrKey, int] = field(default_factory=dict)
    next_backend: int = 1
    next_revnat: int = 1


@dataclass(frozen=True)
class LBMaps:
    """Desired contents of lb4_services, lb4_backends and lb4_reverse_nat."""

    services: Mapping[ServiceKey, ServiceValue]
    backends: Mapping[int, BackendValue]
    revnat: Mapping[int, RevNatValue]
    ids: LBIds


class _Allocator:
    """Stable ids for keys: ``assigned`` ids of keys in ``keep`` are kept/reserved."""

    def __init__(self, what: str, assigned: Mapping[AddrKey, int], cursor: int, hi: int,
                 keep: Iterable[AddrKey]) -> None:
        self.what, self.hi = what, hi
        keep = set(keep)
        self.old = {k: i for k, i in assigned.items() if k in keep and 1 <= i <= hi}
        # ids still owned by present keys not visited yet are never handed out
        self.reserved = set(self.old.values())
        self.new: dict[AddrKey, int] = {}
        self.in_use: set[int] = set()
        self.cursor = cursor if 1 <= cursor <= hi else 1

    def get(self, key: AddrKey) -> int:
        if key in self.new:
            return self.new[key]
        ident = self.old.get(key)
        if ident is None or ident in self.in_use:
            ident = self._fresh(key)
        self.new[key] = ident
        self.in_use.add(ident)
        return ident

    def _fresh(self, key: AddrKey) -> int:
        taken = self.in_use | self.reserved
        for _ in range(self.hi):
            cand = self.cursor
            self.cursor = cand + 1 if cand < self.hi else 1
            if cand not in taken:
                return cand
        raise LBCompileError(f"no free {self.what} left for {_fmt(key)}: all {self.hi} are in use")


def _fmt(key: AddrKey) -> str:
    ip, port, proto = key
    return f"{ip}:{port}/{Protocol(proto).name}"


def _addr(ip: object, port: int, proto: Protocol, where: str) -> AddrKey:
    try:
        addr = ipaddress.IPv4Address(ip)  # type: ignore[arg-type]
    except ValueError as exc:
        raise LBCompileError(f"{where}: {ip!r} is not an IPv4 address") from exc
    if not 1 <= int(port) <= _PORT_MAX:
        raise LBCompileError(f"{where}: port {port} is outside 1..65535")
    proto = Protocol(proto)
    if proto == Protocol.ANY or proto == Protocol.ICMP:
        raise LBCompileError(f"{where}: protocol {proto.name} cannot be load-balanced (TCP/UDP/SCTP)")
    return (addr, int(port), proto)


def compile_lb(table: LBTable, ids: LBIds | None = None) -> LBMaps:
    """Desired LB map contents for ``table``; ``ids`` are the previous assignments."""
    ids = ids or LBIds()
    frontends: list[tuple[AddrKey, list[tuple[AddrKey, BackendState]], str]] = []
    seen_fronts: dict[AddrKey, str] = {}
    states: dict[AddrKey, BackendState] = {}
    for svc in table.services:
        where = f"service {svc.service} frontend {svc.frontend_ip}:{svc.port}/{Protocol(svc.protocol).name}"
        fkey = _addr(svc.frontend_ip, svc.port, svc.protocol, where)
        if fkey in seen_fronts:
            raise LBCompileError(f"{where}: frontend {_fmt(fkey)} is also defined by {seen_fronts[fkey]}")
        seen_fronts[fkey] = svc.service
        bes: list[tuple[AddrKey, BackendState]] = []
        seen_bes: set[AddrKey] = set()
        for be in svc.backends:
            bwhere = f"{where} backend {be.pod}"
            bkey = _addr(be.ip, be.port, be.protocol, bwhere)
            if bkey in seen_bes:
                raise LBCompileError(f"{bwhere}: backend {_fmt(bkey)} is listed twice")
            seen_bes.add(bkey)
            state = _STATES.get(be.state)
            if state is None:
                raise LBCompileError(f"{bwhere}: unknown backend state {be.state!r} (active|terminating)")
            bes.append((bkey, state))
            # shared backends: active anywhere means active
            states[bkey] = min(states.get(bkey, state), state)
        if sum(1 for _, s in bes if s == BackendState.ACTIVE) + LBSlot.FIRST_BACKEND - 1 > _SLOT_MAX:
            raise LBCompileError(f"{where}: more than {_SLOT_MAX} active backends")
        frontends.append((fkey, bes, svc.service))

    b_alloc = _Allocator("backend id", ids.backends, ids.next_backend, BACKEND_ID_MAX, states)
    f_alloc = _Allocator("rev_nat_index", ids.frontends, ids.next_revnat, REVNAT_INDEX_MAX, seen_fronts)

    services: dict[ServiceKey, ServiceValue] = {}
    backends: dict[int, BackendValue] = {}
    revnat: dict[int, RevNatValue] = {}
    for fkey, bes, _name in frontends:
        ip, port, proto = fkey
        rev = f_alloc.get(fkey)
        revnat[rev] = RevNatValue(ip, port)
        active = [b for b, s in bes if s == BackendState.ACTIVE]
        services[ServiceKey(ip, port, proto, int(LBSlot.MASTER))] = ServiceValue(0, len(active), rev)
        for bkey, _state in bes:
            bid = b_alloc.get(bkey)
            backends[bid] = BackendValue(bkey[0], bkey[1], bkey[2], states[bkey])
        for i, bkey in enumerate(active):
            slot = int(LBSlot.FIRST_BACKEND) + i
            services[ServiceKey(ip, port, proto, slot)] = ServiceValue(b_alloc.get(bkey), 0, 0)

    new_ids = LBIds(
        backends=MappingProxyType(dict(b_alloc.new)),
        frontends=MappingProxyType(dict(f_alloc.new)),
        next_backend=b_alloc.cursor,
        next_revnat=f_alloc.cursor,
    )
    return LBMaps(services, backends, revnat, new_ids)


def lb_dump_lines(services: Mapping[ServiceKey, ServiceValue],
                  backends: Mapping[int, BackendValue] = {},
                  revnat: Mapping[int, RevNatValue] = {}) -> list[str]:
    """Sorted one-line-per-entry dump (for golden files and messages)."""
    out = []
    for k, v in sorted(services.items()):
        head = f"svc {k.address}:{k.port}/{k.protocol.name} slot={k.slot}"
        out.append(f"{head} count={v.count} revnat={v.rev_nat_index}" if k.is_master
                   else f"{head} backend={v.backend_id}")
    for bid, b in sorted(backends.items()):
        out.append(f"backend {bid} {b.ip}:{b.port}/{b.protocol.name} {b.state.name}")
    for idx, r in sorted(revnat.items()):
        out.append(f"revnat {idx} {r.ip}:{r.port}")
    return out
