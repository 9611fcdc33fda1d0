"""Sim tier: the SimPy twin runs scenarios deterministically with the semantics' verdicts."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.inputs import load_run_inputs
from harness.runner import run_scenario
from twin.sim import TwinBackend
from twin.semantics.delays import DELAYS
from twin.semantics.dists import Constant

pytestmark = pytest.mark.sim
ROOT = Path(__file__).resolve().parents[2]
DEATHSTAR = str(ROOT / "scenarios/seed-deathstar-l3l4.yaml")
POD_TO_POD = str(ROOT / "scenarios/seed-pod-to-pod.yaml")


def _flows(path: str, seed: int = 1) -> list:
    return TwinBackend().run(load_run_inputs(path), seed).flows


def test_xwing_lands_before_rule1_and_is_dropped_after_while_tiefighter_keeps_landing():
    by_probe: dict = {}
    for f in _flows(DEATHSTAR):
        by_probe.setdefault(f.probe, set()).add(f.verdict)
    assert by_probe["xwing-lands"] == {"FORWARDED"}
    assert by_probe["xwing-dropped-after-rule1"] == {"DROPPED"}
    assert by_probe["tiefighter-lands-after-rule1"] == {"FORWARDED"}
    assert by_probe["xwing-lands-after-delete"] == {"FORWARDED"}


def test_dropped_probe_costs_the_probe_timeout_and_forwarded_one_round_trips():
    flows = _flows(DEATHSTAR)
    dropped = [f for f in flows if f.verdict == "DROPPED"]
    forwarded = [f for f in flows if f.verdict == "FORWARDED"]
    assert all(f.latency_s == pytest.approx(1.0) for f in dropped)
    assert all(f.latency_s < 0.01 for f in forwarded)


def test_same_seed_gives_identical_records_and_event_logs():
    inputs = load_run_inputs(DEATHSTAR)
    a, b = TwinBackend().run(inputs, 7), TwinBackend().run(inputs, 7)
    assert a.flows == b.flows and a.events == b.events


def test_probe_right_after_apply_sees_old_policy_until_agents_regenerate():
    """Without the wait step, a probe sent before the agents regenerate still passes."""
    inputs = load_run_inputs(DEATHSTAR)
    steps = [s for s in inputs.scenario.steps if s.kind != "wait"]
    slow = DELAYS.replace(agent_regenerate=Constant(5.0))
    sc = replace(inputs.scenario, steps=tuple(steps))
    res = TwinBackend(delays=slow).run(replace(inputs, scenario=sc), 1)
    xwing_after = [f for f in res.flows if f.probe == "xwing-dropped-after-rule1"]
    assert xwing_after and all(f.verdict == "FORWARDED" for f in xwing_after)
    regen = [e for e in res.events if e.event == "agent-regenerated"]
    assert len(regen) >= len(inputs.cluster.nodes)


def test_pod_to_pod_scenario_reaches_pods_and_external_host_on_the_twin():
    r = run_scenario(POD_TO_POD, "twin")
    assert r["ok"], r["expectation_failures"]
    flows = r["observations"]["twin"]["flows"]
    assert {f["dst"] for f in flows} >= {"default/webpod1", "default/webpod2", "192.168.10.200"}
    assert next(f for f in flows if f["probe"] == "curl-webpod1")["body"] == "Hostname: webpod1"


def test_twin_run_cli_writes_result_json_and_exits_zero(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", DEATHSTAR, "--backend", "twin", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["disagreements"] == [] and result["ok"]
    assert any(c["after"] == "DROPPED" for c in result["verdict_changes"])


def test_failed_expectation_makes_run_exit_one(tmp_path):
    text = Path(DEATHSTAR).read_text().replace("method: POST, path: /v1/request-landing, expect: DROPPED",
                                               "method: POST, path: /v1/request-landing, expect: FORWARDED")
    sc = tmp_path / "sc.yaml"
    sc.write_text(text.replace("../examples", str(ROOT / "examples")))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc), "--backend", "twin", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stdout
    assert "EXPECTATION FAILED" in proc.stdout


def test_scenario_with_unknown_step_key_exits_two_naming_the_field(tmp_path):
    sc = tmp_path / "bad.yaml"
    sc.write_text(f"scenario: bad\nmanifests: [{ROOT}/examples/seed/pods.yaml]\nsteps:\n  - probe: {{name: a, from: netpod, to: webpod1, kindd: ping}}\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc), "--backend", "twin"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "steps[0].probe.kindd" in proc.stderr and "bad.yaml:4" in proc.stderr


def test_scenario_probe_to_missing_pod_exits_two_before_running(tmp_path):
    sc = tmp_path / "bad.yaml"
    sc.write_text(f"scenario: bad\nmanifests: [{ROOT}/examples/seed/pods.yaml]\nsteps:\n  - probe: {{name: a, from: netpod, to: nosuchpod, kind: ping}}\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc), "--backend", "twin"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "nosuchpod" in proc.stderr
