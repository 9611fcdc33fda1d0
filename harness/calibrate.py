"""Calibrate the twin's bandwidth model on the real datapath: ``make calibrate-bandwidth``.

    python -m harness.calibrate                      # writes twin/calibration/bandwidth.json
    python -m harness.calibrate --repeats 2 --out /tmp/bw.json --limits 10M,100M   # a quick look

Builds one scenario (three nodes as the seed lab; one server pod per
configured limit on ``k8s-w1``, each with its own
``kubernetes.io/egress-bandwidth``; a client on ``k8s-w2`` and one on
``k8s-w1``), runs it once on the real backend
(:class:`harness.real.RealBackend`: the node agents' limiter, iperf3 in the
pods) and writes every measurement to a calibration profile
(:mod:`twin.model.calibration`, schema 1):

* ``limited``: for every limit (and 10M with 2 and 4 streams), ``repeats``
  runs of ``iperf3 -R`` (the server pod sends, as the seed's TCP_MAERTS)
  across nodes: whole-run goodput, per-stream goodput, per-interval goodput;
* ``unlimited``: an unannotated pod to a client on another node
  (``cross-node``) and on its own node (``same-node``);
* ``apply_delay_s``: a pod's annotation flipped between two limits
  ``repeats`` times: the seconds the sender node's agent took to reconcile
  each change (``maps-reconciled``).

The runs are interleaved in rounds, each round in an order drawn from a
seeded random stream, so that the machine's noise spreads evenly over the
configurations.  The profile records the machine, kernel, mechanism and the
command.  Not a test: a measurement (root; about 5 minutes by default).
Exit 0 on success, 2 on bad arguments, 3 when the real datapath cannot run
here, 1 when the run failed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import sys
import tempfile
from pathlib import Path

from twin.calibration import BANDWIDTH_PROFILE, load_bandwidth_profile
from twin.model.calibration import SCHEMA
from twin.model.findings import InputError, TwinError
from twin.semantics.bandwidth import DEFAULT_MTU, EGRESS_ANNOTATION, parse_quantity

DEFAULT_LIMITS = ("1M", "5M", "10M", "20M", "100M", "1G")
PARALLEL_POINTS = (("10M", 2), ("10M", 4))
SERVER_NODE, CLIENT_NODE = "k8s-w1", "k8s-w2"


def pod_manifest(name: str, node: str, limit: str | None = None) -> str:
    """A pod pinned to ``node`` (YAML), with an egress limit when ``limit`` is given."""
    ann = f"\n  annotations:\n    {EGRESS_ANNOTATION}: \"{limit}\"" if limit else ""
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}{ann}\n"
            f"spec:\n  nodeName: {node}\n  containers:\n  - name: iperf3\n    image: networkstatic/iperf3\n")


def _server_name(limit: str, parallel: int = 1) -> str:
    return f"bw-{limit.lower()}" + (f"-p{parallel}" if parallel > 1 else "")


def plan(limits: list[str], repeats: int, duration_s: float, seed: int = 1) -> tuple[str, str, list[dict]]:
    """(manifests YAML, scenario steps YAML, the runs in order): one round per repeat, each
    round every configuration once in a shuffled order, then the annotation flips."""
    pods = [pod_manifest("bw-client", CLIENT_NODE), pod_manifest("bw-client-local", SERVER_NODE), pod_manifest("bw-free", SERVER_NODE),
            pod_manifest("bw-apply", SERVER_NODE, "10M")]
    configs: list[dict] = []
    for lim in limits:
        configs.append({"kind": "limited", "limit": lim, "parallel": 1, "server": _server_name(lim),
                        "client": "bw-client"})
    for lim, par in PARALLEL_POINTS:
        if lim in limits:
            configs.append({"kind": "limited", "limit": lim, "parallel": par, "server": _server_name(lim, par),
                            "client": "bw-client"})
    configs.append({"kind": "unlimited", "path": "cross-node", "parallel": 1, "server": "bw-free",
                    "client": "bw-client"})
    configs.append({"kind": "unlimited", "path": "same-node", "parallel": 1, "server": "bw-free",
                    "client": "bw-client-local"})
    for c in configs:
        if c["kind"] == "limited":
            pods.append(pod_manifest(c["server"], SERVER_NODE, c["limit"]))
    rng = random.Random(seed)
    runs: list[dict] = []
    steps: list[str] = []
    for r in range(repeats):
        order = list(configs)
        rng.shuffle(order)
        for c in order:
            name = f"{c['server']}-{c['client']}-r{r}"
            runs.append({**c, "name": name, "round": r})
            steps.append(f"  - throughput: {{name: {name}, from: {c['client']}, to: {c['server']}, "
                         f"duration: {duration_s:g}s, parallel: {c['parallel']}}}")
    for r in range(repeats):
        for lim in ("5M", "10M"):
            steps.append(f"  - annotate: {{object: Pod/default/bw-apply, set: {{{EGRESS_ANNOTATION}: \"{lim}\"}}}}")
            runs.append({"kind": "apply", "name": f"apply-{r}-{lim}", "round": r})
    return "---\n".join(pods), "\n".join(steps), runs


def _write(dirname: Path, limits: list[str], repeats: int, duration_s: float, seed: int) -> tuple[Path, list[dict]]:
    manifests, steps, runs = plan(limits, repeats, duration_s, seed)
    (dirname / "pods.yaml").write_text(manifests)
    (dirname / "values.yaml").write_text("bandwidthManager:\n  enabled: true\nkubeProxyReplacement: true\n")
    scen = dirname / "calibrate-bandwidth.yaml"
    scen.write_text(f"scenario: calibrate-bandwidth\nmanifests: [pods.yaml]\nvalues: values.yaml\n"
                    f"settings: {{probe_timeout: 1s}}\nsteps:\n{steps}\n")
    return scen, runs


def profile_from(obs, runs: list[dict], duration_s: float, command: str, interval_s: float = 1.0) -> dict:
    """The calibration profile (a dict of schema 1) from one real run's observations."""
    by_name = {r.name: r for r in obs.throughput}
    limited: dict[tuple[int, int], dict] = {}
    unlimited: dict[tuple[str, int], dict] = {}
    missing = [r["name"] for r in runs if r["kind"] != "apply" and r["name"] not in by_name]
    if missing:
        raise TwinError(f"calibration: the real run has no throughput record for {', '.join(missing[:5])}"
                        + (" ..." if len(missing) > 5 else ""))
    for r in runs:
        if r["kind"] == "apply":
            continue
        rec = by_name[r["name"]]
        if r["kind"] == "limited":
            key = (parse_quantity(r["limit"]), r["parallel"])
            point = limited.setdefault(key, {"limit_bps": key[0], "parallel": key[1], "goodput_bps": [],
                                             "streams_bps": [], "intervals_bps": []})
        else:
            key2 = (r["path"], r["parallel"])
            point = unlimited.setdefault(key2, {"path": key2[0], "parallel": key2[1], "goodput_bps": [],
                                                "streams_bps": [], "intervals_bps": []})
        point["goodput_bps"].append(rec.goodput.bps)
        point.setdefault("cpu_s", []).append(rec.cpu_s)
        point["streams_bps"].append([s.bps for s in rec.streams])
        point["intervals_bps"].extend(i.rate.bps for i in rec.intervals)
    mechanism = (obs.bandwidth or {}).get("mechanism") or "unknown"
    apply_delay = []
    annotate_steps = [e for e in obs.events if e.event == "step" and e.get("kind") == "annotate"]
    reconciled = [e for e in obs.events if e.event == "maps-reconciled" and e.get("node") == SERVER_NODE]
    for st in annotate_steps:
        after = [e for e in reconciled if e.t >= st.t]
        if after:
            apply_delay.append(round(float(after[0].get("seconds")), 6))
    return {"profile": "bandwidth", "schema": SCHEMA,
            "measured": {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                         "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                         "how": command, "reason": (obs.bandwidth or {}).get("reason", "")},
            "mechanism": mechanism, "mtu": DEFAULT_MTU, "tool": "iperf3 -R -J (harness.iperf)",
            "duration_s": duration_s, "interval_s": interval_s,
            "limited": [limited[k] for k in sorted(limited)],
            "unlimited": [unlimited[k] for k in sorted(unlimited)],
            "apply_delay_s": apply_delay}


def calibrate(limits: list[str], repeats: int, duration_s: float, seed: int = 1, log=print) -> dict:
    from harness.inputs import load_run_inputs
    from harness.real import RealBackend
    command = "python -m harness.calibrate " + " ".join(shlex.quote(a) for a in (
        "--limits", ",".join(limits), "--repeats", str(repeats), "--duration", f"{duration_s:g}", "--seed", str(seed)))
    with tempfile.TemporaryDirectory(prefix="twin-calibrate-") as d:
        scen, runs = _write(Path(d), limits, repeats, duration_s, seed)
        inputs = load_run_inputs(str(scen))
        log(f"calibrate: {sum(1 for r in runs if r['kind'] != 'apply')} iperf3 runs of {duration_s:g} s "
            f"and {sum(1 for r in runs if r['kind'] == 'apply')} annotation changes on the real datapath")
        obs = RealBackend().run(inputs, seed)
    prof = profile_from(obs, runs, duration_s, command)
    for p in prof["limited"]:
        good = p["goodput_bps"]
        log(f"  {p['limit_bps'] / 1e6:g} Mbit/s x{p['parallel']}: goodput "
            + ", ".join(f"{g / 1e6:.3f}" for g in good) + " Mbit/s")
    for p in prof["unlimited"]:
        log(f"  unlimited {p['path']}: " + ", ".join(f"{g / 1e9:.2f}" for g in p["goodput_bps"]) + " Gbit/s")
    log(f"  apply delay: {prof['apply_delay_s']}")
    return prof


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--limits", default=",".join(DEFAULT_LIMITS), help="comma-separated egress limits")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per iperf3 run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(BANDWIDTH_PROFILE))
    args = ap.parse_args(argv)
    limits = [x.strip() for x in args.limits.split(",") if x.strip()]
    try:
        for lim in limits:
            if parse_quantity(lim) < 8_000:
                raise ValueError(f"--limits: {lim!r} is below 8 kbit/s: nothing to calibrate")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.repeats <= 100 or not 1 <= args.duration <= 60:
        print("error: --repeats must be 1-100 and --duration 1-60 s", file=sys.stderr)
        return 2
    from harness.real import RealBackend
    reason = RealBackend().unavailable_reason()
    if reason:
        print(f"error: the real datapath cannot run here: {reason}", file=sys.stderr)
        return 3
    try:
        prof = calibrate(limits, args.repeats, args.duration, args.seed)
    except InputError as exc:
        for f in exc.findings:
            print(f, file=sys.stderr)
        return 2
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(prof, indent=1) + "\n")
    load_bandwidth_profile(out)  # what was written reads back
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
