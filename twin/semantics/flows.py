"""Verdicts of whole flows: source egress, then destination ingress, then L7."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.enums import Direction, Protocol, ReservedIdentity, Verdict
from twin.model.objects import Cluster, Pod
from twin.semantics.policy import Decision, PolicyEngine

PROTOCOL_NAMES = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP, "ICMP": Protocol.ICMP}


@dataclass(frozen=True)
class FlowQuery:
    """A packet's worth of question: who talks to whom on which port."""

    src: Pod
    dst_ip: ipaddress.IPv4Address
    protocol: Protocol
    port: int  # destination port; 0 for ICMP
    dst: Pod | None = None  # the destination pod, if the IP is one
    http: tuple[str, str] | None = None  # (method, path)


@dataclass(frozen=True)
class FlowVerdict:
    verdict: Verdict
    decision: Decision  # the deciding direction's decision (or the last one)
    src_identity: int
    dst_identity: int
    drop_direction: Direction | None
    explanation: str

    @property
    def drop_reason(self):
        return self.decision.drop_reason


class FlowEvaluator:
    def __init__(self, cluster: Cluster, engine: PolicyEngine | None = None):
        self.cluster = cluster
        self.engine = engine or PolicyEngine(cluster)
        self.ids = self.engine.ids
        self._pod_by_ip = {p.ip: p for p in cluster.pods}

    def pod_at(self, ip: ipaddress.IPv4Address) -> Pod | None:
        return self._pod_by_ip.get(ip)

    def query(self, src: Pod, dst_ip: ipaddress.IPv4Address, protocol: Protocol, port: int,
              http: tuple[str, str] | None = None) -> FlowQuery:
        return FlowQuery(src, dst_ip, protocol, port, self.pod_at(dst_ip), http)

    def evaluate(self, q: FlowQuery, ingress_engine: PolicyEngine | None = None) -> FlowVerdict:
        """Egress on the source's engine, then ingress on ``ingress_engine``
        (the destination node's view; defaults to the same engine)."""
        sid = self.ids.pod_identity(q.src)
        # The source node's ipcache names the destination; the destination
        # node's ipcache names the source (a pod IP maps to the same identity on all nodes).
        did = self.ids.identity_of_ip(q.dst_ip, q.src.node)
        l4_http = q.http if q.protocol == Protocol.TCP else None
        eg = self.engine.decide(sid, Direction.EGRESS, did, q.protocol, q.port, l4_http)
        if not eg.forwarded:
            return FlowVerdict(Verdict.DROPPED, eg, sid, did, Direction.EGRESS, eg.explanation)
        if q.dst is None:
            return FlowVerdict(Verdict.FORWARDED, eg, sid, did, None,
                               eg.explanation + f"; destination {q.dst_ip} is outside the cluster (identity {did})")
        ieng = ingress_engine or self.engine
        ing = ieng.decide(ieng.ids.pod_identity(q.dst), Direction.INGRESS, sid, q.protocol, q.port, l4_http)
        expl = f"egress: {eg.explanation}; ingress: {ing.explanation}"
        if not ing.forwarded:
            return FlowVerdict(Verdict.DROPPED, ing, sid, did, Direction.INGRESS, expl)
        deciding = ing if ing.layer == "L7" else eg if eg.layer == "L7" else ing
        return FlowVerdict(Verdict.FORWARDED, deciding, sid, did, None, expl)


def reserved_name(identity: int) -> str:
    try:
        return ReservedIdentity(identity).name.lower()
    except ValueError:
        return str(identity)
