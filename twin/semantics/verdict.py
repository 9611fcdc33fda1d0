"""The verdict of one flow as ``twin verdict`` reports it.

A flow to a pod (or an IP) has one record.  A flow to a service has one
record per backend and one aggregate: FORWARDED only when every backend
forwards it (a client cannot choose its backend), DROPPED with "Service
backend not found" when the service has no backends.
"""
from __future__ import annotations

from twin.model.scenario import Probe, service_key
from twin.semantics.probe import Prediction, predict, resolve_targets


def prediction_row(p: Prediction) -> dict:
    """One destination's record (the JSON the CLI prints)."""
    return {"verdict": p.verdict, "layer": p.layer, "drop_reason": p.drop_reason, "http_status": p.http_status,
            "explanation": p.explanation, "destination": p.target.dst, "destination_ip": str(p.target.dst_ip),
            "port": p.target.port, "src_identity": p.src_identity, "dst_identity": p.dst_identity}


def aggregate(dst: str, rows: list[dict]) -> dict:
    """One verdict from the per-destination records of a flow to ``dst``."""
    if not rows:
        return {"verdict": "DROPPED", "layer": "L3/L4", "drop_reason": "Service backend not found",
                "http_status": None, "explanation": f"{dst} has no backends: Cilium drops the connection attempt",
                "backends": []}
    if len(rows) == 1 and service_key(dst) is None:
        return rows[0]
    return {"verdict": "FORWARDED" if all(r["verdict"] == "FORWARDED" for r in rows) else "DROPPED",
            "layer": rows[0]["layer"], "drop_reason": next((r["drop_reason"] for r in rows if r["drop_reason"]), None),
            "http_status": next((r["http_status"] for r in rows if r["http_status"]), None),
            "explanation": "; ".join(f"{r['destination']}: {r['verdict']}" for r in rows) + " (per backend below)",
            "backends": rows}


def flow_verdict(view, probe: Probe) -> tuple[dict, list[dict]]:
    """The aggregate verdict of ``probe`` and its per-destination records."""
    rows = [prediction_row(predict(view, probe, t)) for t in resolve_targets(view, probe)]
    return aggregate(probe.dst, rows), rows
