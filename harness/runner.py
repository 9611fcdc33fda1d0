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

from harness.diff import Field, diff_tables, verdict_changes
from harness.inputs import load_cluster, read_source, rel
from twin.model.build import parse_policy_source
from twin.model.findings import InputError, TwinError
from twin.model.objects import Cluster, NetworkPolicy
from twin.model.scenario import Scenario, parse_scenario
from twin.sim import SimConfig, simulate

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
                from twin.model.findings import error
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
            except InputError as exc:
                raise InputError([f.__class__(f.severity, f"Scenario {scenario.name}", f"steps[{step.index}].probe.{f.field}",
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
    return {"flows": [f.as_dict() for f in res.flows], "events": res.events,
            "virtual_seconds": res.end_time, "wall_seconds": round(time.perf_counter() - t0, 3)}


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
    if len(ran) == 2:
        disagreements = diff_tables(observations["twin"]["flows"], observations["real"]["flows"], "key",
                                    DIFF_FIELDS, ("twin", "real"), _explain)
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


DEMO_SCENARIOS = ("scenarios/seed-pod-to-pod.yaml", "scenarios/seed-deathstar-l3l4.yaml")


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
    print(f"demo: {'backends agree and expectations hold' if code == 0 else 'FAILED (see above)'}; results in {out}/")
    return code
