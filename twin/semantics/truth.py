"""Truth tables: verdicts for every (source pod, destination pod, port).

Verdicts are computed once per (source identity, destination identity) pair
and shared by every pod pair with those identities.
"""
from __future__ import annotations

from twin.semantics.flows import PROTOCOL_NAMES


def truth_table(view, ports: list[int], protocol: str = "TCP") -> list[dict]:
    proto = PROTOCOL_NAMES[protocol]
    cache: dict = {}
    rows = []
    for src in view.cluster.pods:
        for dst in view.cluster.pods:
            if src.key == dst.key:
                continue
            for port in ports if protocol != "ICMP" else [0]:
                sid, did = view.ids.pod_identity(src), view.ids.pod_identity(dst)
                key = (sid, did, port, src.node == dst.node)
                if key not in cache:
                    cache[key] = view.flows.evaluate(view.flows.query(src, dst.ip, proto, port))
                fv = cache[key]
                rows.append({"src": src.key, "dst": dst.key, "protocol": protocol, "port": port,
                             "verdict": fv.verdict.value, "drop_reason": fv.drop_reason.text or None,
                             "src_identity": sid, "dst_identity": did, "explanation": fv.explanation})
    return rows
