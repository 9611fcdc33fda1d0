"""Harness tier: the seed scenarios on both backends (root, bcc, Mininet)."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.real import real_unavailable_reason
from harness.runner import run_scenario

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]

_reason = real_unavailable_reason()
needs_real = pytest.mark.skipif(_reason is not None, reason=f"real datapath unavailable: {_reason}")


@needs_real
def test_seed_pod_to_pod_agrees_on_both_backends(tmp_path):
    r = run_scenario(str(ROOT / "scenarios/seed-pod-to-pod.yaml"), "both", str(tmp_path))
    assert r["disagreements"] == [], r["disagreements"]
    assert r["expectation_failures"] == [], r["expectation_failures"]
    real = {f["probe"]: f for f in r["observations"]["real"]["flows"]}
    assert real["curl-webpod1"]["http_status"] == 200 and real["curl-webpod1"]["body"] == "Hostname: webpod1"
    assert real["ping-external"]["verdict"] == "FORWARDED"
    assert (tmp_path / "result.json").exists()


@needs_real
def test_seed_deathstar_xwing_is_dropped_by_rule1_on_both_backends(tmp_path):
    r = run_scenario(str(ROOT / "scenarios/seed-deathstar-l3l4.yaml"), "both", str(tmp_path))
    assert r["disagreements"] == [], r["disagreements"]
    assert r["expectation_failures"] == [], r["expectation_failures"]
    real = [f for f in r["observations"]["real"]["flows"] if f["probe"] == "xwing-dropped-after-rule1"]
    assert len(real) == 2  # one per deathstar backend
    assert all(f["verdict"] == "DROPPED" and f["drop_reason_code"] == 133 and f["direction"] == "ingress" for f in real)
    assert any(c["after"] == "DROPPED" for c in r["verdict_changes"])
