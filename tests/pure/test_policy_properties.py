"""Hypothesis properties of the policy semantics, checked against a naive reference evaluator.

The reference works from the generated manifest dicts directly (not from the
loader's model objects): selectors are matched against each pod's labels plus
its namespace, rules are scanned one by one, and the answer is
deny > allow without L7 > L7 (union of HTTP rules) > default deny.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinhelp  # noqa: F401  (puts tests/ on sys.path)
import strategies as S
from twin.model.build import build_cluster
from twin.model.enums import Direction, MapVerdict, Protocol, ReservedIdentity, Verdict
from twin.model.yamlsrc import Source
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.pure

TCP, UDP, SCTP, ICMP = Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP
HOST, WORLD, REMOTE = int(ReservedIdentity.HOST), int(ReservedIdentity.WORLD), int(ReservedIdentity.REMOTE_NODE)
L4 = {"TCP": TCP, "UDP": UDP, "SCTP": SCTP}
def PROPS_N(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PROPS = PROPS_N(80)
HTTP_REQUESTS = (("GET", "/"), ("POST", "/b"), ("PUT", "/a/x"), ("GET", "/ax"))


def build(c: dict) -> ClusterView:
    return ClusterView(build_cluster([Source("gen.yaml", S.to_yaml(c))]))


# ------------------------------------------------------------------ the reference

def _norm(key: str) -> str:
    for p in ("k8s:", "any:"):
        if key.startswith(p):
            return key[len(p):]
    return key


def sel_matches(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(_norm(k)) != str(v):
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = _norm(e["key"]), e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def names_namespace(sel: dict) -> bool:
    keys = list(sel.get("matchLabels") or {}) + [e["key"] for e in sel.get("matchExpressions") or []]
    return any(_norm(k) == S.NS_LABEL for k in keys)


@dataclass
class Ident:
    ns: str | None  # None for reserved identities
    labels: dict  # pod labels plus the namespace label
    ports: list = field(default_factory=list)  # (name, protocol, number) of every pod with this identity


@dataclass(frozen=True)
class Answer:
    kind: str  # DENY, ALLOW, L7, NONE
    texts: frozenset = frozenset()  # rules that justify the answer
    http: frozenset = frozenset()  # (method, path) for L7


class Reference:
    def __init__(self, c: dict, view: ClusterView):
        self.c = c
        self.idents: dict[int, Ident] = {}
        for p in c["pods"]:
            meta = p["metadata"]
            num = view.ids.of_pod[f"{meta['namespace']}/{meta['name']}"]
            labs = dict(meta.get("labels") or {})
            labs[S.NS_LABEL] = meta["namespace"]
            info = self.idents.setdefault(num, Ident(meta["namespace"], labs))
            assert info.labels == labs, "one identity, two label sets"
            for cp in p["spec"]["containers"][0].get("ports", []):
                info.ports.append((cp["name"], cp.get("protocol", "TCP"), cp["containerPort"]))
        for r in (HOST, WORLD, REMOTE):
            self.idents[r] = Ident(None, {})
        self.localhost = view.cluster.values.allow_localhost in ("auto", "always")

    @staticmethod
    def specs(pol):
        if pol.get("spec") is not None:
            yield "spec", pol["spec"]
        for i, s in enumerate(pol.get("specs") or []):
            yield f"specs[{i}]", s

    def selected_rules(self, ep: int, direction: str):
        """(policy, text, rule, deny) of every rule of `direction` in specs selecting ep."""
        me = self.idents[ep]
        for pol in self.c["policies"]:
            if pol["metadata"]["namespace"] != me.ns:
                continue
            for path, spec in self.specs(pol):
                if not sel_matches(spec["endpointSelector"], me.labels):
                    continue
                for section in (direction, direction + "Deny"):
                    for i, rule in enumerate(spec.get(section) or []):
                        yield pol, f"CNP {pol['metadata']['namespace']}/{pol['metadata']['name']} {path}.{section}[{i}]", \
                            rule, section.endswith("Deny")

    def enforced(self, ep: int, direction: str) -> bool:
        return any(True for _ in self.selected_rules(ep, direction))

    def peer_matches(self, pol: dict, rule: dict, direction: str, peer: int) -> bool:
        pk, ek = ("fromEndpoints", "fromEntities") if direction == "ingress" else ("toEndpoints", "toEntities")
        if pk not in rule and ek not in rule:
            return "toPorts" in rule  # L4-only: every peer; {}: nobody
        them = self.idents[peer]
        for sel in rule.get(pk) or []:
            if them.ns is None:
                continue  # label selectors never match reserved identities
            if not names_namespace(sel) and them.ns != pol["metadata"]["namespace"]:
                continue
            if sel_matches(sel, them.labels):
                return True
        for e in rule.get(ek) or []:
            if e == "all" or (e == "cluster" and peer != WORLD) or \
                    {"host": HOST, "world": WORLD, "remote-node": REMOTE}.get(e) == peer:
                return True
        return False

    def coverage(self, rule: dict, holder: int, proto: Protocol, port: int):
        """Yield the HTTP rules (None = no L7) of every part of `rule` that covers proto/port."""
        if "toPorts" not in rule:
            yield None
            return
        if proto == ICMP:
            return  # every toPorts entry names a port: ICMP is not covered
        for pr in rule["toPorts"]:
            http = (pr.get("rules") or {}).get("http")
            http = None if http is None else frozenset((h.get("method", ""), h.get("path", "")) for h in http)
            for pp in pr["ports"]:
                want = str(pp.get("protocol", "ANY")).upper()
                raw = pp["port"]
                if isinstance(raw, str) and not raw.isdigit():  # named port
                    if any(n == raw and (want in ("ANY", p)) and L4[p] == proto and num == port
                           for n, p, num in self.idents[holder].ports):
                        yield http
                    continue
                num = int(raw)
                protos = {TCP} if (want == "ANY" and http is not None) else \
                    {TCP, UDP, SCTP} if want == "ANY" else {L4[want]}
                lo, hi = (0, 65535) if num == 0 else (num, pp.get("endPort") or num)
                if proto in protos and lo <= port <= hi:
                    yield http

    def rules_for(self, ep: int, direction: str, peer: int):
        holder = ep if direction == "ingress" else peer
        out = [(text, rule, deny, holder) for pol, text, rule, deny in self.selected_rules(ep, direction)
               if self.peer_matches(pol, rule, direction, peer)]
        return out

    def answer(self, matched, ep: int, direction: str, peer: int, proto: Protocol, port: int) -> Answer:
        denies, plain, l7 = set(), set(), []
        for text, rule, deny, holder in matched:
            for http in self.coverage(rule, holder, proto, port):
                if deny:
                    denies.add(text)
                elif http is None:
                    plain.add(text)
                else:
                    l7.append((text, http))
        if direction == "ingress" and peer == HOST and self.localhost:
            plain.add("allow-localhost=auto: the node's own host identity may reach its endpoints")
        if denies:
            return Answer("DENY", frozenset(denies))
        if plain:
            return Answer("ALLOW", frozenset(plain))
        if l7:
            return Answer("L7", frozenset(t for t, _ in l7), frozenset(h for _, hs in l7 for h in hs))
        return Answer("NONE")


def http_matches(rules, method: str, path: str) -> bool:
    return any((not m or re.fullmatch(m, method)) and (not p or re.fullmatch(p, path)) for m, p in rules)


def interesting_ports(c: dict) -> list[int]:
    ports = {0, 1, 53, 80, 8080, 5353, 65535}
    for pol in c["policies"]:
        for _, spec in Reference.specs(pol):
            for section in ("ingress", "ingressDeny", "egress", "egressDeny"):
                for rule in spec.get(section) or []:
                    for pr in rule.get("toPorts") or []:
                        for pp in pr["ports"]:
                            if str(pp["port"]).isdigit():
                                lo = int(pp["port"])
                                hi = pp.get("endPort") or lo
                                ports |= {lo - 1, lo, lo + 1, hi - 1, hi, hi + 1}
    return sorted(p for p in ports if 0 <= p <= 65535)


DIRS = (("ingress", Direction.INGRESS), ("egress", Direction.EGRESS))


# ------------------------------------------------------------------ lookup == reference

@PROPS_N(120)
@given(S.clusters())
def test_resolved_table_lookup_agrees_with_naive_reference_evaluator(c):
    v = build(c)
    ref = Reference(c, v)
    eng = v.engine
    texts = eng.rule_texts()
    ports = interesting_ports(c)
    peers = list(v.ids.pod_identities) + [HOST, WORLD, REMOTE]
    for ep in v.ids.pod_identities:
        for dname, direction in DIRS:
            enforced = ref.enforced(ep, dname)
            assert eng.enforced(ep, direction) == enforced
            table = eng.direction_table(ep, direction)
            assert table.enforced == enforced
            for peer in peers:
                matched = ref.rules_for(ep, dname, peer)
                entries = eng.peer_entries(ep, direction, peer)
                # entries of one protocol never overlap
                for proto in (TCP, UDP, SCTP):
                    spans = sorted((e.port_lo, e.port_hi) for e in entries if e.protocol == proto)
                    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), entries
                assert all((e.port_lo, e.port_hi) == (0, 65535) for e in entries if e.protocol == Protocol.ANY)
                if enforced:
                    assert (peer in table.peers) == bool(entries)
                for proto in (TCP, UDP, SCTP, ICMP):
                    for port in (ports if proto != ICMP else [0]):
                        want = ref.answer(matched, ep, dname, peer, proto, port)
                        got = eng.lookup(ep, direction, peer, proto, port)
                        where = f"ep={ep} {dname} peer={peer} {proto.name}/{port}: want {want}, got {got}"
                        if want.kind == "NONE":
                            assert got is None, where
                            continue
                        assert got is not None, where
                        assert got.verdict == {"DENY": MapVerdict.DENY, "ALLOW": MapVerdict.ALLOW,
                                               "L7": MapVerdict.REDIRECT_L7}[want.kind], where
                        assert texts[got.rule_ref] in want.texts, where
                        if want.kind == "L7":
                            assert {(r.method, r.path) for r in got.http_rules} == set(want.http), where
                        # the verdict of the direction follows from the same answer
                        if proto == TCP and want.kind == "L7":
                            for method, path in HTTP_REQUESTS:
                                d = eng.decide(ep, direction, peer, proto, port, (method, path))
                                assert d.forwarded == (not enforced or http_matches(want.http, method, path)), where
                        else:
                            d = eng.decide(ep, direction, peer, proto, port)
                            assert d.forwarded == (not enforced or want.kind != "DENY"), where


@PROPS_N(60)
@given(S.clusters())
def test_flow_verdict_is_egress_of_source_then_ingress_of_destination(c):
    v = build(c)
    ref = Reference(c, v)
    pods = v.cluster.pods
    for src in pods:
        for dst in pods:
            sid, did = v.ids.pod_identity(src), v.ids.pod_identity(dst)
            for proto, port in ((TCP, 80), (UDP, 53), (ICMP, 0)):
                ok = True
                for ep, dname, peer in ((sid, "egress", did), (did, "ingress", sid)):
                    if ref.enforced(ep, dname):
                        ok &= ref.answer(ref.rules_for(ep, dname, peer), ep, dname, peer, proto, port).kind in ("ALLOW", "L7")
                fv = v.flows.evaluate(v.flows.query(src, dst.ip, proto, port))
                assert (fv.verdict == Verdict.FORWARDED) == ok, fv.explanation


# ------------------------------------------------------------------ monotonicity

def all_flows(v: ClusterView):
    out = {}
    for src in v.cluster.pods:
        for dst in v.cluster.pods:
            for proto, port, http in ((TCP, 80, None), (TCP, 80, ("GET", "/")), (TCP, 80, ("POST", "/b")),
                                      (TCP, 8080, None), (UDP, 53, None), (SCTP, 443, None), (ICMP, 0, None)):
                fv = v.flows.evaluate(v.flows.query(src, dst.ip, proto, port, http))
                out[(src.key, dst.key, proto, port, http)] = fv
    return out


@st.composite
def with_extra_rule(draw, deny: bool):
    """A cluster and a copy with one more allow (into an already-enforced direction) or deny rule."""
    c = draw(S.clusters())
    c2 = copy.deepcopy(c)
    pol = draw(st.sampled_from(c2["policies"]))
    specs = [pol["spec"]] if "spec" in pol else pol["specs"]
    spec = draw(st.sampled_from(specs))
    if deny:
        direction = draw(st.sampled_from(("ingress", "egress")))
        section = direction + "Deny"
    else:
        # adding an allow to a direction the spec already enforces keeps every endpoint's enforcement
        enforcing = [d for d in ("ingress", "egress") if spec.get(d) or spec.get(d + "Deny")]
        direction = draw(st.sampled_from(enforcing))
        section = direction
    rule = draw(S.peer_rules(direction, deny, c["namespaces"]))
    spec.setdefault(section, []).append(rule)
    return c, c2, pol, spec, direction, rule


@PROPS
@given(with_extra_rule(deny=False))
def test_adding_an_allow_rule_never_turns_forwarded_into_dropped(case):
    c, c2, *_ = case
    before, after = all_flows(build(c)), all_flows(build(c2))
    for k, fv in before.items():
        if fv.verdict == Verdict.FORWARDED:
            assert after[k].verdict == Verdict.FORWARDED, (k, fv.explanation, after[k].explanation)


@PROPS
@given(with_extra_rule(deny=True))
def test_adding_a_deny_rule_never_turns_dropped_into_forwarded_and_its_matches_are_dropped(case):
    c, c2, pol, spec, direction, rule = case
    v2 = build(c2)
    before, after = all_flows(build(c)), all_flows(v2)
    for k, fv in before.items():
        if fv.verdict == Verdict.DROPPED:
            assert after[k].verdict == Verdict.DROPPED, (k, fv.explanation, after[k].explanation)
    # every flow the new deny rule matches is dropped
    ref = Reference(c2, v2)
    pods = {p.key: p for p in v2.cluster.pods}
    for (skey, dkey, proto, port, http), fv in after.items():
        src, dst = pods[skey], pods[dkey]
        ep, peer = (src, dst) if direction == "egress" else (dst, src)
        me = ref.idents[v2.ids.pod_identity(ep)]
        if pol["metadata"]["namespace"] != me.ns or not sel_matches(spec["endpointSelector"], me.labels):
            continue
        peer_id = v2.ids.pod_identity(peer)
        if not ref.peer_matches(pol, rule, direction, peer_id):
            continue
        holder = v2.ids.pod_identity(ep) if direction == "ingress" else peer_id
        if any(True for _ in ref.coverage(rule, holder, proto, port)):
            assert fv.verdict == Verdict.DROPPED, ((skey, dkey, proto, port), fv.explanation)
            if direction == "egress" or fv.drop_direction == Direction.INGRESS:
                # (an ingress deny is not reached when the source's egress already dropped the flow)
                assert fv.drop_reason.name == "POLICY_DENY", fv.explanation


# ------------------------------------------------------------------ identity sharing

@st.composite
def clusters_with_twins(draw):
    c = draw(S.clusters(max_pods=6))
    for _ in range(draw(st.integers(1, 2))):
        twin = copy.deepcopy(draw(st.sampled_from(c["pods"])))
        twin["metadata"]["name"] = f"twin{len(c['pods'])}"
        twin["spec"]["nodeName"] = draw(st.sampled_from(S.NODES))
        c["pods"].append(twin)
    return c


def _essence(fv):
    return fv.verdict, fv.drop_reason, fv.decision.layer, fv.decision.http_status, fv.drop_direction


@PROPS_N(60)
@given(clusters_with_twins())
def test_pods_with_same_labels_and_namespace_share_identity_and_verdicts(c):
    v = build(c)
    pods = v.cluster.pods
    groups: dict = {}
    for p in pods:
        groups.setdefault((p.namespace, p.labels), []).append(p)
    idents = {k: {v.ids.pod_identity(p) for p in ps} for k, ps in groups.items()}
    assert all(len(s) == 1 for s in idents.values())
    assert len({next(iter(s)) for s in idents.values()}) == len(groups)  # different labels: different identity
    flows = ((TCP, 80, None), (TCP, 80, ("GET", "/")), (UDP, 53, None), (TCP, 8080, None), (ICMP, 0, None))
    for ps in groups.values():
        a = ps[0]
        for a2 in ps[1:]:
            for b in pods:
                if b.key in (a.key, a2.key):
                    continue
                for proto, port, http in flows:
                    out1 = v.flows.evaluate(v.flows.query(a, b.ip, proto, port, http))
                    out2 = v.flows.evaluate(v.flows.query(a2, b.ip, proto, port, http))
                    assert _essence(out1) == _essence(out2)
                    in1 = v.flows.evaluate(v.flows.query(b, a.ip, proto, port, http))
                    in2 = v.flows.evaluate(v.flows.query(b, a2.ip, proto, port, http))
                    assert _essence(in1) == _essence(in2)


@PROPS_N(40)
@given(S.clusters(max_pods=6))
def test_truth_table_rows_agree_with_single_flow_verdicts(c):
    from twin.semantics.truth import truth_table
    v = build(c)
    rows = truth_table(v, [80, 53], "TCP")
    n = len(v.cluster.pods)
    assert len(rows) == n * (n - 1) * 2
    for r in rows:
        src, dst = v.cluster.pod(r["src"]), v.cluster.pod(r["dst"])
        fv = v.flows.evaluate(v.flows.query(src, dst.ip, TCP, r["port"]))
        assert r["verdict"] == fv.verdict.value
