"""Helpers for the twin's L2 tests: small L2 scenarios written on the fly (the seed's
L2 section, the seed's Helm values with lease 3s/1s/200ms, one whoami backend on
the control-plane node so that a worker's failure takes no backend with it)."""
from __future__ import annotations

import json
from pathlib import Path

from harness.inputs import load_run_inputs
from twin.model.run import RunInputs
from twin.sim import TwinBackend

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "scenarios"
L2_MANIFESTS = [str(HERE / "webpod-cp.yaml"), str(ROOT / "examples/seed/l2.yaml")]
SEED_VALUES = str(ROOT / "examples/values/seed.yaml")
BLUE = {"label": {"object": "Service/default/svc1", "set": {"color": "blue"}}}
def loop(duration: str = "14s") -> dict:
    return {"loop": {"name": "ext", "from": "external", "to": "svc:default/svc1", "port": 80, "interval": "100ms",
                     "duration": duration}}


def write_scenario(tmp: Path, name: str, steps: list, settings: dict | None = None, manifests=None,
                   values: str | None = SEED_VALUES) -> Path:
    doc = {"scenario": name, "description": name, "manifests": manifests or L2_MANIFESTS,
           "settings": settings or {}, "steps": steps}
    if values:
        doc["values"] = values
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def load(path) -> RunInputs:
    return load_run_inputs(str(path))


def run(path, seed: int = 1, monte_carlo: int = 0):
    return TwinBackend(monte_carlo=monte_carlo).run(load(path), seed)


def failover_steps(kind: str, duration: str = "14s") -> list:
    return [BLUE, {"wait": "3s"}, loop(duration), {"wait": "3s"}, {"fault": {"kind": kind, "holder_of": "default/svc1"}},
            {"await": {"loop": "ext"}}, {"arping": {"name": "after", "service": "default/svc1", "count": 2}}]
