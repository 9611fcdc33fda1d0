"""`twin`: the command-line contract (scripts and CI depend on it; keep it stable).

  twin validate PATH... [--values F] [--strict]
  twin show PATH... [--values F] --json
  twin verdict PATH... --from NS/POD --to NS/POD|svc:NS/NAME --port N [--protocol P] [--method M --path P] --json
  twin truth-table PATH... [--port N]... [--protocol P] [--json|--csv]
  twin run SCENARIO [--backend twin|real|both] [--out DIR] [--seed N]
  twin demo [--out DIR]
  twin cleanup

Exit codes (scripts and CI rely on them):
  0    ok
  1    backends disagree, an expectation failed, (validate --strict) warnings, or an operational
       failure (e.g. the datapath could not be built)
  2    bad input: manifests, values, scenario or command-line arguments (findings on stderr)
  3    a requested backend could not run here (`twin run --backend real|both` without root,
       bcc, kernel headers ...); the reason is on stderr and in result.json (`unavailable`)
  70   internal error (a bug in twin): one line on stderr, the traceback in a file it names
  130  interrupted (Ctrl-C)

This module is a thin adapter: it parses arguments, calls the semantics or the
runner, and prints; verdict aggregation lives in ``twin.semantics.verdict``,
text rendering in ``reports``.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
import time
import traceback

from twin.model.enums import Severity
from twin.model.findings import InputError, TwinError, error


#: a Kubernetes object name (RFC 1123 label or subdomain)
EXIT_INTERNAL = 70


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number 0..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {port}")
    return port


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


def _print(text: str) -> None:
    if text:
        print(text)


def cmd_show(args) -> int:
    from reports.cli_text import show_text
    data = _view(args).show()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print(show_text(data))
    return 0


CLI = "<command line>"


def _arg_error(field: str, message: str) -> InputError:
    return InputError([error("twin verdict", field, message, CLI)])


def _name_ok(name: str) -> bool:
    from twin.model.load.documents import DNS1123
    return bool(DNS1123.match(name))


def _pod_arg(field: str, value: str) -> str:
    """``POD`` (in ``default``) or ``NS/POD`` → ``NS/POD``; anything else is an argument error."""
    from twin.model.scenario import pod_key
    parts = pod_key(value).split("/")
    if len(parts) != 2 or not all(_name_ok(x) for x in parts):
        raise _arg_error(field, f"{value!r} is not NS/POD (or POD in namespace default)")
    return "/".join(parts)


def _dst_arg(value: str) -> str:
    from twin.model.scenario import service_key
    key = service_key(value)
    if key is not None:
        parts = key.split("/")
        if len(parts) != 2 or not all(_name_ok(x) for x in parts):
            raise _arg_error("--to", f"{value!r} is not svc:NS/NAME (or svc:NAME in namespace default)")
        return value
    if value == "external":
        return value
    try:
        ipaddress.IPv4Address(value)
        return value
    except ValueError:
        return _pod_arg("--to", value)


#: which command-line argument a probe field came from
_PROBE_ARGS = {"from": "--from", "to": "--to", "port": "--port", "kind": "--protocol"}


def _cli_probe(args):
    """The flow ``twin verdict`` asks about, checked against the cluster; every problem
    is an :class:`InputError` naming the argument."""
    from twin.model.scenario import Probe
    if args.protocol == "SCTP":
        raise _arg_error("--protocol", "SCTP flows are not supported by `twin verdict` (no SCTP probe exists; "
                                       "`twin truth-table --protocol SCTP` evaluates SCTP policy)")
    if args.protocol != "TCP" and (args.method or args.path):
        raise _arg_error("--method" if args.method else "--path", f"HTTP needs --protocol TCP, not {args.protocol}")
    src, dst = _pod_arg("--from", args.src), _dst_arg(args.dst)
    kind = {"ICMP": "ping", "UDP": "udp"}.get(args.protocol, "http" if args.method or args.path else "tcp")
    return Probe("cli", src, dst, kind, args.port, args.method or "GET", args.path or "/")


def cmd_verdict(args) -> int:
    from reports.cli_text import verdict_text
    from twin.semantics.verdict import flow_verdict
    probe = _cli_probe(args)
    view = _view(args)
    try:
        out, rows = flow_verdict(view, probe)
    except InputError as exc:  # name the argument, not the internal probe
        raise InputError([error("twin verdict", _PROBE_ARGS.get(f.field, f.field), f.message, CLI)
                          for f in exc.findings]) from None
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(verdict_text(probe.src, args.dst, out, rows))
    return 0


def cmd_truth_table(args) -> int:
    from reports.cli_text import truth_table_csv, truth_table_text
    from twin.semantics.truth import truth_table
    view = _view(args)
    ports = args.port or [80]
    rows = truth_table(view, ports, args.protocol)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        print(truth_table_csv(rows), end="")
    else:
        _print(truth_table_text(rows))
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
    p.add_argument("--port", type=_port, default=0)
    p.add_argument("--protocol", default="TCP", choices=["TCP", "UDP", "SCTP", "ICMP"])
    p.add_argument("--method")
    p.add_argument("--path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_verdict)
    p = sub.add_parser("truth-table", help="verdicts for every pod pair")
    _add_inputs(p)
    p.add_argument("--port", type=_port, action="append")
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


def _internal_error(args, exc: BaseException) -> int:
    """A bug, not bad input: one line on stderr, the traceback in a file (the run's out
    directory when it has one, else $TMPDIR)."""
    where = getattr(args, "out", None)
    try:
        if where:
            os.makedirs(where, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"twin-internal-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt",
                                    dir=where or None)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"twin {' '.join(sys.argv[1:])}\n\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        saved = f"the traceback is in {path}"
    except OSError as write_exc:
        saved = f"the traceback could not be saved ({write_exc})"
    print(f"twin: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"twin: this is a bug in twin, not in your input; {saved}; please report it with that file",
          file=sys.stderr)
    return EXIT_INTERNAL


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
    except BrokenPipeError:  # the reader closed the pipe (`twin truth-table ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a bare traceback
        return _internal_error(args, exc)


if __name__ == "__main__":
    sys.exit(main())
