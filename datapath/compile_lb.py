"""Pure compiler: an :class:`~twin.semantics.tables.LBTable` -> the three LB maps.

    maps = compile_lb(table, ids)          # ids: LBIds from the previous compile
    maps.services / maps.backends / maps.revnat   desired map contents
    maps.ids                               carry into the next compile

    compiler = LBCompiler()                # incremental: what an agent keeps
    delta = compiler.plan_table(table)     # or compiler.plan(changed_frontends, removed_keys)
    apply_lb_delta(delta, ...); compiler.commit(delta)   # only the changed entries

``compile_lb`` is the same compiler, fresh and seeded with ``ids``.

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
from twin.semantics.tables import LBService, LBTable

from datapath.constants import BackendState, LBSlot
from datapath.errors import LBCompileError
from datapath.maps.lb_backends import BackendValue
from datapath.maps.lb_revnat import RevNatValue
from datapath.maps.lb_services import ServiceKey, ServiceValue

__all__ = ["AddrKey", "LBIds", "LBMaps", "LBCompiler", "LBDelta", "compile_lb", "lb_dump_lines", "BACKEND_ID_MAX", "REVNAT_INDEX_MAX"]

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


@dataclass(frozen=True)
class _Front:
    """One compiled frontend: where it came from and the entries it owns."""

    key: AddrKey
    source: LBService
    rev: int
    backends: tuple[tuple[AddrKey, BackendState], ...]
    entries: Mapping[ServiceKey, ServiceValue]  # master + active slots


@dataclass(frozen=True)
class LBDelta:
    """What one change does to the LB maps, and to the compiler's state.

    ``old_*``/``new_*`` hold only the entries the change touches (before and
    after); :func:`datapath.reconcile.apply_lb_delta` writes the difference
    in the safe order.  :meth:`LBCompiler.commit` makes it the compiler's
    state once the kernel took it."""

    old_services: Mapping[ServiceKey, ServiceValue]
    new_services: Mapping[ServiceKey, ServiceValue]
    old_backends: Mapping[int, BackendValue]
    new_backends: Mapping[int, BackendValue]
    old_revnat: Mapping[int, RevNatValue]
    new_revnat: Mapping[int, RevNatValue]
    fronts_set: Mapping[AddrKey, _Front]
    fronts_removed: frozenset[AddrKey]
    be_counts: Mapping[AddrKey, tuple[int, int]]  # (listed by, active in) frontends; (0, 0) = gone
    be_ids_added: Mapping[AddrKey, int]
    be_ids_released: Mapping[AddrKey, int]
    rev_ids_released: frozenset[int]
    next_backend: int
    next_revnat: int

    @property
    def frontends_compiled(self) -> int:
        """Frontends this change compiled (added or changed)."""
        return len(self.fronts_set)

    @property
    def empty(self) -> bool:
        return not (self.fronts_set or self.fronts_removed)


class LBCompiler:
    """Incremental LB compiler: keeps what it compiled, compiles only what changed.

    :meth:`plan_table` diffs a whole :class:`LBTable` against the last one by
    frontend (an unchanged :class:`LBService` costs a dict lookup and an
    equality test, nothing is compiled for it); :meth:`plan` takes the change
    directly (frontends added/changed and frontends removed), which is what an
    agent that watches services one by one has.  Ids follow the rules in the
    module docstring; ``seed`` are ids from an earlier compile to honour for
    keys that are still present (what :func:`compile_lb` passes).

    Planning does not change the compiler; :meth:`commit` does, after the
    kernel maps took the delta, so a failed write leaves the compiler at the
    last state the kernel fully holds."""

    def __init__(self, seed: LBIds | None = None) -> None:
        seed = seed or LBIds()
        self._seed: LBIds | None = seed if (seed.backends or seed.frontends) else None
        self._fronts: dict[AddrKey, _Front] = {}
        self._raw: dict[tuple, AddrKey] = {}  # LBService's own (ip, port, protocol) -> canonical key
        self._be_counts: dict[AddrKey, tuple[int, int]] = {}
        self._be_ids: dict[AddrKey, int] = {}
        self._be_used: set[int] = set()
        self._rev_used: set[int] = set()
        self._next_backend = seed.next_backend
        self._next_revnat = seed.next_revnat

    # -- what the compiler holds ---------------------------------------------------

    @property
    def ids(self) -> LBIds:
        return LBIds(
            backends=MappingProxyType(dict(self._be_ids)),
            frontends=MappingProxyType({k: f.rev for k, f in self._fronts.items()}),
            next_backend=self._next_backend, next_revnat=self._next_revnat,
        )

    def backend_id(self, key: AddrKey) -> int | None:
        return self._be_ids.get(key)

    def maps(self) -> LBMaps:
        """Every entry the compiled frontends own (O(frontends))."""
        services: dict[ServiceKey, ServiceValue] = {}
        backends: dict[int, BackendValue] = {}
        revnat: dict[int, RevNatValue] = {}
        for key, front in self._fronts.items():
            services.update(front.entries)
            revnat[front.rev] = RevNatValue(key[0], key[1])
        for bkey, bid in self._be_ids.items():
            backends[bid] = _backend_value(bkey, self._be_counts[bkey])
        return LBMaps(services, backends, revnat, self.ids)

    def __len__(self) -> int:
        return len(self._fronts)

    # -- planning --------------------------------------------------------------------

    def plan_table(self, table: LBTable) -> LBDelta:
        """The change from the last committed table to ``table`` (diffed by frontend)."""
        upserts: list[LBService] = []
        seen: dict[tuple, str] = {}
        for svc in table.services:
            raw = (svc.frontend_ip, svc.port, svc.protocol)
            if raw in seen:
                where = f"service {svc.service} frontend {svc.frontend_ip}:{svc.port}/{Protocol(svc.protocol).name}"
                raise LBCompileError(f"{where}: frontend {_fmt(_addr(*raw, where))} is also defined by {seen[raw]}")
            seen[raw] = svc.service
            key = self._raw.get(raw)
            if key is not None:
                old = self._fronts[key].source
                if old is svc or old == svc:
                    continue
            upserts.append(svc)
        removed = [k for raw, k in self._raw.items() if raw not in seen]
        return self.plan(upserts, removed)

    def plan(self, upserts: Iterable[LBService], removed: Iterable[AddrKey] = ()) -> LBDelta:
        """The change that sets the frontends ``upserts`` (added or changed) and
        removes the frontends keyed ``removed`` (canonical (ip, port, protocol))."""
        new: dict[AddrKey, tuple[LBService, tuple[tuple[AddrKey, BackendState], ...]]] = {}
        for svc in upserts:
            fkey, bes = _validate(svc)
            if fkey in new:
                raise LBCompileError(f"service {svc.service} frontend {_fmt(fkey)}: frontend {_fmt(fkey)} "
                                     f"is also defined by {new[fkey][0].service}")
            new[fkey] = (svc, bes)
        gone = {k for k in removed if k in self._fronts and k not in new}
        touched = gone | {k for k in new if k in self._fronts}

        # backend reference counts after the change, for every backend it touches
        counts: dict[AddrKey, list[int]] = {}

        def bump(bkey: AddrKey, state: BackendState, by: int) -> None:
            c = counts.get(bkey)
            if c is None:
                c = counts[bkey] = list(self._be_counts.get(bkey, (0, 0)))
            c[0] += by
            if state == BackendState.ACTIVE:
                c[1] += by

        for fkey in touched:
            for bkey, state in self._fronts[fkey].backends:
                bump(bkey, state, -1)
        for _svc, bes in new.values():
            for bkey, state in bes:
                bump(bkey, state, +1)

        # ids: release what nothing lists any more, then allocate in table order
        released = {b: self._be_ids[b] for b, c in counts.items() if c[0] == 0 and b in self._be_ids}
        rev_released = {self._fronts[k].rev for k in gone}
        seed_be = self._seed.backends if self._seed else {}
        seed_rev = self._seed.frontends if self._seed else {}
        be_alloc = _Ids("backend id", self._be_used, set(released.values()), self._next_backend, BACKEND_ID_MAX,
                        {seed_be[b] for b, c in counts.items() if c[0] > 0 and b in seed_be})
        rev_alloc = _Ids("rev_nat_index", self._rev_used, rev_released, self._next_revnat, REVNAT_INDEX_MAX,
                         {seed_rev[k] for k in new if k in seed_rev and k not in self._fronts})
        be_added: dict[AddrKey, int] = {}
        fronts_set: dict[AddrKey, _Front] = {}
        for fkey, (svc, bes) in new.items():
            old = self._fronts.get(fkey)
            rev = old.rev if old is not None else rev_alloc.get(fkey, seed_rev.get(fkey))
            for bkey, _state in bes:
                if bkey not in self._be_ids or bkey in released:
                    if bkey not in be_added:
                        be_added[bkey] = be_alloc.get(bkey, seed_be.get(bkey))
            fronts_set[fkey] = _Front(fkey, svc, rev, bes, {})

        def bid(bkey: AddrKey) -> int:
            return be_added[bkey] if bkey in be_added else self._be_ids[bkey]

        for fkey, front in fronts_set.items():
            ip, port, proto = fkey
            active = [b for b, s in front.backends if s == BackendState.ACTIVE]
            entries = {ServiceKey(ip, port, proto, int(LBSlot.MASTER)): ServiceValue(0, len(active), front.rev)}
            for i, bkey in enumerate(active):
                entries[ServiceKey(ip, port, proto, int(LBSlot.FIRST_BACKEND) + i)] = ServiceValue(bid(bkey), 0, 0)
            fronts_set[fkey] = _Front(fkey, front.source, front.rev, front.backends, MappingProxyType(entries))

        old_services: dict[ServiceKey, ServiceValue] = {}
        old_revnat: dict[int, RevNatValue] = {}
        for fkey in touched:
            old_services.update(self._fronts[fkey].entries)
            old_revnat[self._fronts[fkey].rev] = RevNatValue(fkey[0], fkey[1])
        new_services: dict[ServiceKey, ServiceValue] = {}
        new_revnat: dict[int, RevNatValue] = {}
        for fkey, front in fronts_set.items():
            new_services.update(front.entries)
            new_revnat[front.rev] = RevNatValue(fkey[0], fkey[1])
        old_backends = {self._be_ids[b]: _backend_value(b, self._be_counts[b]) for b in counts if b in self._be_ids}
        new_backends = {bid(b): _backend_value(b, tuple(c)) for b, c in counts.items() if c[0] > 0}
        return LBDelta(
            old_services, new_services, old_backends, new_backends, old_revnat, new_revnat,
            MappingProxyType(fronts_set), frozenset(gone),
            MappingProxyType({b: (c[0], c[1]) for b, c in counts.items()}),
            MappingProxyType(be_added), MappingProxyType(released), frozenset(rev_released),
            be_alloc.cursor, rev_alloc.cursor,
        )

    def commit(self, delta: LBDelta) -> None:
        """Make ``delta`` (planned on the current state) the compiler's state."""
        for fkey in delta.fronts_removed:
            front = self._fronts.pop(fkey)
            self._raw.pop(_raw_of(front.source), None)
        self._rev_used -= delta.rev_ids_released
        for fkey, front in delta.fronts_set.items():
            old = self._fronts.get(fkey)
            if old is not None:
                self._raw.pop(_raw_of(old.source), None)
            self._fronts[fkey] = front
            self._raw[_raw_of(front.source)] = fkey
            self._rev_used.add(front.rev)
        for bkey, bid in delta.be_ids_released.items():
            del self._be_ids[bkey]
            self._be_used.discard(bid)
        for bkey, bid in delta.be_ids_added.items():
            self._be_ids[bkey] = bid
            self._be_used.add(bid)
        for bkey, c in delta.be_counts.items():
            if c[0]:
                self._be_counts[bkey] = c
            else:
                self._be_counts.pop(bkey, None)
        self._next_backend, self._next_revnat = delta.next_backend, delta.next_revnat
        self._seed = None


class _Ids:
    """Id allocation for one plan: a cursor that moves forward and wraps, skipping
    ids in use (``used`` minus ``released``), ids allocated in this plan and
    ``reserved`` ones (seed ids of keys that are still present)."""

    def __init__(self, what: str, used: set[int], released: set[int], cursor: int, hi: int,
                 reserved: set[int]) -> None:
        self.what, self.used, self.released, self.hi = what, used, released, hi
        self.reserved = reserved
        self.fresh: set[int] = set()
        self.cursor = cursor if 1 <= cursor <= hi else 1

    def _taken(self, ident: int) -> bool:
        return ident in self.fresh or (ident in self.used and ident not in self.released)

    def get(self, key: AddrKey, wanted: int | None) -> int:
        if wanted is not None and 1 <= wanted <= self.hi and not self._taken(wanted):
            self.fresh.add(wanted)
            return wanted
        for _ in range(self.hi):
            cand = self.cursor
            self.cursor = cand + 1 if cand < self.hi else 1
            if not self._taken(cand) and cand not in self.reserved:
                self.fresh.add(cand)
                return cand
        raise LBCompileError(f"no free {self.what} left for {_fmt(key)}: all {self.hi} are in use")


def _raw_of(svc: LBService) -> tuple:
    return (svc.frontend_ip, svc.port, svc.protocol)


def _backend_value(bkey: AddrKey, counts: tuple[int, int]) -> BackendValue:
    # shared backends: active anywhere means active
    state = BackendState.ACTIVE if counts[1] > 0 else BackendState.TERMINATING
    return BackendValue(bkey[0], bkey[1], bkey[2], state)


def _validate(svc: LBService) -> tuple[AddrKey, tuple[tuple[AddrKey, BackendState], ...]]:
    where = f"service {svc.service} frontend {svc.frontend_ip}:{svc.port}/{Protocol(svc.protocol).name}"
    fkey = _addr(svc.frontend_ip, svc.port, svc.protocol, where)
    bes: list[tuple[AddrKey, BackendState]] = []
    seen: set[AddrKey] = set()
    for be in svc.backends:
        bwhere = f"{where} backend {be.pod}"
        bkey = _addr(be.ip, be.port, be.protocol, bwhere)
        if bkey in seen:
            raise LBCompileError(f"{bwhere}: backend {_fmt(bkey)} is listed twice")
        seen.add(bkey)
        state = _STATES.get(be.state)
        if state is None:
            raise LBCompileError(f"{bwhere}: unknown backend state {be.state!r} (active|terminating)")
        bes.append((bkey, state))
    if sum(1 for _, s in bes if s == BackendState.ACTIVE) + LBSlot.FIRST_BACKEND - 1 > _SLOT_MAX:
        raise LBCompileError(f"{where}: more than {_SLOT_MAX} active backends")
    return fkey, tuple(bes)


def compile_lb(table: LBTable, ids: LBIds | None = None) -> LBMaps:
    """Desired LB map contents for ``table``; ``ids`` are the previous assignments."""
    compiler = LBCompiler(ids)
    compiler.commit(compiler.plan_table(table))
    return compiler.maps()


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
