"""`twin`: the command-line contract (scripts and CI depend on it; keep it stable).

  twin validate PATH... [--values F] [--strict]
  twin show PATH... [--values F] --json
  twin verdict PATH... --from NS/POD --to NS/POD|svc:NS/NAME --port N [--protocol P] [--method M --path P] --json
  twin truth-table PATH... [--port N]... [--protocol P] [--json|--csv]
  twin run SCENARIO [--backend twin|real|both] [--out DIR] [--seed N]
  twin demo [--out DIR]
  twin cleanup

Exit codes: 0 ok; 1 disagreement, failed expectation or (validate --strict) warnings; 2 bad input.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from twin.model.enums import Protocol, Severity
from twin.model.findings import InputError, TwinError, error


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories")
    p.add_argument("--values", help="Helm values file (cluster settings)")


def _view(args):
    from harness.inputs import load_cluster
    from twin.semantics.view import ClusterView
    return ClusterView(load_cluster(args.paths, args.values))


def cmd_validate(args) -> int:
    from harness.inputs import load_cluster
    from twin.semantics.view import ClusterView
    try:
        cluster = load_cluster(args.paths, args.values)
    except InputError as exc:
        for f in exc.findings:
            print(f.render())
        print(f"{len(exc.findings)} error(s)", file=sys.stderr)
        return 2
    findings = ClusterView(cluster).all_findings()
    for f in findings:
        print(f.render())
    warnings = [f for f in findings if f.severity == Severity.WARNING]
    print(f"ok: {len(cluster.pods)} pods, {len(cluster.services)} services, {len(cluster.policies)} policies; "
          f"{len(warnings)} warning(s)", file=sys.stderr)
    return 1 if (args.strict and warnings) else 0


def cmd_show(args) -> int:
    data = _view(args).show()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for p in data["pods"]:
        bw = f" egress≤{p['egress_bandwidth_bps']} bit/s" if p["egress_bandwidth_bps"] else ""
        print(f"pod {p['namespace']}/{p['name']:30} {p['node']:8} {p['ip']:15} id={p['identity']}{bw}")
    for s in data["services"]:
        lb = f" lb={','.join(s['lb_ips'])}" if s["lb_ips"] else ""
        l2 = f" l2={','.join(s['l2']['candidate_nodes'])}" if s["l2"]["announced"] else ""
        print(f"svc {s['namespace']}/{s['name']:30} {s['type']:12} {s['cluster_ip']}{lb}{l2} → {len(s['backends'])} backend(s)")
    for f in data["findings"]:
        print(f"{f['severity']}: {f['object']} {f['field']}: {f['message']}")
    return 0


def cmd_verdict(args) -> int:
    from twin.model.scenario import Probe
    from twin.semantics.probe import predict, resolve_targets
    view = _view(args)
    kind = {"ICMP": "ping", "UDP": "udp"}.get(args.protocol, "http" if args.method or args.path else "tcp")
    if args.protocol in ("UDP", "SCTP") and (args.method or args.path):
        raise InputError([error("<cli>", "--method", "HTTP needs --protocol TCP")])
    src = args.src if "/" in args.src else f"default/{args.src}"
    probe = Probe("cli", src, args.dst, kind, args.port, args.method or "GET", args.path or "/")
    preds = [predict(view, probe, t) for t in resolve_targets(view, probe)]
    rows = [{"verdict": p.verdict, "layer": p.layer, "drop_reason": p.drop_reason, "http_status": p.http_status,
             "explanation": p.explanation, "destination": p.target.dst, "destination_ip": str(p.target.dst_ip),
             "port": p.target.port, "src_identity": p.src_identity, "dst_identity": p.dst_identity} for p in preds]
    if not rows:
        out = {"verdict": "DROPPED", "layer": "L3/L4", "drop_reason": "Service backend not found",
               "http_status": None, "explanation": f"{args.dst} has no backends: Cilium drops the connection attempt",
               "backends": []}
    elif len(rows) == 1 and not args.dst.startswith("svc:"):
        out = rows[0]
    else:
        out = {"verdict": "FORWARDED" if all(r["verdict"] == "FORWARDED" for r in rows) else "DROPPED",
               "layer": rows[0]["layer"], "drop_reason": next((r["drop_reason"] for r in rows if r["drop_reason"]), None),
               "http_status": next((r["http_status"] for r in rows if r["http_status"]), None),
               "explanation": "; ".join(f"{r['destination']}: {r['verdict']}" for r in rows) + " (per backend below)",
               "backends": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in rows or [out]:
            print(f"{r['verdict']:9} {src} → {r.get('destination', args.dst)}: {r['explanation']}")
    return 0


def cmd_truth_table(args) -> int:
    from twin.semantics.truth import truth_table
    view = _view(args)
    ports = args.port or [80]
    rows = truth_table(view, ports, args.protocol)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["src"])
        w.writeheader()
        w.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        for r in rows:
            print(f"{r['src']:40} → {r['dst']:40} {r['protocol']}/{r['port']:<5} {r['verdict']}")
    return 0


def cmd_run(args) -> int:
    from harness.runner import run_scenario_cli
    return run_scenario_cli(args.scenario, args.backend, args.out, args.seed)


def cmd_demo(args) -> int:
    from harness.runner import demo
    return demo(args.out)


def cmd_cleanup(args) -> int:
    from harness.cleanup import cleanup_leftovers
    for line in cleanup_leftovers():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="twin", description="Cilium digital twin with a real eBPF datapath")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("validate", help="validate manifests; exit 2 on errors")
    _add_inputs(p)
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("show", help="the cluster as the twin sees it")
    _add_inputs(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("verdict", help="policy verdict of one flow")
    _add_inputs(p)
    p.add_argument("--from", dest="src", required=True, metavar="NS/POD")
    p.add_argument("--to", dest="dst", required=True, metavar="NS/POD|svc:NS/NAME")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--protocol", default="TCP", choices=["TCP", "UDP", "SCTP", "ICMP"])
    p.add_argument("--method")
    p.add_argument("--path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_verdict)
    p = sub.add_parser("truth-table", help="verdicts for every pod pair")
    _add_inputs(p)
    p.add_argument("--port", type=int, action="append")
    p.add_argument("--protocol", default="TCP", choices=["TCP", "UDP", "SCTP", "ICMP"])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    p.set_defaults(fn=cmd_truth_table)
    p = sub.add_parser("run", help="run a scenario on the twin, the real datapath, or both")
    p.add_argument("scenario")
    p.add_argument("--backend", choices=["twin", "real", "both"], default="both")
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("demo", help="run the seed scenarios on both backends")
    p.add_argument("--out", default="results/demo")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("cleanup", help="remove kernel objects left by a crashed run")
    p.set_defaults(fn=cmd_cleanup)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except InputError as exc:
        for f in exc.findings:
            print(f.render(), file=sys.stderr)
        return 2
    except TwinError as exc:
        print(f"twin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from harness.cleanup import after_interrupt  # finishes teardown; says truthfully what is left
        print(after_interrupt(), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
