"""Scenario runner: one scenario, two backends (twin, real), one result.

``run_scenario`` loads the scenario and its inputs (exit 2 on bad input,
before anything is built), runs the requested backends, checks each
probe's expectations on each backend, diffs the flow records by key and
writes ``DIR/result.json``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.analysis import chi2_test, service_measurements
from harness.diff import Field, diff_tables, verdict_changes
from harness.inputs import load_cluster, read_source, rel
from twin.model.build import parse_policy_source
from twin.model.findings import InputError, TwinError, error
from twin.model.objects import Cluster, NetworkPolicy
from twin.model.scenario import Scenario, parse_scenario, service_key
from twin.semantics.lb import frontend, lb_table
from twin.sim import SimConfig, simulate
from twin.sim.services import predictions as service_predictions

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


@dataclass
class RunInputs:
    scenario: Scenario
    cluster: Cluster
    applies: dict[int, list[NetworkPolicy]]


def load_inputs(path: str) -> RunInputs:
    scenario = parse_scenario(read_source(path))
    manifests = [rel(path, m) for m in scenario.manifests]
    values = rel(path, scenario.values) if scenario.values else None
    cluster = load_cluster(manifests, values)
    applies = {}
    current = cluster
    for step in scenario.steps:
        if step.kind == "apply":
            pols = parse_policy_source(read_source(rel(path, step.path)))
            applies[step.index] = pols
            for p in pols:
                current = current.with_policy(p)
        elif step.kind == "delete":
            _, ns, name = step.target.split("/")
            try:
                current = current.without_policy(f"{ns}/{name}")
            except KeyError:
                raise InputError([error(f"Scenario {scenario.name}", f"steps[{step.index}].delete",
                                        f"{step.target} does not exist at this point of the scenario", path, step.line)])
    # Probes must resolve against the cluster (pods and services never change along a run).
    from twin.semantics.probe import resolve_targets
    from twin.semantics.view import ClusterView
    view = ClusterView(cluster)
    for step in scenario.steps:
        if step.kind == "probe":
            try:
                resolve_targets(view, step.probe)
            except InputError as exc:  # name the scenario step, not the bare probe
                raise InputError([error(f"Scenario {scenario.name}", f"steps[{step.index}].probe.{f.field}",
                                        f.message, path, step.line) for f in exc.findings]) from None
    return RunInputs(scenario, cluster, applies)


def check_expectations(scenario: Scenario, flows: list[dict], backend: str) -> list[dict]:
    probes = {s.probe.name: s.probe for s in scenario.steps if s.kind == "probe"}
    out = []
    seen = set()
    for f in flows:
        p = probes[f["probe"]]
        seen.add(p.name)
        checks = [("verdict", p.expect, f["verdict"])]
        if p.expect_status is not None:
            checks.append(("http_status", p.expect_status, f.get("http_status")))
        if p.expect_body is not None:
            checks.append(("body", p.expect_body, f.get("body")))
        for field, want, got in checks:
            if want is None:
                continue
            ok = (want in (got or "")) if field == "body" else (want == got)
            if not ok:
                out.append({"backend": backend, "probe": p.name, "dst": f["dst"], "field": field, "expected": want, "got": got})
    for name, p in probes.items():
        if name not in seen and p.expect == "FORWARDED":
            out.append({"backend": backend, "probe": name, "dst": p.dst, "field": "records", "expected": "≥1", "got": 0})
    return out


def _explain(twin: dict, real: dict | None) -> str:
    parts = [f"twin: {twin.get('explanation', '')}"]
    if real and real.get("evidence"):
        parts.append("real saw: " + "; ".join(real["evidence"]))
    return " | ".join(parts)


def run_twin(inputs: RunInputs, seed: int) -> dict:
    t0 = time.perf_counter()
    res = simulate(inputs.scenario, inputs.cluster, inputs.applies, SimConfig(seed=seed))
    loops = [s.traffic for s in inputs.scenario.steps if s.kind == "loop"]
    kills = [(s.pod, loops[0] if loops else None) for s in inputs.scenario.steps if s.kind == "kill"]
    return {"flows": [f.as_dict() for f in res.flows], "events": res.events, "traffic": res.traffic,
            "holds": res.holds, "syscalls": res.syscalls, "kills": res.kills,
            "predictions": service_predictions(inputs.cluster, kills),
            "virtual_seconds": round(res.end_time, 6), "wall_seconds": round(time.perf_counter() - t0, 3)}


def expected_shares(inputs: RunInputs, traffic) -> dict[str, float]:
    """The twin's prediction of backend shares for a requests step: uniform over
    the frontend's active backends (endpoint states as at the start of the run)."""
    from twin.model.enums import Protocol
    svc = inputs.cluster.service(service_key(traffic.dst))
    fe = frontend(lb_table(inputs.cluster), svc.cluster_ip, traffic.port,
                  Protocol.UDP if traffic.kind == "udp" else Protocol.TCP)
    active = fe.active if fe else ()
    return {b.pod: 1 / len(active) for b in active}


def _stage_story(twin_obs: dict, real_obs: dict, pod: str) -> str:
    """Which stage of the endpoint pipeline differed, from both event logs."""
    def stages(obs):
        kill = next((k["t"] for k in obs.get("kills", []) if k["action"] == "kill" and k["pod"] == pod), None)
        if kill is None:
            return {}
        ev = [e for e in obs.get("events", []) if e["t"] >= kill]
        out = {}
        for name, pred in (("probing (kill → NotReady)", lambda e: e["event"] == "pod-not-ready" and e.get("pod") == pod),
                           ("status", lambda e: e["event"] == "status-updated" and e.get("pod") == pod),
                           ("agents (last node updated)", lambda e: e["event"] in ("agent-regenerated", "agent-lb-updated"))):
            hits = [e["t"] for e in ev if pred(e)]
            if hits:
                out[name] = round((hits[-1] if name.startswith("agents") else hits[0]) - kill, 3)
        return out
    t, r = stages(twin_obs), stages(real_obs)
    parts = [f"{k}: twin {t.get(k)} s, real {r.get(k)} s" for k in dict.fromkeys(list(t) + list(r))]
    return "; ".join(parts)


def check_service_expectations(inputs: RunInputs, meas: dict, obs: dict, backend: str) -> list[dict]:
    """Expectations that hold on one backend alone: hold checks, syscall facts, shares."""
    out = []
    checks = [s for s in inputs.scenario.steps if s.kind == "check"]
    for step, h in zip(checks, meas["holds"]):
        if h["state"] != step.expect:
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


def diff_services(inputs: RunInputs, twin_obs: dict, twin: dict, real: dict, real_obs: dict) -> list[dict]:
    """Service-level disagreements: shares (chi-square), outage windows, holds, syscalls."""
    out = []
    st = inputs.scenario.settings
    for step in inputs.scenario.steps:
        if step.kind != "requests":
            continue
        t = step.traffic
        shares = expected_shares(inputs, t)
        if "?" in real["requests"].get(t.name, {}).get("backends", {}):
            real["requests"][t.name]["chi2"] = {"skipped": "the answers do not name their backend"}
            shares = None
        for name, meas in (("real", real), ("twin", twin)) if shares else ():
            res = chi2_test(meas["requests"].get(t.name, {}).get("backends", {}), shares)
            meas["requests"].setdefault(t.name, {})["chi2"] = res
            if res["p_value"] < st.chi2_alpha:
                out.append({"key": t.name, "field": "backend shares", "twin": {k: round(v, 3) for k, v in shares.items()},
                            "real" if name == "real" else "twin-sample": meas["requests"][t.name]["backends"],
                            "why": f"chi-square p={res['p_value']} < alpha={st.chi2_alpha} on the {name} sample " + res.get("why", "")})
        kinds_t = set(twin["requests"].get(t.name, {}).get("outcomes", {}))
        kinds_r = set(real["requests"].get(t.name, {}).get("outcomes", {}))
        if kinds_t != kinds_r:
            out.append({"key": t.name, "field": "outcomes", "twin": twin["requests"].get(t.name, {}).get("outcomes"),
                        "real": real["requests"].get(t.name, {}).get("outcomes"),
                        "why": "the kinds of request outcomes differ (answered / refused / timeout / EHOSTUNREACH)"})
    preds = {p["pod"]: p for p in twin_obs.get("predictions", [])}
    for kt, kr in zip(twin["kills"], real["kills"]):
        p = preds.get(kr["pod"])
        if not p:
            continue
        lo, hi = p["outage_s"]
        for name, k in (("real", kr), ("twin", kt)):
            if not (lo - st.outage_tolerance_s <= k["outage_s"] <= hi + st.outage_tolerance_s):
                out.append({"key": f"{k['loop']}/kill {k['pod']}", "field": "outage window",
                            "twin": [round(lo, 3), round(hi, 3)], name if name == "real" else "twin-sample": k["outage_s"],
                            "why": f"the {name} outage {k['outage_s']} s is outside the predicted interval ±{st.outage_tolerance_s} s; "
                                   + _stage_story(twin_obs, real_obs, kr["pod"])})
        if kr.get("readmit_s") is not None or kt.get("readmit_s") is not None:
            rlo, rhi = p["readmit_s"]
            got = kr.get("readmit_s")
            if got is None or not (0 <= got <= rhi + st.outage_tolerance_s):
                out.append({"key": f"{kr['loop']}/restart {kr['pod']}", "field": "readmission",
                            "twin": [round(rlo, 3), round(rhi, 3)], "real": got,
                            "why": "the restarted backend came back later than the pipeline predicts (or never)"})
    for a, b in zip(twin["holds"], real["holds"]):
        if a["state"] != b["state"]:
            out.append({"key": f"hold {a['hold']}", "field": "state", "twin": a["state"], "real": b["state"],
                        "why": f"long-lived connection to {b.get('backend')}"})
    for a, b in zip(twin["syscalls"], real["syscalls"]):
        for f in ("connect", "getsockname_ip", "getpeername", "capture_has_frontend"):
            if a.get(f) != b.get(f):
                out.append({"key": a["name"], "field": f, "twin": a.get(f), "real": b.get(f),
                            "why": "socket-LB syscall view differs"})
    if len(twin["kills"]) != len(real["kills"]) or len(twin["holds"]) != len(real["holds"]):
        out.append({"key": "service observations", "field": "<rows>", "twin": [len(twin["kills"]), len(twin["holds"])],
                    "real": [len(real["kills"]), len(real["holds"])], "why": "the backends observed different numbers of kills/holds"})
    return out


def run_scenario(path: str, backend: str = "both", out: str | None = None, seed: int = 1) -> dict:
    inputs = load_inputs(path)
    backends = ["twin", "real"] if backend == "both" else [backend]
    observations: dict[str, dict] = {}
    if "twin" in backends:
        observations["twin"] = run_twin(inputs, seed)
    if "real" in backends:
        from harness.real import real_unavailable_reason, run_real
        reason = real_unavailable_reason()
        if reason:
            if backend == "real":
                raise TwinError(f"the real datapath cannot run here: {reason}")
            observations["real"] = {"skipped": reason, "flows": []}
        else:
            observations["real"] = run_real(inputs)
    failures = []
    for name, obs in observations.items():
        if not obs.get("skipped"):
            failures += check_expectations(inputs.scenario, obs["flows"], name)
    disagreements = []
    ran = [n for n in backends if not observations[n].get("skipped")]
    services = {}
    for name in ran:
        services[name] = service_measurements(observations[name], inputs.scenario)
        observations[name]["measurements"] = services[name]
    loops = [s_.traffic for s_ in inputs.scenario.steps if s_.kind == "loop"]
    preds = {p["pod"]: p for p in service_predictions(
        inputs.cluster, [(s_.pod, loops[0] if loops else None) for s_ in inputs.scenario.steps if s_.kind == "kill"])}
    for name in ran:
        for k in services[name]["kills"]:
            if k["pod"] in preds:
                lo, hi = preds[k["pod"]]["outage_s"]
                k["predicted_outage_s"], k["tolerance_s"] = [round(lo, 3), round(hi, 3)], inputs.scenario.settings.outage_tolerance_s
        failures += check_service_expectations(inputs, services[name], observations[name], name)
    if len(ran) == 2:
        disagreements = diff_tables(observations["twin"]["flows"], observations["real"]["flows"], "key",
                                    DIFF_FIELDS, ("twin", "real"), _explain)
        disagreements += diff_services(inputs, observations["twin"], services["twin"], services["real"],
                                       observations["real"])
    main = observations[ran[0]]["flows"] if ran else []
    result = {
        "scenario": inputs.scenario.name, "file": path, "seed": seed, "backends": backends,
        "observations": observations, "disagreements": disagreements,
        "expectation_failures": failures, "verdict_changes": verdict_changes(main),
        "ok": not disagreements and not failures,
    }
    if out:
        os.makedirs(out, exist_ok=True)
        Path(out, "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def run_scenario_cli(path: str, backend: str, out: str | None, seed: int) -> int:
    from reports.terminal import render
    out = out or os.path.join("results", Path(path).stem)
    result = run_scenario(path, backend, out, seed)
    print(render(result))
    print(f"  written: {os.path.join(out, 'result.json')}")
    return 0 if result["ok"] else 1


DEMO_SCENARIOS = ("scenarios/seed-pod-to-pod.yaml", "scenarios/seed-service-socket-lb.yaml",
                  "scenarios/seed-deathstar-l3l4.yaml", "scenarios/lb-backend-failover.yaml")


def demo(out: str) -> int:
    """The main job on its default scenarios: the seed lab on both backends."""
    from harness.real import real_unavailable_reason
    from reports.terminal import render
    reason = real_unavailable_reason()
    backend = "both"
    if reason:
        print(f"twin demo: the real datapath is skipped: {reason}. Running the twin only.")
        backend = "twin"
    root = Path(__file__).resolve().parent.parent
    code = 0
    for sc in DEMO_SCENARIOS:
        path = str(root / sc)
        result = run_scenario(path, backend, os.path.join(out, Path(sc).stem), 1)
        print(render(result))
        print()
        code = max(code, 0 if result["ok"] else 1)
    what = "expectations hold on the twin (real side skipped)" if reason else "backends agree and expectations hold"
    print(f"demo: {what if code == 0 else 'FAILED (see above)'}; results in {out}/")
    return code
