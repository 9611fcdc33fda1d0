"""CiliumNetworkPolicy verdicts, evaluated per identity pair.

Semantics reproduced (docs: security/policy; pkg/policy):

* An endpoint is default-allow in a direction until a rule with a section for
  that direction (allow or deny) selects it; then that direction is
  default-deny.  ``enableDefaultDeny: {ingress: false}`` turns that off.
* Allows are a union; deny rules win over allows.
* A namespaced policy selects endpoints of its own namespace; its
  from/toEndpoints match its own namespace unless they name the namespace
  label.  Label selectors never match reserved identities (world, host...);
  entities do.
* A rule entry without peers but with ``toPorts`` applies to every peer; an
  entry with neither (``{}``) allows nothing.  No ``toPorts`` = every
  protocol and port (ICMP included).
* L7 (HTTP) rules on a port send that port to the proxy; an L4-only allow of
  the same peer and port (or an L3-only allow of the peer) wildcards L7.
  L7 denial is an HTTP 403.
* With ``allow-localhost=auto`` the node's own host identity may always reach
  its endpoints.

The resolved result per (endpoint, direction, peer) is a list of
:class:`~twin.semantics.tables.L4Entry`: the most specific entry wins
(protocol+port range over protocol ANY), which is exactly how the datapath's
LPM policy map is looked up.  The twin answers verdicts from this same table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol, ReservedIdentity, Verdict
from twin.model.objects import Cluster, HTTPRule, LabelSelector, NetworkPolicy, PeerRule, PolicySpec, Requirement
from twin.semantics.identity import (
    NAMESPACE_LABEL, Identities, selector_matches_labels, selector_names_namespace,
)
from twin.semantics.tables import DirectionTable, L4Entry, PolicyTable

L4_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
ENTITY_IDS = {
    "world": {int(ReservedIdentity.WORLD)},
    "host": {int(ReservedIdentity.HOST)},
    "remote-node": {int(ReservedIdentity.REMOTE_NODE)},
    "health": {int(ReservedIdentity.HEALTH)},
    "init": {int(ReservedIdentity.INIT)},
    "unmanaged": {int(ReservedIdentity.UNMANAGED)},
    "kube-apiserver": {int(ReservedIdentity.KUBE_APISERVER)},
    "ingress": {int(ReservedIdentity.INGRESS)},
}
#: Peers every table is computed for besides pod identities.
RESERVED_PEERS = (int(ReservedIdentity.HOST), int(ReservedIdentity.WORLD), int(ReservedIdentity.REMOTE_NODE))


@dataclass(frozen=True)
class RuleRef:
    policy: str  # "default/rule1"
    spec_index: int
    section: str  # ingress, egress, ingressDeny, egressDeny
    index: int
    text: str
    spec_path: str = "spec"


@dataclass(frozen=True)
class _Item:
    deny: bool
    protocol: Protocol  # ANY = every protocol
    lo: int
    hi: int
    http: tuple[HTTPRule, ...] | None
    ref: int


@dataclass(frozen=True)
class Decision:
    """The verdict of one direction (or a whole flow) with its explanation."""

    verdict: Verdict
    drop_reason: DropReason = DropReason.NONE
    layer: str = "L3/L4"  # or "L7"
    http_status: int | None = None
    explanation: str = ""
    rule_refs: tuple[int, ...] = ()

    @property
    def forwarded(self) -> bool:
        return self.verdict == Verdict.FORWARDED


SECTIONS = {
    Direction.INGRESS: (("ingress", False, "fromEndpoints"), ("ingressDeny", True, "fromEndpoints")),
    Direction.EGRESS: (("egress", False, "toEndpoints"), ("egressDeny", True, "toEndpoints")),
}


class PolicyEngine:
    """All policy questions about one cluster; results cached per identity."""

    def __init__(self, cluster: Cluster, identities: Identities | None = None):
        self.cluster = cluster
        self.ids = identities or Identities(cluster)
        self._tables: dict[tuple[int, Direction], DirectionTable] = {}
        self._peer_cache: dict[tuple[int, Direction, int], tuple[L4Entry, ...]] = {}

    # ------------------------------------------------------------ rule refs
    @cached_property
    def rule_refs(self) -> tuple[RuleRef, ...]:
        refs = [RuleRef("", 0, "", 0, "default deny"),
                RuleRef("", 0, "", 0, "allow-localhost=auto: the node's own host identity may reach its endpoints"),
                RuleRef("", 0, "", 0, "default allow (enableDefaultDeny: false); only deny rules apply")]
        for pol in self.cluster.policies:
            for spec in pol.specs:
                for section, _, _ in SECTIONS[Direction.INGRESS] + SECTIONS[Direction.EGRESS]:
                    for rule in getattr(spec, _attr(section)):
                        where = f"{spec.path}.{section}[{rule.index}]"
                        refs.append(RuleRef(pol.key, spec.index, section, rule.index,
                                            f"CNP {pol.key} {where}", spec.path))
        return tuple(refs)

    @cached_property
    def _ref_index(self) -> dict[tuple, int]:
        return {(r.policy, r.spec_path, r.section, r.index): i for i, r in enumerate(self.rule_refs) if r.policy}

    def rule_texts(self) -> tuple[str, ...]:
        return tuple(r.text for r in self.rule_refs)

    # ------------------------------------------------------------ selection
    def _selects(self, pol: NetworkPolicy, spec: PolicySpec, identity: int) -> bool:
        labels = self.ids.labels_of(identity)
        if labels.get(NAMESPACE_LABEL) != pol.namespace:
            return False
        return selector_matches_labels(spec.endpoint_selector or LabelSelector(), labels)

    def _peer_selector_matches(self, pol: NetworkPolicy, sel: LabelSelector, peer: int) -> bool:
        labels = self.ids.labels_of(peer)
        if NAMESPACE_LABEL not in labels:  # reserved identities carry no k8s labels
            return False
        if not selector_names_namespace(sel) and labels[NAMESPACE_LABEL] != pol.namespace:
            return False
        return selector_matches_labels(sel, labels)

    def _entity_matches(self, entities: tuple[str, ...], peer: int) -> bool:
        for e in entities:
            if e == "all":
                return True
            if e == "cluster" and peer != int(ReservedIdentity.WORLD):
                return True
            if peer in ENTITY_IDS.get(e, ()):
                return True
        return False

    def _peer_matches(self, pol: NetworkPolicy, rule: PeerRule, peer: int) -> bool:
        if not rule.has_peers:
            return rule.to_ports is not None  # L4-only rule: every peer; `{}`: nobody
        if rule.endpoints is not None and any(self._peer_selector_matches(pol, s, peer) for s in rule.endpoints):
            return True
        return rule.entities is not None and self._entity_matches(rule.entities, peer)

    def selecting(self, identity: int) -> list[tuple[NetworkPolicy, PolicySpec]]:
        return [(pol, spec) for pol in self.cluster.policies for spec in pol.specs
                if self._selects(pol, spec, identity)]

    def enforced(self, identity: int, direction: Direction) -> bool:
        for pol, spec in self.selecting(identity):
            allow, deny = (spec.ingress, spec.ingress_deny) if direction == Direction.INGRESS else (spec.egress, spec.egress_deny)
            dd = spec.default_deny_ingress if direction == Direction.INGRESS else spec.default_deny_egress
            if (allow or deny) and dd is not False:
                return True
        return False

    def has_deny(self, identity: int, direction: Direction) -> bool:
        return any(spec.ingress_deny if direction == Direction.INGRESS else spec.egress_deny
                   for _, spec in self.selecting(identity))

    def consulted(self, identity: int, direction: Direction) -> bool:
        """Whether rules decide this direction at all (default deny on, or deny rules present).

        Deny rules apply even where ``enableDefaultDeny: false`` keeps the
        direction default-allow (Cilium: denies take precedence)."""
        return self.enforced(identity, direction) or self.has_deny(identity, direction)

    # ------------------------------------------------------------ ports
    def _named_port(self, name: str, protocol: str, holder_identity: int) -> set[tuple[Protocol, int]]:
        out = set()
        for pod in self.ids.pods_by_identity.get(holder_identity, ()):
            for c in pod.containers:
                for cp in c.ports:
                    if cp.name == name and protocol in ("ANY", cp.protocol):
                        out.add((Protocol[cp.protocol], cp.port))
        return out

    def _items(self, identity: int, direction: Direction, peer: int) -> list[_Item]:
        items: list[_Item] = []
        holder = identity if direction == Direction.INGRESS else peer  # whose named ports
        for pol, spec in self.selecting(identity):
            for section, deny, _ in SECTIONS[direction]:
                for rule in getattr(spec, _attr(section)):
                    if not self._peer_matches(pol, rule, peer):
                        continue
                    ref = self._ref_index[(pol.key, spec.path, section, rule.index)]
                    if rule.to_ports is None:
                        items.append(_Item(deny, Protocol.ANY, 0, 65535, None, ref))
                        continue
                    for pr in rule.to_ports:
                        ports = pr.ports or ()
                        if not ports:
                            items.append(_Item(deny, Protocol.ANY, 0, 65535, pr.http, ref))
                        for pp in ports:
                            if isinstance(pp.port, str):
                                for proto, num in sorted(self._named_port(pp.port, pp.protocol, holder)):
                                    # L7 (HTTP) rules only ever apply to TCP; a named port that
                                    # resolves to UDP/SCTP gets the L4 part only
                                    items.append(_Item(deny, proto, num, num, pr.http if proto == Protocol.TCP else None, ref))
                                continue
                            lo, hi = (0, 65535) if pp.port == 0 else (pp.port, pp.end_port or pp.port)
                            if pp.protocol == "ANY":
                                protos = (Protocol.TCP,) if pr.http is not None else L4_PROTOCOLS
                            else:
                                protos = (Protocol[pp.protocol],)
                            for proto in protos:
                                items.append(_Item(deny, proto, lo, hi, pr.http, ref))
        if direction == Direction.INGRESS and peer == int(ReservedIdentity.HOST) \
                and self.cluster.values.allow_localhost in ("auto", "always"):
            items.append(_Item(False, Protocol.ANY, 0, 65535, None, 1))
        if not self.enforced(identity, direction) and self.has_deny(identity, direction):
            # default allow (enableDefaultDeny: false), consulted only for its denies
            items.append(_Item(False, Protocol.ANY, 0, 65535, None, 2))
        return items

    # ------------------------------------------------------------ resolution
    def peer_entries(self, identity: int, direction: Direction, peer: int) -> tuple[L4Entry, ...]:
        """Resolved entries for one peer (deny precedence applied, L7 wildcarding done)."""
        key = (identity, direction, peer)
        if key in self._peer_cache:
            return self._peer_cache[key]
        items = self._items(identity, direction, peer)
        out: list[L4Entry] = []
        any_deny = [i for i in items if i.deny and i.protocol == Protocol.ANY]
        any_allow = [i for i in items if not i.deny and i.protocol == Protocol.ANY]
        if any_deny:  # an L3 deny of this peer: nothing else matters
            out.append(L4Entry(Protocol.ANY, 0, 65535, MapVerdict.DENY, DropReason.POLICY_DENY, any_deny[0].ref))
        else:
            if any_allow:  # L3-only allow: fallback for every protocol and port
                out.append(L4Entry(Protocol.ANY, 0, 65535, MapVerdict.ALLOW, DropReason.NONE, any_allow[0].ref))
            for proto in L4_PROTOCOLS:
                mine = [i for i in items if i.protocol == proto]
                if mine:
                    out.extend(self._resolve_ports(proto, mine, bool(any_allow)))
        result = tuple(sorted(out, key=lambda e: (e.protocol, e.port_lo)))
        self._peer_cache[key] = result
        return result

    @staticmethod
    def _resolve_ports(proto: Protocol, items: list[_Item], l3_allowed: bool) -> list[L4Entry]:
        """Split one protocol's port space at every rule boundary and resolve each piece.

        deny > L4-only allow > L3-only allow (covers L7 too) > L7 redirect > default.
        Pieces equal to what the protocol-ANY fallback already says are left out.
        """
        bounds = sorted({0, 65536} | {i.lo for i in items} | {i.hi + 1 for i in items})
        pieces: list[list] = []
        for lo, nxt in zip(bounds, bounds[1:]):
            hi = nxt - 1
            cover = [i for i in items if i.lo <= lo and hi <= i.hi]
            deny = [i for i in cover if i.deny]
            l4 = [i for i in cover if not i.deny and i.http is None]
            l7 = [i for i in cover if not i.deny and i.http is not None]
            if deny:
                res = (MapVerdict.DENY, deny[0].ref, ())
            elif l3_allowed:
                res = None  # the ANY entry answers
            elif l4:
                res = (MapVerdict.ALLOW, l4[0].ref, ())
            elif l7:
                res = (MapVerdict.REDIRECT_L7, l7[0].ref, tuple(dict.fromkeys(r for i in l7 for r in i.http)))
            else:
                res = None  # default deny
            if pieces and pieces[-1][2] == res and pieces[-1][1] + 1 == lo:
                pieces[-1][1] = hi
            else:
                pieces.append([lo, hi, res])
        out = []
        for lo, hi, res in pieces:
            if res is not None:
                verdict, ref, rules = res
                reason = DropReason.POLICY_DENY if verdict == MapVerdict.DENY else DropReason.NONE
                out.append(L4Entry(proto, lo, hi, verdict, reason, ref, rules))
        return out

    def direction_table(self, identity: int, direction: Direction, peers: tuple[int, ...] | None = None) -> DirectionTable:
        key = (identity, direction)
        if peers is None and key in self._tables:
            return self._tables[key]
        enforced = self.consulted(identity, direction)
        table: dict[int, tuple[L4Entry, ...]] = {}
        if enforced:
            for peer in (peers if peers is not None else self.all_peers):
                entries = self.peer_entries(identity, direction, peer)
                if entries:
                    table[peer] = entries
        dt = DirectionTable(identity, direction, enforced, table)
        if peers is None:
            self._tables[key] = dt
        return dt

    @cached_property
    def all_peers(self) -> tuple[int, ...]:
        return tuple(self.ids.pod_identities) + RESERVED_PEERS

    def policy_table(self, identities: tuple[int, ...] | None = None) -> PolicyTable:
        """The whole resolved table (for the identities given, default all pod identities)."""
        dirs = []
        for ident in identities if identities is not None else self.ids.pod_identities:
            for d in (Direction.INGRESS, Direction.EGRESS):
                dirs.append(self.direction_table(ident, d))
        return PolicyTable(tuple(dirs), self.rule_texts())

    # ------------------------------------------------------------ verdicts
    def lookup(self, identity: int, direction: Direction, peer: int, protocol: Protocol, port: int) -> L4Entry | None:
        """Most-specific-entry lookup; the same rule the BPF LPM map applies."""
        entries = self.peer_entries(identity, direction, peer)
        best = None
        for e in entries:
            if e.protocol == protocol and e.port_lo <= port <= e.port_hi:
                return e
            if e.protocol == Protocol.ANY:
                best = e
        return best

    def decide(self, identity: int, direction: Direction, peer: int, protocol: Protocol, port: int,
               http: tuple[str, str] | None = None) -> Decision:
        """Verdict of one direction for one packet (and, if given, one HTTP request)."""
        who = self.ids.describe(identity)
        peer_s = self.ids.describe(peer)
        dname = direction.name.lower()
        what = f"{protocol.name}/{port}" if protocol in L4_PROTOCOLS else protocol.name
        if not self.consulted(identity, direction):
            return Decision(Verdict.FORWARDED, explanation=f"{dname} of {who}: not selected by any {dname} rule (default allow)")
        e = self.lookup(identity, direction, peer, protocol, port)
        texts = self.rule_texts()
        if e is None:
            return Decision(Verdict.DROPPED, DropReason.POLICY_DENIED,
                            explanation=f"{dname} of {who}: no rule allows {peer_s} on {what} (default deny once selected)")
        if e.verdict == MapVerdict.DENY:
            return Decision(Verdict.DROPPED, DropReason.POLICY_DENY, explanation=f"[{texts[e.rule_ref]}] denies {peer_s} on {what} ({dname} of {who})", rule_refs=(e.rule_ref,))
        if e.verdict == MapVerdict.REDIRECT_L7 and http is not None:
            method, path = http
            for r in e.http_rules:
                if (not r.method or re.fullmatch(r.method, method)) and (not r.path or re.fullmatch(r.path, path)):
                    return Decision(Verdict.FORWARDED, layer="L7", http_status=None,
                                    explanation=f"[{texts[e.rule_ref]}] allows {peer_s} on {what} → [L7] {method} {path} matches {r.method or '*'} {r.path or '*'}",
                                    rule_refs=(e.rule_ref,))
            return Decision(Verdict.DROPPED, DropReason.L7_DENIED, layer="L7", http_status=403,
                            explanation=f"[{texts[e.rule_ref]}] allows {peer_s} on {what} → [L7] {method} {path} matches no HTTP rule: 403 Access denied",
                            rule_refs=(e.rule_ref,))
        layer = "L7" if e.verdict == MapVerdict.REDIRECT_L7 else "L3/L4"
        return Decision(Verdict.FORWARDED, layer=layer,
                        explanation=f"[{texts[e.rule_ref]}] allows {peer_s} on {what} ({dname} of {who})",
                        rule_refs=(e.rule_ref,))


def _attr(section: str) -> str:
    return {"ingress": "ingress", "egress": "egress", "ingressDeny": "ingress_deny", "egressDeny": "egress_deny"}[section]
