"""Intent-named builders for PolicyTables used by the datapath tests."""
from __future__ import annotations

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol
from twin.semantics.tables import DirectionTable, L4Entry, PolicyTable


def allow(protocol: Protocol, lo: int = 0, hi: int | None = None, rule: int = 0) -> L4Entry:
    """Allow ``protocol`` on ports lo..hi (one port if hi is None; all ports for ANY)."""
    if protocol == Protocol.ANY:
        return L4Entry(Protocol.ANY, 0, 65535, MapVerdict.ALLOW, rule_ref=rule)
    return L4Entry(protocol, lo, lo if hi is None else hi, MapVerdict.ALLOW, rule_ref=rule)


def deny(protocol: Protocol, lo: int, hi: int | None = None, rule: int = 0,
         reason: DropReason = DropReason.POLICY_DENY) -> L4Entry:
    return L4Entry(protocol, lo, lo if hi is None else hi, MapVerdict.DENY, reason, rule)


def unenforced(ep: int, direction: Direction) -> DirectionTable:
    return DirectionTable(ep, direction, enforced=False)


def enforced(ep: int, direction: Direction, peers: dict[int, tuple[L4Entry, ...]] | None = None) -> DirectionTable:
    """An enforced direction: only ``peers`` entries pass, the rest is default-deny."""
    return DirectionTable(ep, direction, enforced=True, peers=peers or {})


def table(*directions: DirectionTable) -> PolicyTable:
    return PolicyTable(directions=tuple(directions), rule_texts=("default deny",) + tuple(
        f"rule {i}" for i in range(1, 10)))


def open_both_ways(*eps: int) -> list[DirectionTable]:
    return [unenforced(ep, d) for ep in eps for d in Direction]
