"""Fuzz every input path of `twin` with mutated valid inputs.

Hypothesis takes a valid manifest (examples/seed, examples/services), values
file (examples/values) or scenario (scenarios/), mutates it — wrong types,
missing keys, extra keys, unicode, deep nesting, huge and negative numbers,
aliases, bytes that are not UTF-8 — writes it to a file and runs the CLI
in-process (`validate`, `show --json`; `run --backend twin` for scenarios).
Every outcome must be exit 0, 1 or 2 with no traceback.

A crashing input is printed by Hypothesis and saved (after shrinking) to
``tests/pure/corpus/found-<hash>.<kind>.yaml``, where
``test_input_corpus.py`` replays it from then on.
"""
from __future__ import annotations

import collections
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clirun import commands, run_cli

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFESTS = sorted((ROOT / "examples" / "seed").glob("*.yaml")) + sorted((ROOT / "examples" / "services").glob("*.yaml")) \
    + sorted((ROOT / "examples" / "policies").glob("*.yaml"))
VALUES = sorted((ROOT / "examples" / "values").glob("*.yaml"))
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))

# Values that tend to break loaders: wrong types, huge and negative numbers,
# unicode, empty things.  (No mid-sized counts: a valid 50,000-request run is
# slow, not wrong.)
ODD_SCALARS = st.sampled_from([
    None, True, False, 0, -1, -(2 ** 63), 2 ** 64, 10 ** 30, 1e308, float("inf"), 3.5, "", " ", "0", "-1",
    "1e44h", "99999999999999999999999h", "é", "日本語", "\u202e", "\x00", "\ud7ff", "svc:", "svc:default/", "/", "a/b/c",
    "default/ghost", "svc:default/ghost", "0.0.0.0/0", "256.1.1.1", "NaN", "null", "~", "{", "*", "&a", "!!int x",
])
# ...and values of the right type at the edges, which get past the schema checks
EDGE_SCALARS = st.one_of(st.integers(-3, 3), st.integers(65530, 65540), st.text(max_size=12),
                         st.sampled_from(["TCP", "UDP", "SCTP", "ICMP", "ANY", "tcp", "In", "Exists", "http", "udp",
                                          "ping", "0s", "1ms", "10m", "svc:default/svc", "default/webpod1",
                                          "kubernetes.io/hostname", "10.10.0.1", "172.16.1.0/24", "Local"]))
ODD_SCALARS = st.one_of(ODD_SCALARS, EDGE_SCALARS)
ODD_VALUES = st.recursive(ODD_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
KEYS = st.one_of(st.sampled_from(["metadata", "spec", "name", "ports", "port", "matchExpressions", "key", "count",
                                  "kind", "apiVersion", "steps", "selector", "replicas", "enabled", "to", "from"]),
                 st.text(max_size=8))


def _paths(data, path=()):
    """Every path to a value inside nested dicts/lists (the root included)."""
    yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, path + (i,))


def _get(data, path):
    for p in path:
        data = data[p]
    return data


@st.composite
def mutated_docs(draw, docs: list):
    """A structural mutation of one document of a multi-document file."""
    docs = yaml.safe_load(yaml.safe_dump(docs))  # deep copy
    if not docs:
        return docs
    di = draw(st.integers(0, len(docs) - 1))
    paths = list(_paths(docs[di]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "extra", "nest", "wrap"]))
        parent = _get(docs[di], path[:-1]) if path else None
        if op == "replace":
            if path:
                parent[path[-1]] = draw(ODD_VALUES)
            else:
                docs[di] = draw(ODD_VALUES)
        elif op == "delete" and path and isinstance(parent, (dict, list)):
            del parent[path[-1]]
        elif op == "extra":
            target = _get(docs[di], path)
            if isinstance(target, dict):
                target[draw(KEYS)] = draw(ODD_VALUES)
            elif isinstance(target, list):
                target.append(draw(ODD_VALUES))
        elif op == "nest" and path:
            depth = draw(st.sampled_from([2, 10, 70, 250]))
            v = parent[path[-1]]
            for _ in range(depth):
                v = [v]
            parent[path[-1]] = v
            break  # nest once: the dump of the mutated data recurses per level too
        elif op == "wrap" and path:
            parent[path[-1]] = [parent[path[-1]]] if draw(st.booleans()) else {"x": parent[path[-1]]}
        paths = list(_paths(docs[di]))
    return docs


@st.composite
def mutated_file(draw, path: Path) -> bytes:
    """A mutated copy of a YAML file: structural, or at the text/byte level."""
    raw = path.read_bytes()
    how = draw(st.sampled_from(["docs", "docs", "docs", "bytes", "alias", "truncate", "dupkey"]))
    if how == "docs":
        docs = list(yaml.safe_load_all(raw))
        return yaml.safe_dump_all(draw(mutated_docs(docs)), sort_keys=False, allow_unicode=True).encode()
    if how == "bytes":
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\t", b"\x07", b"\xef\xbb\xbf", "é".encode("latin-1")]))
        return raw[:at] + junk + raw[at:]
    if how == "alias":
        bomb = "".join(f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]\n" for i in range(1, 10))
        return b"x0: &x0 [lol, lol]\n" + bomb.encode() + raw
    if how == "dupkey":
        lines = raw.split(b"\n")
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        return b"\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])
    return raw[:draw(st.integers(0, len(raw)))]


def _absolute_paths(scenario: Path) -> Path:
    """Scenario text with its manifest/values paths made absolute, so a copy runs anywhere."""
    data = yaml.safe_load(scenario.read_text())
    base = scenario.parent
    data["manifests"] = [str((base / m).resolve()) for m in data["manifests"]]
    if data.get("values"):
        data["values"] = str((base / data["values"]).resolve())
    return data


class _Keeper:
    """Remembers the last crashing input (Hypothesis replays the shrunk one last)."""

    def __init__(self):
        self.last: tuple[bytes, str] | None = None

    def save(self) -> Path | None:
        if self.last is None:
            return None
        raw, kind = self.last
        if kind == "scenario":  # keep it runnable from the corpus directory
            raw = raw.replace(str(ROOT).encode() + b"/", b"../../../")
        out = CORPUS / f"found-{hashlib.sha256(raw).hexdigest()[:10]}.{kind}.yaml"
        out.write_bytes(raw)
        return out


@pytest.fixture
def keeper():
    k = _Keeper()
    yield k
    saved = k.save()
    if saved is not None:
        print(f"crashing input saved to {saved}")


def _check(raw: bytes, kind: str, keeper: _Keeper) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"input.{kind}.yaml"
        f.write_bytes(raw)
        for argv in commands(f, kind, Path(d) / "out"):
            o = run_cli(argv)
            SEEN[(kind, argv[0], o.code)] += 1
            if not o.clean():
                keeper.last = (raw, kind)
                pytest.fail(f"twin {' '.join(argv)} -> exit {o.code}\n{o.crash or o.text[-3000:]}")


#: outcomes seen, by (kind, exit code); printed with ``-s`` to see that the fuzz reaches past the parser
SEEN: collections.Counter = collections.Counter()

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])


@FUZZ
@given(data=st.data())
def test_mutated_manifests_never_crash_the_cli(data, keeper):
    path = data.draw(st.sampled_from(MANIFESTS))
    _check(data.draw(mutated_file(path)), "manifest", keeper)


@FUZZ
@given(data=st.data())
def test_mutated_values_never_crash_the_cli(data, keeper):
    path = data.draw(st.sampled_from(VALUES))
    _check(data.draw(mutated_file(path)), "values", keeper)


@FUZZ
@given(data=st.data())
def test_mutated_scenarios_never_crash_the_cli(data, keeper):
    path = data.draw(st.sampled_from(SCENARIOS))
    scen = _absolute_paths(path)
    if data.draw(st.booleans()):
        mutated = data.draw(mutated_docs([scen]))
        raw = yaml.safe_dump_all(mutated, sort_keys=False, allow_unicode=True).encode()
    else:
        base = yaml.safe_dump(scen, sort_keys=False).encode()
        tmp = Path(tempfile.mkdtemp()) / "s.yaml"
        tmp.write_bytes(base)
        raw = data.draw(mutated_file(tmp))
    _check(raw, "scenario", keeper)


def teardown_module(module):
    if SEEN:
        print("\nfuzz outcomes:", dict(sorted(SEEN.items(), key=str)))


# ------------------------------------------------------------------ L2 scenarios and values
#: an L2 scenario with every L2 step kind and setting (label, arping, fault, loop from
#: the external host, settings.external).  Until the backends run these steps, the
#: fuzz drives everything before a backend: the scenario parser, the checks against
#: the cluster and the plan of label steps (`load_run_inputs`); the L2 scenarios in
#: scenarios/ are run by the CLI fuzz above once they exist.
L2_SCENARIO = {
    "scenario": "fuzz-l2",
    "manifests": [str(p) for p in sorted((ROOT / "examples" / "seed").glob("*.yaml"))],
    "values": str(ROOT / "examples" / "values" / "seed.yaml"),
    "settings": {"external": {"arp_accept": True, "garp": "honour", "base_reachable_time": "30s"},
                 "api_backup_path": True, "repeats": 3, "request_timeout": "500ms"},
    "steps": [
        {"arping": {"name": "before", "service": "default/svc1", "expect": "none", "count": 2}},
        {"label": {"object": "Service/default/svc1", "set": {"color": "blue"}}},
        {"label": {"object": "Node/k8s-w2", "set": {"zone": "b"}, "remove": ["zone"]}},
        {"wait": "4s"},
        {"arping": {"name": "after", "ip": "10.10.200.1", "expect": "holder"}},
        {"loop": {"name": "l", "from": "external", "to": "svc:default/svc1", "port": 80, "interval": "100ms",
                  "duration": "8s"}},
        {"fault": {"kind": "partition", "holder_of": "default/svc1"}},
        {"wait": "5s"},
        {"fault": {"kind": "heal", "node": "k8s-w1"}},
        {"fault": {"kind": "nic-down", "node": "k8s-w2"}},
        {"await": {"loop": "l"}},
        {"requests": {"name": "r", "from": "external", "to": "svc:default/svc1", "port": 80, "count": 3}},
    ],
}
L2_VALUES = """\
l2announcements:
  enabled: true
  leaseDuration: 3s
  leaseRenewDeadline: 1s
  leaseRetryPeriod: 200ms
externalIPs:
  enabled: true
k8sClientRateLimit:
  qps: 2.5
  burst: 4
"""


def _load_clean(raw: bytes, keeper: _Keeper) -> None:
    """`load_run_inputs` on the scenario: an InputError (exit 2) or inputs, never another exception."""
    import traceback

    from harness.inputs import load_run_inputs
    from twin.model.findings import InputError
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "input.scenario.yaml"
        f.write_bytes(raw)
        try:
            load_run_inputs(str(f))
            SEEN[("l2-scenario", "load", 0)] += 1
        except InputError:
            SEEN[("l2-scenario", "load", 2)] += 1
        except Exception:  # noqa: BLE001 - the point is to catch everything
            keeper.last = (raw, "scenario")
            pytest.fail(f"load_run_inputs crashed:\n{traceback.format_exc()}")


def test_the_l2_fuzz_scenario_loads_cleanly():
    """The base of the L2 fuzz is itself valid (so mutations start from a scenario that loads)."""
    from harness.inputs import load_run_inputs
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "s.yaml"
        f.write_text(yaml.safe_dump(L2_SCENARIO, sort_keys=False))
        inputs = load_run_inputs(str(f))
    assert {s.kind for s in inputs.scenario.steps} >= {"label", "arping", "fault", "loop", "requests"}


@FUZZ
@given(data=st.data())
def test_mutated_l2_scenarios_never_crash_the_loader(data, keeper):
    if data.draw(st.booleans()):
        raw = yaml.safe_dump_all(data.draw(mutated_docs([L2_SCENARIO])), sort_keys=False, allow_unicode=True).encode()
    else:
        tmp = Path(tempfile.mkdtemp()) / "s.yaml"
        tmp.write_text(yaml.safe_dump(L2_SCENARIO, sort_keys=False))
        raw = data.draw(mutated_file(tmp))
    _load_clean(raw, keeper)


@FUZZ
@given(data=st.data())
def test_mutated_l2_values_never_crash_the_cli(data, keeper):
    tmp = Path(tempfile.mkdtemp()) / "v.yaml"
    tmp.write_text(L2_VALUES)
    _check(data.draw(mutated_file(tmp)), "values", keeper)
