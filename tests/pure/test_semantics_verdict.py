"""One verdict for a flow: a service forwards only when every backend does."""
from __future__ import annotations

import pytest

from twin.semantics.verdict import aggregate

pytestmark = pytest.mark.pure


def _row(dst: str, verdict: str, reason: str | None = None, status: int | None = None) -> dict:
    return {"verdict": verdict, "layer": "L3/L4", "drop_reason": reason, "http_status": status,
            "explanation": "x", "destination": dst}


def test_a_service_is_dropped_when_any_backend_drops_and_names_the_first_reason():
    rows = [_row("default/a", "FORWARDED"), _row("default/b", "DROPPED", "Policy denied")]
    out = aggregate("svc:default/s", rows)
    assert out["verdict"] == "DROPPED" and out["drop_reason"] == "Policy denied"
    assert out["backends"] == rows and "default/b: DROPPED" in out["explanation"]


def test_a_service_forwards_when_every_backend_forwards_even_with_one_backend():
    out = aggregate("svc:default/s", [_row("default/a", "FORWARDED", status=200)])
    assert out["verdict"] == "FORWARDED" and out["http_status"] == 200 and len(out["backends"]) == 1


def test_a_service_without_backends_is_dropped_as_cilium_does():
    out = aggregate("svc:default/s", [])
    assert out["verdict"] == "DROPPED" and out["drop_reason"] == "Service backend not found" and out["backends"] == []


def test_a_pod_destination_is_its_one_record():
    row = _row("default/a", "DROPPED", "Policy denied")
    assert aggregate("default/a", [row]) is row
