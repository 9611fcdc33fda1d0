"""The runner runs backends through the Backend protocol, reports a requested backend
that cannot run (exit 3; only the demo degrades), and joins every observation by key."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness import cli, runner
from harness.inputs import load_run_inputs
from harness.real import RealBackend
from twin.model.observations import Observations
from twin.sim.backend import TwinBackend

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]
DEATHSTAR = str(ROOT / "scenarios/seed-deathstar-l3l4.yaml")
FAILOVER = str(ROOT / "scenarios/lb-backend-failover.yaml")
SOCKET_LB = str(ROOT / "scenarios/seed-service-socket-lb.yaml")
REASON = "needs root (test double)"


@pytest.fixture
def real_unavailable(monkeypatch):
    """The real backend says it cannot run, and fails the test if it is run anyway."""
    def refuse(self, inputs, seed):
        raise AssertionError("an unavailable backend was run")
    monkeypatch.setattr(RealBackend, "unavailable_reason", lambda self: REASON)
    monkeypatch.setattr(RealBackend, "run", refuse)


@pytest.mark.parametrize("backend", ["both", "real"])
def test_run_with_an_unavailable_requested_backend_exits_3_and_result_json_says_why(real_unavailable, tmp_path, capsys, backend):
    code = cli.main(["run", DEATHSTAR, "--backend", backend, "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert REASON in err and "'real'" in err
    assert "result: ok" not in out and "UNAVAILABLE" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] is False
    assert result["unavailable"] == {"real": REASON}
    assert result["status"]["real"] == {"state": "unavailable", "reason": REASON}
    assert "real" not in result["observations"]
    if backend == "both":  # what can run still runs, and its findings are kept
        assert result["status"]["twin"] == {"state": "ran"}
        assert result["observations"]["twin"]["flows"]


def test_run_with_every_requested_backend_available_exits_0_and_records_status(tmp_path, capsys):
    code = cli.main(["run", DEATHSTAR, "--backend", "twin", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] and result["status"] == {"twin": {"state": "ran"}}
    assert "unavailable" not in result and "degraded" not in result


def test_demo_without_the_real_datapath_degrades_to_the_twin_and_says_so(real_unavailable, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "DEMO_SCENARIOS", ("scenarios/seed-deathstar-l3l4.yaml",))
    code = cli.main(["demo", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert f"the real datapath is skipped: {REASON}" in out and "twin only" in out
    assert "real side skipped" in out
    result = json.loads((tmp_path / "seed-deathstar-l3l4" / "result.json").read_text())
    assert result["ok"] and result["degraded"] == {"real": REASON} and "unavailable" not in result
    assert result["status"]["real"]["state"] == "unavailable" and result["status"]["twin"]["state"] == "ran"


class _Replay:
    """A stand-in real backend that reports given observations (the twin's, edited)."""

    name = "real"

    def __init__(self, obs: Observations):
        self.obs = obs

    def unavailable_reason(self):
        return None

    def run(self, inputs, seed):
        return self.obs


def _both(monkeypatch, path: str, edit) -> dict:
    twin = TwinBackend().run(load_run_inputs(path), 1)
    real = edit(replace(twin, backend="real", events=list(twin.events), flows=list(twin.flows),
                        holds=list(twin.holds), kills=list(twin.kills), syscalls=list(twin.syscalls),
                        requests=list(twin.requests)))
    monkeypatch.setattr(runner, "backends", lambda: {"twin": TwinBackend(), "real": _Replay(real)})
    return runner.run_scenario(path, "both")


def test_identical_observations_on_both_sides_agree(monkeypatch):
    r = _both(monkeypatch, FAILOVER, lambda o: o)
    assert r["disagreements"] == [] and r["ok"]


def test_a_hold_check_missing_on_one_side_is_a_disagreement_not_dropped(monkeypatch):
    def drop_second_check(o):
        o.holds = o.holds[:1]
        return o
    r = _both(monkeypatch, FAILOVER, drop_second_check)
    rows = [d for d in r["disagreements"] if d["field"] == "<row>"]
    second = [s.index for s in load_run_inputs(FAILOVER).scenario.steps if s.kind == "check"][1]
    assert [(d["key"], d["twin"], d["real"]) for d in rows] == [(f"long-to-webpod2@{second}", True, False)]
    assert any(f["field"] == "hold" and f["got"] == "no check result" for f in r["expectation_failures"])
    assert not r["ok"]


def test_a_hold_state_that_differs_is_reported_under_the_holds_key(monkeypatch):
    def close_first(o):
        o.holds = [replace(o.holds[0], state="closed"), *o.holds[1:]]
        return o
    r = _both(monkeypatch, FAILOVER, close_first)
    assert [(d["key"], d["field"], d["twin"], d["real"]) for d in r["disagreements"]] == [
        (f"long-to-webpod2@{r['observations']['twin']['holds'][0]['step']}", "state", "alive", "closed")]


def test_a_kill_only_one_backend_saw_is_a_disagreement(monkeypatch):
    def no_kill(o):
        o.kills = [k for k in o.kills if k.action != "kill"]
        return o
    r = _both(monkeypatch, FAILOVER, no_kill)
    keys = {(d["key"], d["field"]) for d in r["disagreements"]}
    assert ("client/kill default/webpod1@3", "<row>") in keys


def test_syscall_facts_join_by_name_and_a_missing_one_is_a_disagreement(monkeypatch):
    def none(o):
        o.syscalls = []
        return o
    r = _both(monkeypatch, SOCKET_LB, none)
    assert [(d["key"], d["field"]) for d in r["disagreements"]] == [("strace-curl", "<row>")]


def test_a_requests_step_with_no_rows_on_one_side_is_a_disagreement(monkeypatch):
    def no_udp(o):
        o.requests = [q for q in o.requests if q.name != "udp-echo"]
        return o
    r = _both(monkeypatch, SOCKET_LB, no_udp)
    bad = [d for d in r["disagreements"] if d["key"] == "udp-echo" and d["field"] == "outcomes"]
    assert bad and bad[0]["real"] is None and "no requests" in bad[0]["why"]


def test_a_backend_that_fails_mid_run_is_recorded_and_the_others_findings_are_kept(monkeypatch, tmp_path, capsys):
    from twin.model.findings import TwinError

    class Broken(_Replay):
        def run(self, inputs, seed):
            raise TwinError("the datapath could not be built: test double")
    monkeypatch.setattr(runner, "backends", lambda: {"twin": TwinBackend(), "real": Broken(None)})
    code = cli.main(["run", DEATHSTAR, "--backend", "both", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1 and "the real backend failed during the run: the datapath could not be built" in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] is False and result["failed"] == {"real": "the datapath could not be built: test double"}
    assert result["status"]["real"]["state"] == "failed" and result["observations"]["twin"]["flows"]
