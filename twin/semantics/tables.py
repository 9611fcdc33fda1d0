"""Resolved policy tables: the semantics' answer in a form a datapath can compile.

A :class:`PolicyTable` is a pure function of a cluster (see
:meth:`twin.semantics.policy.PolicyEngine.policy_table`).  For each (endpoint identity,
direction) it says whether the direction is enforced and, per peer identity,
a list of *non-overlapping* L4 entries with deny precedence already applied.
Anything not covered by an entry in an enforced direction is default-deny
(``DropReason.POLICY_DENIED``).  The datapath compiles these into BPF map
entries; the twin answers the same questions directly from the semantics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol


@dataclass(frozen=True, order=True)
class L4Entry:
    """One resolved port range for one peer.

    ``protocol == Protocol.ANY`` means every IP protocol (ICMP included) and
    then ``port_lo == 0`` and ``port_hi == 65535``.  For TCP/UDP/SCTP the
    range is inclusive; ``0..65535`` means every port of that protocol.
    """

    protocol: Protocol
    port_lo: int
    port_hi: int
    verdict: MapVerdict
    drop_reason: DropReason = DropReason.NONE
    rule_ref: int = 0  # index into PolicyTable.rule_texts; 0 = "default"
    http_rules: tuple = ()  # HTTP rules (twin.model.objects.HTTPRule) when verdict is REDIRECT_L7


@dataclass(frozen=True)
class DirectionTable:
    """``enforced``: the datapath consults ``peers`` for this direction (a miss
    is a drop); otherwise everything passes.  A default-allow direction that
    has deny rules is consulted, with an allow-all fallback entry per peer."""

    ep_identity: int
    direction: Direction
    enforced: bool
    # peer identity -> non-overlapping entries, sorted
    peers: Mapping[int, tuple[L4Entry, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyTable:
    directions: tuple[DirectionTable, ...]
    # rule_ref -> one-line explanation; index 0 is the default-deny text
    rule_texts: tuple[str, ...] = ("default deny",)

    def lookup(self, ep_identity: int, direction: Direction) -> DirectionTable | None:
        for d in self.directions:
            if d.ep_identity == ep_identity and d.direction == direction:
                return d
        return None


@dataclass(frozen=True, order=True)
class LBBackend:
    """One backend of a service frontend.

    ``state`` is ``active`` (selectable for new connections) or
    ``terminating`` (kept so existing sockets still reverse-translate, never
    chosen for a new connection).
    """

    ip: object  # ipaddress.IPv4Address
    port: int
    protocol: Protocol
    pod: str  # ns/name
    state: str = "active"


@dataclass(frozen=True)
class LBService:
    """One frontend (service IP, port, protocol) and its backends, in a stable order."""

    service: str  # ns/name
    frontend_ip: object  # ipaddress.IPv4Address
    port: int
    protocol: Protocol
    kind: str  # ClusterIP | ExternalIP | LoadBalancer
    backends: tuple[LBBackend, ...] = ()

    @property
    def active(self) -> tuple[LBBackend, ...]:
        return tuple(b for b in self.backends if b.state == "active")


@dataclass(frozen=True)
class LBTable:
    services: tuple[LBService, ...] = ()
