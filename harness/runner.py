"""Scenario runner: one scenario, the requested backends, one result.

``run_scenario`` loads the scenario and its inputs (exit 2 on bad input,
before anything is built), asks each requested :class:`~twin.model.run.Backend`
whether it can run here, runs those that can through the protocol, checks
each backend's expectations, diffs the backends' typed observations BY KEY
(flows, requests per traffic step, hold checks, syscall facts, kills — a
record present on one side only is itself a disagreement) and writes
``DIR/result.json``.

A requested backend that cannot run is recorded in ``result["unavailable"]``
and makes the result not ok; ``twin run`` then exits 3.  A backend that fails
during the run (an operational error) is recorded in ``result["failed"]``
(exit 1); what the other backend observed is still written.  Only ``twin demo``
may degrade to the twin (``allow_unavailable``), and the result says so in
``result["degraded"]``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.analysis import chi2_test, service_measurements
from harness.diff import Field, diff_tables, verdict_changes
from harness.inputs import load_run_inputs
from harness.real import RealBackend
from twin.model.enums import Protocol
from twin.model.findings import InputError, TwinError, error
from twin.model.observations import FlowRecord, Observations
from twin.model.run import Backend, RunInputs
from twin.model.scenario import Scenario, kill_loops, service_key
from twin.semantics.endpoints import kill_predictions
from twin.semantics.lb import frontend, lb_table
from twin.sim.backend import TwinBackend


#: exit code of ``twin run`` when a requested backend could not run
EXIT_UNAVAILABLE = 3

#: Fields compared between backends.  Timing is not compared for L3/L4 runs
#: (the twin's latencies are predictions, reported side by side).
DIFF_FIELDS = [
    Field("verdict"),
    Field("drop_reason_code"),
    Field("http_status"),
    Field("dst_ip"),
    Field("port"),
    Field("body"),
]
SYSCALL_FIELDS = [Field("connect"), Field("getsockname_ip"), Field("getpeername"), Field("capture_has_frontend")]


def backends() -> dict[str, Backend]:
    """Every backend by name; the runner uses them through the Backend protocol only."""
    return {"twin": TwinBackend(), "real": RealBackend()}


def check_expectations(scenario: Scenario, flows: list[FlowRecord], backend: str) -> list[dict]:
    probes = {s.probe.name: s.probe for s in scenario.steps if s.kind == "probe"}
    out = []
    seen = set()
    for f in flows:
        p = probes[f.probe]
        seen.add(p.name)
        checks = [("verdict", p.expect, f.verdict)]
        if p.expect_status is not None:
            checks.append(("http_status", p.expect_status, f.http_status))
        if p.expect_body is not None:
            checks.append(("body", p.expect_body, f.body))
        for field, want, got in checks:
            if want is None:
                continue
            ok = (want in (got or "")) if field == "body" else (want == got)
            if not ok:
                out.append({"backend": backend, "probe": p.name, "dst": f.dst, "field": field, "expected": want, "got": got})
    for name, p in probes.items():
        if name not in seen and p.expect == "FORWARDED":
            out.append({"backend": backend, "probe": name, "dst": p.dst, "field": "records", "expected": "≥1", "got": 0})
    return out


def _explain(twin: dict, real: dict | None) -> str:
    parts = [f"twin: {twin.get('explanation', '')}"]
    if real and real.get("evidence"):
        parts.append("real saw: " + "; ".join(real["evidence"]))
    return " | ".join(parts)


def expected_shares(inputs: RunInputs, traffic) -> dict[str, float]:
    """The twin's prediction of backend shares for a requests step: uniform over
    the frontend's active backends (endpoint states as at the start of the run)."""
    svc = inputs.cluster.service(service_key(traffic.dst))
    fe = frontend(lb_table(inputs.cluster), svc.cluster_ip, traffic.port,
                  Protocol.UDP if traffic.kind == "udp" else Protocol.TCP)
    active = fe.active if fe else ()
    return {b.pod: 1 / len(active) for b in active}


def _stage_story(twin_obs: Observations, real_obs: Observations, pod: str) -> str:
    """Which stage of the endpoint pipeline differed, from both event logs."""
    def stages(obs: Observations) -> dict:
        kill = next((k.t for k in obs.kills if k.action == "kill" and k.pod == pod), None)
        if kill is None:
            return {}
        ev = [e for e in obs.events if e.t >= kill]
        out = {}
        for name, pred in (("probing (kill → NotReady)", lambda e: e.event == "pod-not-ready" and e.get("pod") == pod),
                           ("status", lambda e: e.event == "status-updated" and e.get("pod") == pod),
                           ("agents (last node updated)", lambda e: e.event in ("agent-regenerated", "agent-lb-updated"))):
            hits = sorted(e.t for e in ev if pred(e))
            if hits:
                out[name] = round((hits[-1] if name.startswith("agents") else hits[0]) - kill, 3)
        return out
    t, r = stages(twin_obs), stages(real_obs)
    parts = [f"{k}: twin {t.get(k)} s, real {r.get(k)} s" for k in dict.fromkeys(list(t) + list(r))]
    return "; ".join(parts)


def check_service_expectations(inputs: RunInputs, meas: dict, backend: str) -> list[dict]:
    """Expectations that hold on one backend alone: hold checks (the n-th check of a
    hold against that hold's n-th result) and syscall facts."""
    out = []
    holds = {h["key"]: h for h in meas["holds"]}
    for step in (s for s in inputs.scenario.steps if s.kind == "check"):
        h = holds.get(f"{step.name}@{step.index}")
        if h is None:
            out.append({"backend": backend, "probe": step.name, "dst": None, "field": "hold",
                        "expected": step.expect, "got": "no check result"})
        elif h["state"] != step.expect:
            out.append({"backend": backend, "probe": step.name, "dst": h.get("backend"), "field": "hold",
                        "expected": step.expect, "got": h["state"]})
    for sc in meas["syscalls"]:
        if sc.get("capture_has_frontend"):
            out.append({"backend": backend, "probe": sc["name"], "dst": sc["connect"], "field": "capture",
                        "expected": "no packet to the ClusterIP", "got": "ClusterIP seen in capture"})
        if sc.get("getpeername") != sc.get("connect"):
            out.append({"backend": backend, "probe": sc["name"], "dst": sc["connect"], "field": "getpeername",
                        "expected": sc.get("connect"), "got": sc.get("getpeername")})
    return out


def _diff_requests(inputs: RunInputs, twin: dict, real: dict) -> list[dict]:
    """Per ``requests`` step (by name): backend shares against the prediction, and the outcome kinds."""
    out = []
    st = inputs.scenario.settings
    for step in inputs.scenario.steps:
        if step.kind != "requests":
            continue
        t = step.traffic
        shares = expected_shares(inputs, t)
        if "?" in real["requests"].get(t.name, {}).get("backends", {}):
            real["requests"].setdefault(t.name, {})["chi2"] = {"skipped": "the answers do not name their backend"}
            shares = None
        for name, meas in (("real", real), ("twin", twin)) if shares else ():
            res = chi2_test(meas["requests"].get(t.name, {}).get("backends", {}), shares)
            meas["requests"].setdefault(t.name, {})["chi2"] = res
            if res["p_value"] < st.chi2_alpha:
                out.append({"key": t.name, "field": "backend shares", "twin": {k: round(v, 3) for k, v in shares.items()},
                            "real" if name == "real" else "twin-sample": meas["requests"][t.name].get("backends", {}),
                            "why": f"chi-square p={res['p_value']} < alpha={st.chi2_alpha} on the {name} sample " + res.get("why", "")})
        kinds_t = twin["requests"].get(t.name, {}).get("outcomes", {})
        kinds_r = real["requests"].get(t.name, {}).get("outcomes", {})
        if set(kinds_t) != set(kinds_r):
            out.append({"key": t.name, "field": "outcomes", "twin": kinds_t or None, "real": kinds_r or None,
                        "why": "the kinds of request outcomes differ (answered / refused / timeout / EHOSTUNREACH)"
                               + ("" if kinds_t and kinds_r else "; one backend has no requests for this step")})
    return out


def _diff_kills(inputs: RunInputs, twin_obs: Observations, real_obs: Observations, twin: dict, real: dict) -> list[dict]:
    """Per kill (by key ``LOOP/kill POD@STEP``): both outage windows against the twin's
    predicted interval, and readmission after a restart; a kill seen by one backend only
    is a disagreement."""
    st = inputs.scenario.settings
    out = diff_tables(twin["kills"], real["kills"], "key", [], ("twin", "real"))
    preds = {p["pod"]: p for p in twin_obs.predictions}
    tk = {k["key"]: k for k in twin["kills"]}
    for kr in real["kills"]:
        kt, p = tk.get(kr["key"]), preds.get(kr["pod"])
        if kt is None or not p:
            continue
        lo, hi = p["outage_s"]
        for name, k in (("real", kr), ("twin", kt)):
            if not (lo - st.outage_tolerance_s <= k["outage_s"] <= hi + st.outage_tolerance_s):
                out.append({"key": k["key"], "field": "outage window",
                            "twin": [round(lo, 3), round(hi, 3)], name if name == "real" else "twin-sample": k["outage_s"],
                            "why": f"the {name} outage {k['outage_s']} s is outside the predicted interval ±{st.outage_tolerance_s} s; "
                                   + _stage_story(twin_obs, real_obs, kr["pod"])})
        if kr.get("readmit_s") is not None or kt.get("readmit_s") is not None:
            rlo, rhi = p["readmit_s"]
            got = kr.get("readmit_s")
            if got is None or not (0 <= got <= rhi + st.outage_tolerance_s):
                out.append({"key": kr["key"], "field": "readmission", "twin": [round(rlo, 3), round(rhi, 3)], "real": got,
                            "why": "the restarted backend came back later than the pipeline predicts (or never)"})
    return out


def diff_services(inputs: RunInputs, twin_obs: Observations, real_obs: Observations, twin: dict, real: dict) -> list[dict]:
    """Service-level disagreements, every one joined by key: request steps (shares by
    chi-square, outcome kinds), kills (outage windows, readmission), hold checks, syscall facts."""
    out = _diff_requests(inputs, twin, real)
    out += _diff_kills(inputs, twin_obs, real_obs, twin, real)
    out += diff_tables(twin["holds"], real["holds"], "key", [Field("state")], ("twin", "real"),
                       lambda a, b: f"long-lived connection to {(b or a).get('backend')}")
    out += diff_tables(twin["syscalls"], real["syscalls"], "key", SYSCALL_FIELDS, ("twin", "real"),
                       lambda a, b: "socket-LB syscall view differs")
    return out


def _annotate_predictions(inputs: RunInputs, meas: dict, predictions: list[dict]) -> None:
    preds = {p["pod"]: p for p in predictions}
    for k in meas["kills"]:
        if k["pod"] in preds:
            lo, hi = preds[k["pod"]]["outage_s"]
            k["predicted_outage_s"], k["tolerance_s"] = [round(lo, 3), round(hi, 3)], inputs.scenario.settings.outage_tolerance_s


def run_scenario(path: str, backend: str = "both", out: str | None = None, seed: int = 1,
                 allow_unavailable: bool = False) -> dict:
    """Run ``path`` on the requested backends (``twin``, ``real`` or ``both``).

    A requested backend that cannot run here is listed under ``unavailable``
    with its reason and the result is not ok — unless ``allow_unavailable``
    (``twin demo`` only), where it is listed under ``degraded`` instead.
    """
    inputs = load_run_inputs(path)
    if out:
        writable_out(out, "run")
    requested = ["twin", "real"] if backend == "both" else [backend]
    known = backends()
    status: dict[str, dict] = {}
    unavailable: dict[str, str] = {}
    for name in requested:
        reason = known[name].unavailable_reason()
        if reason:
            unavailable[name] = reason
            status[name] = {"state": "unavailable", "reason": reason}
    observed: dict[str, Observations] = {}
    failed: dict[str, str] = {}
    for name in requested:
        if name in unavailable:
            continue
        try:
            observed[name] = known[name].run(inputs, seed)
        except InputError:
            raise
        except TwinError as exc:  # an operational failure: the other backend's findings are still written
            failed[name] = str(exc)
            status[name] = {"state": "failed", "reason": str(exc)}
            continue
        status[name] = {"state": "ran"}
    failures: list[dict] = []
    meas: dict[str, dict] = {}
    # the twin's own (its delays may be a what-if's); without it, the same prediction from the default delays
    predictions = observed["twin"].predictions if "twin" in observed else \
        kill_predictions(inputs.cluster, kill_loops(inputs.scenario))
    for name, obs in observed.items():
        failures += check_expectations(inputs.scenario, obs.flows, name)
        meas[name] = service_measurements(obs, inputs.scenario)
        _annotate_predictions(inputs, meas[name], predictions)
        failures += check_service_expectations(inputs, meas[name], name)
    disagreements: list[dict] = []
    if "twin" in observed and "real" in observed:
        disagreements = diff_tables([f.as_dict() for f in observed["twin"].flows],
                                    [f.as_dict() for f in observed["real"].flows], "key",
                                    DIFF_FIELDS, ("twin", "real"), _explain)
        disagreements += diff_services(inputs, observed["twin"], observed["real"], meas["twin"], meas["real"])
    first = next(iter(observed.values()), None)
    result = {
        "scenario": inputs.scenario.name, "file": path, "seed": seed, "backends": requested,
        "status": status,
        "observations": {name: {**obs.as_dict(), "measurements": meas[name]} for name, obs in observed.items()},
        "disagreements": disagreements, "expectation_failures": failures,
        "verdict_changes": verdict_changes([f.as_dict() for f in first.flows] if first else []),
        "ok": not disagreements and not failures and not failed and (allow_unavailable or not unavailable),
    }
    if failed:
        result["failed"] = failed
    if unavailable:
        result["degraded" if allow_unavailable else "unavailable"] = unavailable
    if out:
        os.makedirs(out, exist_ok=True)
        Path(out, "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def exit_code(result: dict) -> int:
    """0 ok; 3 a requested backend could not run; 1 disagreement, failed expectation or a
    backend that failed during the run."""
    if result.get("unavailable"):
        return EXIT_UNAVAILABLE
    return 0 if result["ok"] else 1


def writable_out(out: str, command: str) -> str:
    """``out`` as a directory the run can write ``result.json`` to, checked before
    anything runs; otherwise an input error naming ``--out``."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = Path(out, ".twin-write-test")
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError([error(f"twin {command}", "--out", f"cannot write results to {out}: {exc.strerror or exc}",
                                "<command line>")]) from None
    return out


def run_scenario_cli(path: str, backend: str, out: str | None, seed: int) -> int:
    from reports.terminal import render
    out = out or os.path.join("results", Path(path).stem)
    result = run_scenario(path, backend, out, seed)
    print(render(result))
    print(f"  written: {os.path.join(out, 'result.json')}")
    for name, reason in result.get("unavailable", {}).items():
        print(f"twin: the requested backend {name!r} could not run: {reason}", file=sys.stderr)
    for name, reason in result.get("failed", {}).items():
        print(f"twin: error: the {name} backend failed during the run: {reason}", file=sys.stderr)
    return exit_code(result)


DEMO_SCENARIOS = ("scenarios/seed-pod-to-pod.yaml", "scenarios/seed-service-socket-lb.yaml",
                  "scenarios/seed-deathstar-l3l4.yaml", "scenarios/lb-backend-failover.yaml")


def demo(out: str) -> int:
    """The main job on its default scenarios: the seed lab on both backends.  Without
    the real datapath (e.g. not root) the demo runs the twin only and says so."""
    from reports.terminal import render
    writable_out(out, "demo")
    reason = RealBackend().unavailable_reason()
    if reason:
        print(f"twin demo: the real datapath is skipped: {reason}. Running the twin only.")
    root = Path(__file__).resolve().parent.parent
    code = 0
    for sc in DEMO_SCENARIOS:
        result = run_scenario(str(root / sc), "both", os.path.join(out, Path(sc).stem), 1, allow_unavailable=True)
        print(render(result))
        print()
        code = max(code, 0 if result["ok"] else 1)
    what = "expectations hold on the twin (real side skipped)" if reason else "backends agree and expectations hold"
    print(f"demo: {what if code == 0 else 'FAILED (see above)'}; results in {out}/")
    return code
