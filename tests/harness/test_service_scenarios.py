"""Harness tier: services on both backends — socket LB facts, shares, and LB failover."""
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
def test_socket_lb_hides_the_clusterip_from_the_wire_and_spreads_requests_over_both_backends(tmp_path):
    r = run_scenario(str(ROOT / "scenarios/seed-service-socket-lb.yaml"), "both", str(tmp_path))
    assert r["disagreements"] == [], r["disagreements"]
    assert r["expectation_failures"] == [], r["expectation_failures"]
    real = r["observations"]["real"]["measurements"]
    sc = real["syscalls"][0]
    cip = sc["connect"].split(":")[0]
    assert sc["getpeername"] == sc["connect"] and not sc["capture_has_frontend"] and cip not in sc["capture_ips"]
    assert sc["getsockname_ip"] == "172.16.0.10"  # netpod's own IP
    assert set(real["requests"]["curl-loop"]["backends"]) == {"default/webpod1", "default/webpod2"}
    assert real["requests"]["curl-loop"]["chi2"]["p_value"] >= 0.01
    assert set(real["requests"]["udp-echo"]["backends"]) == {"default/echo1", "default/echo2"}


@needs_real
def test_killed_backend_is_removed_within_the_predicted_outage_and_long_lived_connection_survives(tmp_path):
    r = run_scenario(str(ROOT / "scenarios/lb-backend-failover.yaml"), "both", str(tmp_path))
    assert r["disagreements"] == [], r["disagreements"]
    assert r["expectation_failures"] == [], r["expectation_failures"]
    kill = r["observations"]["real"]["measurements"]["kills"][0]
    lo, hi = kill["predicted_outage_s"]
    assert kill["failures"] > 0 and lo - kill["tolerance_s"] <= kill["outage_s"] <= hi + kill["tolerance_s"]
    assert kill["readmit_s"] is not None
    assert [h["state"] for h in r["observations"]["real"]["measurements"]["holds"]] == ["alive", "alive"]
    events = [e["event"] for e in r["observations"]["real"]["events"]]
    assert "pod-not-ready" in events and "agent-lb-updated" in events
