"""Failover timing of the twin against reality: ``make l2-repeat``.

    python -m harness.repeat scenarios/l2-lease-loss.yaml scenarios/l2-node-crash.yaml
    python -m harness.repeat --repeats 3 scenarios/l2-node-crash.yaml     # a quick look

For each scenario: the twin runs once (seed 1) for its ``failover``
predictions — the interval ``[outage_lo, outage_hi]`` and its Monte Carlo
``samples`` — and then once per repeat with that repeat's seed (the twin's
own outages); the real side runs ``settings.repeats`` times (or
``--repeats``).  Every outage is measured by the one definition both sides
share (:func:`harness.analysis.failover_outage`).  Written to
``<out>.json`` and ``<out>.md`` (default ``bench/results/l2-failover``):
every measured outage with the twin's interval, whether it lies inside
(strictly, and within ``outage_tolerance``), the interval's width, and a
two-sample Kolmogorov–Smirnov test between the real outages and the twin's
samples.  Not a test: a measurement (root; about 30-40 s per real run).
Exit 0 when every real outage lies inside its interval (± tolerance), 1
otherwise, 2 on bad input, 3 when the real datapath cannot run here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from harness.analysis import ks_2samp, l2_measurements
from harness.inputs import load_run_inputs
from harness.real import RealBackend
from harness.runner import l2_context
from twin.model.findings import InputError, TwinError
from twin.sim.backend import TwinBackend

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "l2-failover"


def _failovers(inputs, obs, predictions, ctx) -> list[dict]:
    return l2_measurements(obs, inputs.scenario, predictions, ctx["lease_of"])["failovers"]


def repeat_scenario(path: str, repeats: int | None = None, log=print) -> dict:
    """Run ``path`` on the twin (predictions, then once per repeat) and ``repeats`` times
    on the real side; one entry per fault key with every outage and the comparison."""
    inputs = load_run_inputs(path)
    ctx = l2_context(inputs)
    n = repeats or inputs.scenario.settings.repeats
    tol = inputs.scenario.settings.outage_tolerance_s
    twin = TwinBackend()
    base = twin.run(inputs, 1)
    predictions = base.predictions
    preds = {p["step"]: p for p in predictions if p.get("kind") == "failover"}
    faults: dict[str, dict] = {}

    def entry(f: dict) -> dict:
        p = preds.get(f["step"])
        return faults.setdefault(f["key"], {
            "key": f["key"], "fault": f["fault"], "step": f["step"],
            "predicted": [p["outage_lo"], p["outage_hi"]] if p else None,
            "width_s": round(p["outage_hi"] - p["outage_lo"], 6) if p else None,
            "derivation": p.get("derivation") if p else None,
            "twin_samples": list(p.get("samples") or []) if p else [],
            "twin_runs": [], "real_runs": [], "errors": []})

    for i in range(n):
        obs = twin.run(inputs, i + 1)
        for f in _failovers(inputs, obs, predictions, ctx):
            entry(f)["twin_runs"].append({"seed": i + 1, "outage_s": f["outage_s"], "persisting": f["persisting"],
                                          "node": f["node"], "new_holder": f["new_holder"]})
    real = RealBackend()
    for i in range(n):
        t0 = time.monotonic()
        try:
            obs = real.run(inputs, i + 1)
        except TwinError as exc:  # one failed run is recorded; the others still count
            log(f"  real run {i + 1}/{n}: FAILED: {exc}")
            for e in faults.values():
                e["errors"].append({"run": i + 1, "error": str(exc)})
            continue
        for f in _failovers(inputs, obs, predictions, ctx):
            e = entry(f)
            lo, hi = e["predicted"] or (None, None)
            row = {"run": i + 1, "outage_s": f["outage_s"], "persisting": f["persisting"], "failures": f["failures"],
                   "node": f["node"], "new_holder": f["new_holder"],
                   "inside": lo is not None and not f["persisting"] and lo <= f["outage_s"] <= hi,
                   "inside_tolerance": lo is not None and not f["persisting"] and lo - tol <= f["outage_s"] <= hi + tol}
            e["real_runs"].append(row)
            log(f"  real run {i + 1}/{n}: {f['key']}: outage {f['outage_s']} s "
                f"(twin {e['predicted']}) {'inside' if row['inside_tolerance'] else 'OUTSIDE'} "
                f"[{time.monotonic() - t0:.1f} s]")
    # the outage is measured by a loop of requests: below one request interval a difference is not
    # a measurement (the real loop drifts a few ms per second; the twin's requests are exactly spaced)
    loops = [s.traffic.interval_s for s in inputs.scenario.steps if s.kind == "loop" and s.traffic is not None]
    resolution = min(loops) if loops else None
    for e in faults.values():
        measured = [r["outage_s"] for r in e["real_runs"] if not r["persisting"]]
        e["ks"] = ks_2samp(measured, e["twin_samples"]) if e["twin_samples"] else \
            {"statistic": None, "p_value": None, "why": "the twin gave no Monte Carlo samples for this failover"}
        if e["twin_samples"] and measured and resolution:
            def steps(xs: list[float]) -> list[int]:
                return [round(x / resolution) for x in xs]
            e["resolution_s"] = resolution
            e["ks_at_resolution"] = ks_2samp(steps(measured), steps(e["twin_samples"]))
            e["histogram"] = {f"{k * resolution:.1f}": {"real": steps(measured).count(k),
                                                        "twin": round(steps(e["twin_samples"]).count(k)
                                                                      / len(e["twin_samples"]), 3)}
                              for k in sorted(set(steps(measured)) | set(steps(e["twin_samples"])))}
        e["all_inside"] = bool(e["real_runs"]) and all(r["inside"] for r in e["real_runs"])
        e["all_inside_tolerance"] = bool(e["real_runs"]) and all(r["inside_tolerance"] for r in e["real_runs"])
        if measured:
            e["real_summary"] = {"n": len(measured), "min": min(measured), "median": statistics.median(measured),
                                 "max": max(measured)}
    return {"scenario": inputs.scenario.name, "file": path, "repeats": n, "outage_tolerance_s": tol,
            "faults": list(faults.values())}


def render_md(results: list[dict], meta: dict) -> str:
    lines = ["# L2 failover: measured outages against the twin's prediction", "",
             f"{meta['when']} on {meta['host']} ({meta['kernel']}); `make l2-repeat`.", "",
             "Outage: from the first failed request at or after the fault to the first answered request after "
             "the last failure (the external host requests the LB IP every 100 ms; the same definition for both "
             "sides, `harness.analysis.failover_outage`).", ""]
    for r in results:
        lines += [f"## {r['scenario']} ({r['repeats']} real runs, tolerance ±{r['outage_tolerance_s']} s)", ""]
        for e in r["faults"]:
            lines += [f"### {e['key']}", "",
                      f"- twin interval: {e['predicted']} s, width {e['width_s']} s",
                      f"- derivation: {e['derivation']}" if e.get("derivation") else "- derivation: (none given)",
                      f"- every real outage inside: {e['all_inside']} (strict), {e['all_inside_tolerance']} (± tolerance)",
                      f"- two-sample KS (real vs twin Monte Carlo, n={e['ks'].get('n')}, m={e['ks'].get('m')}): "
                      f"D={e['ks'].get('statistic')}, p={e['ks'].get('p_value')}" + (f" ({e['ks']['why']})" if e['ks'].get('why') else ""),
                      *([f"- the same at the measurement's resolution (outages in whole request intervals of "
                         f"{e['resolution_s']:g} s; ties make it conservative): D={e['ks_at_resolution'].get('statistic')}, "
                         f"p={e['ks_at_resolution'].get('p_value')}",
                         "- outage histogram (s: real runs / twin share): " + ", ".join(
                             f"{k}: {v['real']} / {v['twin']:.0%}" for k, v in e["histogram"].items())]
                        if e.get("ks_at_resolution") else []),
                      "", "| run | real outage (s) | failed requests | holder → new holder | inside | inside ± tol |",
                      "|---|---|---|---|---|---|"]
            for x in e["real_runs"]:
                lines.append(f"| {x['run']} | {x['outage_s']}{' (persisting)' if x['persisting'] else ''} | {x['failures']} "
                             f"| {x['node']} → {x['new_holder']} | {'yes' if x['inside'] else 'NO'} "
                             f"| {'yes' if x['inside_tolerance'] else 'NO'} |")
            for err in e["errors"]:
                lines.append(f"| {err['run']} | failed: {err['error'][:120]} | | | | |")
            tw = [x["outage_s"] for x in e["twin_runs"]]
            if tw:
                lines += ["", f"Twin runs (seeds 1-{len(tw)}): outages {tw}"]
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.repeat", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="+")
    ap.add_argument("--repeats", type=int, default=None, help="real runs per scenario (default: settings.repeats)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results path without extension")
    args = ap.parse_args(argv)
    reason = RealBackend().unavailable_reason()
    if reason:
        print(f"l2-repeat: the real datapath cannot run here: {reason}", file=sys.stderr)
        return 3
    results = []
    try:
        for path in args.scenarios:
            print(f"{path}:")
            results.append(repeat_scenario(path, args.repeats))
    except InputError as exc:
        for f in exc.findings:
            print(f.render(), file=sys.stderr)
        return 2
    meta = {"when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
            "kernel": platform.release()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    out.with_suffix(".md").write_text(render_md(results, meta))
    ok = all(e["all_inside_tolerance"] for r in results for e in r["faults"]) and any(r["faults"] for r in results)
    print(f"written: {out.with_suffix('.json')} and {out.with_suffix('.md')}; "
          f"{'every real outage inside the twin interval' if ok else 'SOME real outage outside its interval (see the file)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
