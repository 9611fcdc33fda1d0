"""Helpers shared by the pure tier: load manifests from text or the examples."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:  # makes tests/strategies.py importable as `strategies`
    sys.path.insert(0, str(TESTS))

from twin.model.build import build_cluster  # noqa: E402
from twin.model.findings import Finding, InputError  # noqa: E402
from twin.model.objects import Cluster  # noqa: E402
from twin.model.yamlsrc import Source  # noqa: E402
from twin.semantics.view import ClusterView  # noqa: E402

EXAMPLES = ROOT / "examples"
SEED_DIR = EXAMPLES / "seed"
POLICY_DIR = EXAMPLES / "policies"
SEED_VALUES = EXAMPLES / "values" / "seed.yaml"
L3L4 = POLICY_DIR / "sw_l3_l4_policy.yaml"
L7 = POLICY_DIR / "sw_l7_policy.yaml"
TWIN = ROOT / ".venv" / "bin" / "twin"


def file_source(path: Path) -> Source:
    return Source(str(path), Path(path).read_text())


def seed_sources(*extra: Path) -> list[Source]:
    return [file_source(p) for p in sorted(SEED_DIR.glob("*.yaml"))] + [file_source(p) for p in extra]


def seed_cluster(*extra: Path) -> Cluster:
    return build_cluster(seed_sources(*extra), file_source(SEED_VALUES))


def text(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def docs_text(*docs: dict) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def load(*texts: str, values: str | None = None, names: tuple[str, ...] = ()) -> Cluster:
    """Build a cluster from YAML texts (named t0.yaml, t1.yaml... unless names are given)."""
    sources = [Source(names[i] if i < len(names) else f"t{i}.yaml", t) for i, t in enumerate(texts)]
    vals = Source("values.yaml", values) if values is not None else None
    return build_cluster(sources, vals)


def view(*texts: str, values: str | None = None) -> ClusterView:
    return ClusterView(load(*texts, values=values))


def load_errors(*texts: str, values: str | None = None, names: tuple[str, ...] = ()) -> tuple[Finding, ...]:
    with pytest.raises(InputError) as exc:
        load(*texts, values=values, names=names)
    assert exc.value.findings, "InputError without findings"
    return exc.value.findings


def only_error(findings, field: str | None = None) -> Finding:
    """The single error finding (optionally the one at `field`)."""
    errs = [f for f in findings if f.severity.value == "error" and (field is None or f.field == field)]
    assert len(errs) == 1, f"expected one error at {field!r}, got: " + "\n".join(f.render() for f in findings)
    return errs[0]


def warnings_of(findings, obj_prefix: str = "", field: str | None = None) -> list[Finding]:
    return [f for f in findings if f.severity.value == "warning" and f.object.startswith(obj_prefix)
            and (field is None or f.field == field)]


def run_twin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TWIN), *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, timeout=60)


def pod(name: str, labels: dict | None = None, ns: str = "default", node: str | None = "k8s-w1",
        ports: list | None = None, annotations: dict | None = None, image: str = "twin/echo") -> dict:
    meta: dict = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    container: dict = {"name": "c", "image": image}
    if ports:
        container["ports"] = ports
    spec: dict = {"containers": [container]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def cnp(name: str, spec: dict | None = None, ns: str = "default", specs: list | None = None) -> dict:
    d: dict = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": name, "namespace": ns}}
    if spec is not None:
        d["spec"] = spec
    if specs is not None:
        d["specs"] = specs
    return d


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
