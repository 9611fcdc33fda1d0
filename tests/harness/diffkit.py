"""Shared machinery of the differential tier (not a test module).

* :data:`SEED` - the seed of this run's generated cases.  ``tests/conftest.py``
  picks it (``HYPOTHESIS_SEED`` from the environment, else a fresh one) and
  prints it in the header and the summary; ``HYPOTHESIS_SEED=N make test``
  replays a run.
* :data:`SCALE` - 1 in CI, 10 with ``SOAK=1`` (``make soak``).
* :func:`diff_settings` - Hypothesis settings of a differential test: this
  run's seed, no deadline, the local example database (``.hypothesis/``,
  which replays a failure found on this machine first).
* :class:`Probers` - one long-lived prober process per pod, started in the
  pod's namespace (and cgroup) through the topology; it runs the harness's
  own prober (``harness.tools``: real sockets, one shared timeout) for each
  batch of targets, so a batch costs no process start-up.
* :class:`Stats` - cases, probes, drops, wall time; ``line()`` is what the
  summary prints.
* :func:`lane_namespaces` - rename the namespaces of generated manifests so
  that several independent cases share one topology (see the tests).
* :func:`regressions` - the committed regression cases (``tests/regressions/``),
  replayed by every run as ``@example``s.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, seed, settings

from harness import tools

NS_LABEL = "io.kubernetes.pod.namespace"
REGRESSIONS = Path(__file__).resolve().parents[1] / "regressions"


def _seed() -> int:
    raw = os.environ.get("HYPOTHESIS_SEED", "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(f"HYPOTHESIS_SEED={raw!r}: must be an integer") from None
    # conftest.py sets HYPOTHESIS_SEED before any test module is imported; this is
    # only reached when the module is imported outside pytest
    return int.from_bytes(os.urandom(4), "big")


SEED = _seed()
SOAK = os.environ.get("SOAK", "") not in ("", "0")
SCALE = 10 if SOAK else 1


def diff_settings(examples: int, **kw):
    """``@settings`` + ``@seed`` for a differential test running ``examples`` × SCALE examples."""
    s = settings(max_examples=examples * SCALE, deadline=None, derandomize=False,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large, HealthCheck.filter_too_much],
                 **kw)

    def deco(fn):
        return seed(SEED)(s(fn))
    return deco


def seeded(machine):
    """A state machine class that runs with this run's seed."""
    return seed(SEED)(machine)


def machine_settings(examples: int, steps: int):
    return settings(max_examples=examples * SCALE, stateful_step_count=steps, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def verdict_of(row: dict) -> str:
    """A tool's outcome as a verdict: a reply or a refusal got through, silence is a drop."""
    if row["outcome"] in ("answered", "refused"):
        return "FORWARDED"
    if row["outcome"] == "timeout":
        return "DROPPED"
    return f"ERROR({row.get('detail')})"


# Runs in the pod: reads one prober spec (JSON) per line, runs harness.tools' prober on it,
# writes its JSON answer as one line.  The prober's code is passed as argv[1].
_LOOP = r'''
import json, sys
code = compile(sys.argv[1], "<harness.tools prober>", "exec")
for line in sys.stdin:
    sys.argv = ["prober", line]
    try:
        exec(code, {"__name__": "__prober__"})
    except BaseException as exc:
        print(json.dumps({"error": repr(exc)}))
    sys.stdout.flush()
'''


class Probers:
    """One prober process per pod, fed batches of targets; falls back to
    :func:`harness.tools.probe_many` (a process per batch) if the harness's
    prober code is not importable as text."""

    def __init__(self, topo, pods):
        self.topo = topo
        self.procs: dict[str, object] = {}
        self.locks: dict[str, threading.Lock] = {}
        code = getattr(tools, "_PROBER", None)
        self.persistent = isinstance(code, str)
        for pod in pods:
            self.locks[pod] = threading.Lock()
            if self.persistent:
                self.procs[pod] = topo.popen(pod, [sys.executable, "-u", "-c", _LOOP, code],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, len(self.locks)))

    def close(self) -> None:
        self.pool.shutdown()
        for proc in self.procs.values():
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:  # the topology kills what is left
                pass

    def probe(self, pod: str, targets: list, timeout: float) -> list[dict]:
        """``targets`` (dicts or (proto, ip, port)) from ``pod``; rows in target order."""
        if not targets:
            return []
        if not self.persistent:
            return tools.probe_many(self.topo, pod, targets, timeout)
        norm = [tools._norm(t) for t in targets]
        with self.locks[pod]:
            proc = self.procs[pod]
            proc.stdin.write(json.dumps({"timeout": timeout, "targets": norm}) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], timeout + 20)
            line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the prober in {pod} did not answer (exit code {proc.poll()})")
        rows = json.loads(line)
        if isinstance(rows, dict):
            raise RuntimeError(f"the prober in {pod} failed: {rows.get('error')}")
        return [{**r, "proto": t["proto"], "ip": t["ip"], "port": t["port"]} for t, r in zip(norm, rows)]

    def start_all(self, batches: dict[str, list], timeout: float) -> dict[str, concurrent.futures.Future]:
        """Every pod's batch at once (threads; each batch is one prober run in its pod);
        the caller computes the twin's side meanwhile and collects with :func:`results`."""
        return {pod: self.pool.submit(self.probe, pod, ts, timeout) for pod, ts in batches.items() if ts}

    def probe_all(self, batches: dict[str, list], timeout: float) -> dict[str, list[dict]]:
        return results(self.start_all(batches, timeout))


def results(futures: dict) -> dict:
    return {k: f.result() for k, f in futures.items()}


def twin_answering(cluster, view, client: str, fe, kind: str) -> set[str]:
    """Names of the frontend's active backends that answer ``client`` in the twin:
    the policy forwards the flow and the backend's app serves the port."""
    from twin.model import apps
    from twin.model.scenario import Probe
    from twin.semantics.probe import ProbeTarget, predict
    ok = set()
    for b in fe.active:
        pod = cluster.pod(b.pod)
        pred = predict(view, Probe("d", client, b.pod, kind, b.port), ProbeTarget(b.pod, b.ip, pod, b.port))
        app = apps.app_of_pod(pod)
        if pred.verdict == "FORWARDED" and b.port in (app.tcp_ports if kind == "tcp" else app.udp_ports):
            ok.add(b.pod.split("/")[1])
    return ok


def stats_fixture(name: str):
    """A module-scoped fixture giving a :class:`Stats` whose line joins the run's summary."""
    import pytest

    @pytest.fixture(scope="module")
    def stats(differential_log):
        s = Stats(name)
        yield s
        differential_log.append(s.line())
        print("\n" + s.line())
    return stats


class Stats:
    """What one differential test reached; ``line()`` goes to the run's summary."""

    def __init__(self, name: str):
        self.name, self.cases, self.probes, self.drops, self.steps = name, 0, 0, 0, 0
        self.t0 = time.monotonic()

    def line(self) -> str:
        extra = f", {self.steps} steps" if self.steps else ""
        return (f"differential {self.name}: {self.cases} cases{extra}, {self.probes} probes, {self.drops} drops, "
                f"seed {SEED}{' (soak)' if SOAK else ''}, {time.monotonic() - self.t0:.1f} s")


def rename_namespaces(obj, mapping: dict[str, str]):
    """A copy of a manifest with namespace names replaced: ``metadata.namespace`` and the
    values of namespace-label selectors (``[k8s:]io.kubernetes.pod.namespace``)."""
    if isinstance(obj, list):
        return [rename_namespaces(x, mapping) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k == "namespace" and isinstance(v, str):
            out[k] = mapping.get(v, v)
        elif isinstance(k, str) and k.endswith(NS_LABEL) and isinstance(v, str):
            out[k] = mapping.get(v, v)  # a matchLabels entry
        elif k == "values" and isinstance(obj.get("key"), str) and obj["key"].endswith(NS_LABEL):
            out[k] = [mapping.get(x, x) for x in v]  # a matchExpressions entry
        else:
            out[k] = rename_namespaces(v, mapping)
    return out


def regressions(name: str) -> list:
    """The cases of ``tests/regressions/<name>.yaml`` (a YAML list; each item one case)."""
    path = REGRESSIONS / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of cases")
    return data


def events_by_flow(rc) -> dict[tuple, list[str]]:
    """The BPF flow events since the last drain, as text, keyed by (src ip, dst ip, proto, dport)."""
    out: dict[tuple, list[str]] = {}
    try:
        evs = rc.events(50)
    except Exception as exc:  # diagnostics only
        return {("error",): [f"could not read BPF events: {exc}"]}
    for node, e in evs:
        try:
            key = (str(e.src_ip), str(e.dst_ip), int(e.protocol), int(e.dst_port))
            txt = (f"bpf@{node}: {e.direction.name.lower()} {e.verdict.value}"
                   + (f" reason {e.drop_reason}" if e.drop_reason else "")
                   + (" (reply)" if e.is_reply else "") + f" rule_ref {getattr(e, 'rule_ref', '?')}")
        except Exception:
            continue
        out.setdefault(key, []).append(txt)
    return out


def flush_conntrack(rc) -> None:
    """New probes must meet the current policy, not an entry a previous case left."""
    for dp in getattr(rc, "datapaths", {}).values():
        dp.flush_conntrack()
