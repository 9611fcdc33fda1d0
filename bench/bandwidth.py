"""Bandwidth Manager benchmark (``make bench``; ``python -m bench.bandwidth --quick``).

Measures on the real datapath, side by side in one run (root; bcc; iperf3):

1. **accuracy**: achieved / configured goodput at 1M, 10M, 100M and 1G
   (``iperf3 -R`` across nodes, the limited pod sends), next to the best a
   limit allows (``limit x MSS/(MTU+14)``) and the twin's prediction from
   the committed calibration profile;
2. **overhead on unlimited pods**: an unannotated pod's cross-node
   throughput with the limiter attached to its node's device (another pod
   on that node is limited, so the HTB root and the BPF classifier are
   there) and with none (``bandwidthManager.enabled: false``: no host
   program, no qdisc), runs interleaved in rounds;
3. **CPU time per gigabit** of goodput, with and without the limiter: the
   CPU seconds iperf3 reports for its two processes (``cpu_utilization_percent``:
   user + system time of each process, which includes the kernel's
   transmit path and the qdisc run in the sender's context; softirq work
   done elsewhere is not counted) over the goodput;
4. **time to apply a changed limit**: the sender node's agent reconcile
   after each annotation change (``harness.calibrate``'s flips), and the
   twin's modelled apply delay.

Results: ``<out>/bandwidth.json`` and ``<out>/bandwidth.md`` (default
bench/results).  Not a test: a measurement; goals are stated, not asserted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.calibrate import calibrate, pod_manifest
from twin.calibration import load_bandwidth_profile
from twin.semantics.bandwidth import limit_of, tcp_payload_fraction
from twin.semantics.delays import DELAYS
from twin.semantics.rates import predict_throughput

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results"
LIMITS = ("1M", "10M", "100M", "1G")
GOALS = {"achieved_over_configured": (0.95, 1.02), "unlimited_with_over_without": 0.95}


def _overhead_run(limiter: bool, duration_s: float, seed: int) -> dict:
    """One real run: the unannotated pod ``free`` (k8s-w1) sends to k8s-w2 for ``duration_s``."""
    from harness.inputs import load_run_inputs
    from harness.real import RealBackend
    with tempfile.TemporaryDirectory(prefix="twin-bench-bw-") as d:
        p = Path(d)
        (p / "pods.yaml").write_text("---\n".join([pod_manifest("free", "k8s-w1"), pod_manifest("anchor", "k8s-w1", "10M"),
                                                   pod_manifest("client", "k8s-w2")]))
        (p / "values.yaml").write_text(f"bandwidthManager:\n  enabled: {'true' if limiter else 'false'}\n"
                                       "kubeProxyReplacement: true\n")
        (p / "s.yaml").write_text("scenario: bench-bandwidth-overhead\nmanifests: [pods.yaml]\nvalues: values.yaml\n"
                                  f"steps:\n  - throughput: {{name: free, from: client, to: free, "
                                  f"duration: {duration_s:g}s}}\n")
        obs = RealBackend().run(load_run_inputs(str(p / "s.yaml")), seed)
    (rec,) = obs.throughput
    return {"limiter": limiter, "goodput_bps": rec.goodput.bps, "cpu_s": rec.cpu_s,
            "mechanism": rec.mechanism, "retransmits": rec.retransmits}


def _per_gbit(cpu_s: float | None, goodput_bps: float, duration_s: float) -> float | None:
    if cpu_s is None or goodput_bps <= 0:
        return None
    return round(cpu_s / (goodput_bps * duration_s / 1e9), 6)


def run(quick: bool, out: Path, log=print) -> dict:
    t0 = time.monotonic()
    repeats = 1 if quick else 3
    duration = 3.0 if quick else 5.0
    profile = load_bandwidth_profile()
    frac = tcp_payload_fraction(profile.mtu)
    log(f"bench.bandwidth: accuracy at {', '.join(LIMITS)} ({repeats} x {duration:g} s each)")
    prof = calibrate(list(LIMITS), repeats, duration, seed=7, log=log)
    accuracy = []
    for p in prof["limited"]:
        if p["parallel"] != 1:
            continue
        med = statistics.median(p["goodput_bps"])
        pred = predict_throughput(limit_of(str(p["limit_bps"])), False, 1, duration, profile)
        accuracy.append({
            "limit_bps": p["limit_bps"], "runs": p["goodput_bps"], "median_bps": med,
            "achieved_over_configured": round(med / p["limit_bps"], 4),
            "achieved_over_best": round(med / (p["limit_bps"] * frac), 4),
            "twin_bps": round(pred.goodput.bps, 1), "twin_lo": pred.goodput.lo, "twin_hi": pred.goodput.hi,
            "real_over_twin": round(med / pred.goodput.bps, 4),
            "goal_met": GOALS["achieved_over_configured"][0] <= med / p["limit_bps"] <= GOALS["achieved_over_configured"][1],
        })
    log(f"bench.bandwidth: unlimited pod with / without the limiter ({repeats} rounds of {duration:g} s)")
    overhead = []
    for r in range(repeats):
        for limiter in ((True, False) if r % 2 == 0 else (False, True)):
            row = _overhead_run(limiter, duration, seed=r + 1)
            row["round"] = r
            overhead.append(row)
            log(f"  round {r} limiter={limiter}: {row['goodput_bps'] / 1e9:.2f} Gbit/s, cpu {row['cpu_s']} s")
    on = [x["goodput_bps"] for x in overhead if x["limiter"]]
    off = [x["goodput_bps"] for x in overhead if not x["limiter"]]
    ratio = statistics.median(on) / statistics.median(off)
    cpu = {
        "unlimited_with_limiter_s_per_gbit": [_per_gbit(x["cpu_s"], x["goodput_bps"], duration) for x in overhead
                                              if x["limiter"]],
        "unlimited_without_limiter_s_per_gbit": [_per_gbit(x["cpu_s"], x["goodput_bps"], duration) for x in overhead
                                                 if not x["limiter"]],
    }
    top = [p for p in prof["limited"] if p["parallel"] == 1 and p["limit_bps"] == max(x["limit_bps"] for x in prof["limited"])]
    if top and top[0].get("cpu_s"):
        cpu["limited_at_top_limit_s_per_gbit"] = [_per_gbit(c, g, duration) for c, g in zip(top[0]["cpu_s"], top[0]["goodput_bps"])]
    lo, hi = DELAYS.agent_regenerate.bounds()
    apply = {"real_reconcile_s": prof["apply_delay_s"],
             "real_median_s": round(statistics.median(prof["apply_delay_s"]), 6) if prof["apply_delay_s"] else None,
             "real_max_s": max(prof["apply_delay_s"]) if prof["apply_delay_s"] else None,
             "twin_agent_regenerate_s": [lo, hi], "twin_origin": DELAYS.agent_regenerate.origin}
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
        "kernel": platform.release(), "cpus": os.cpu_count(), "quick": quick, "duration_s": duration,
        "repeats": repeats, "mechanism": prof["mechanism"], "mechanism_reason": prof["measured"].get("reason", ""),
        "payload_fraction": round(frac, 6), "calibration_used_by_twin": profile.describe(),
        "goals": GOALS, "accuracy": accuracy,
        "overhead": {"runs": overhead, "with_over_without": round(ratio, 4),
                     "goal_met": ratio >= GOALS["unlimited_with_over_without"]},
        "cpu": cpu, "apply": apply, "wall_s": round(time.monotonic() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bandwidth.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bandwidth.md").write_text(markdown(result))
    log(f"wrote {out / 'bandwidth.json'} and {out / 'bandwidth.md'}")
    return result


def _med(xs) -> str:
    xs = [x for x in xs or [] if x is not None]
    return f"{statistics.median(xs):.3f}" if xs else "n/a"


def markdown(r: dict) -> str:
    lines = [f"# Bandwidth Manager benchmark ({r['date']}, {r['host']}, kernel {r['kernel']}, {r['cpus']} CPUs)", "",
             f"Mechanism: **{r['mechanism']}** — {r['mechanism_reason']}", "",
             f"{r['repeats']} run(s) of {r['duration_s']:g} s per configuration; iperf3 -R across nodes. "
             f"Best possible goodput = limit x {r['payload_fraction']} (MSS 1448 / 1514 wire bytes). "
             f"Twin: {r['calibration_used_by_twin']}.", "",
             "## Accuracy (goal: achieved / configured in "
             f"{r['goals']['achieved_over_configured'][0]}-{r['goals']['achieved_over_configured'][1]}; "
             "Cilium's published EDT figures are about 0.96-0.98)", "",
             "| limit | real median | achieved / configured | achieved / best | twin [lo, hi] | real / twin | goal |",
             "|---|---|---|---|---|---|---|"]
    for a in r["accuracy"]:
        hi = "∞" if a["twin_hi"] is None else f"{a['twin_hi'] / 1e6:.3f}"
        lines.append(f"| {a['limit_bps'] / 1e6:g} Mbit/s | {a['median_bps'] / 1e6:.3f} Mbit/s | "
                     f"{a['achieved_over_configured']} | {a['achieved_over_best']} | {a['twin_bps'] / 1e6:.3f} "
                     f"[{a['twin_lo'] / 1e6:.3f}, {hi}] | {a['real_over_twin']} | {'met' if a['goal_met'] else 'MISSED'} |")
    o = r["overhead"]
    lines += ["", "## Unlimited pod: limiter attached / none (goal >= "
              f"{r['goals']['unlimited_with_over_without']})", "",
              "| round | limiter | goodput | CPU s |", "|---|---|---|---|"]
    for x in o["runs"]:
        lines.append(f"| {x['round']} | {'attached' if x['limiter'] else 'none'} | {x['goodput_bps'] / 1e9:.2f} Gbit/s | "
                     f"{x['cpu_s']} |")
    lines += ["", f"Median ratio with / without: **{o['with_over_without']}** "
              f"({'met' if o['goal_met'] else 'MISSED'}); the runs of one configuration differ by more than the "
              "difference between them on this 2-core machine, so read it with the table.", "",
              "## CPU seconds per gigabit of goodput (iperf3's two processes)", "",
              f"- unlimited, limiter attached: {_med(r['cpu']['unlimited_with_limiter_s_per_gbit'])}",
              f"- unlimited, no limiter: {_med(r['cpu']['unlimited_without_limiter_s_per_gbit'])}"]
    if "limited_at_top_limit_s_per_gbit" in r["cpu"]:
        lines.append(f"- limited at the highest limit: {_med(r['cpu']['limited_at_top_limit_s_per_gbit'])}")
    a = r["apply"]
    lines += ["", "## Time to apply a changed limit", "",
              f"- real: the sender node's agent reconcile after an annotation change: median "
              f"{a['real_median_s'] * 1e3:.2f} ms, max {a['real_max_s'] * 1e3:.2f} ms ({len(a['real_reconcile_s'])} "
              "changes; the class's rate changes in place, no program reload)" if a["real_median_s"] is not None
              else "- real: no annotation change measured",
              f"- twin: agent-regenerate {a['twin_agent_regenerate_s'][0]:g}-{a['twin_agent_regenerate_s'][1]:g} s "
              f"({a['twin_origin']})", "", f"Wall time: {r['wall_s']} s", ""]
    return "\n".join(lines)


def rewrite_markdown(out: Path = DEFAULT_OUT) -> None:
    """Render ``bandwidth.md`` again from ``bandwidth.json`` (after a change to the report's layout)."""
    r = json.loads((out / "bandwidth.json").read_text())
    (out / "bandwidth.md").write_text(markdown(r))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bandwidth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run per configuration, 3 s each")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    from harness.real import RealBackend
    reason = RealBackend().unavailable_reason()
    if reason:
        print(f"error: the real datapath cannot run here: {reason}", file=sys.stderr)
        return 3
    run(args.quick, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
