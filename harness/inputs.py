"""Reading manifests and values from disk into model sources (the I/O boundary)."""
from __future__ import annotations

import os
from pathlib import Path

from twin.model.build import build_cluster
from twin.model.findings import InputError, error
from twin.model.objects import Cluster
from twin.model.run import RunInputs
from twin.model.yamlsrc import Source

YAML_SUFFIXES = (".yaml", ".yml", ".json")


def read_sources(paths: list[str]) -> list[Source]:
    """Files are read as given; directories contribute their YAML files, sorted."""
    out, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file())
            out.extend(Source(str(f), f.read_text()) for f in files)
        elif path.is_file():
            out.append(Source(str(path), path.read_text()))
        else:
            missing.append(error("<input>", "", f"no such file or directory: {p}", p))
    if missing:
        raise InputError(missing)
    return out


def read_source(path: str) -> Source:
    p = Path(path)
    if not p.is_file():
        raise InputError([error("<input>", "", f"no such file: {path}", path)])
    return Source(str(p), p.read_text())


def load_cluster(paths: list[str], values: str | None = None, strict_errors: bool = True) -> Cluster:
    return build_cluster(read_sources(paths), read_source(values) if values else None, strict_errors)


def rel(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.path.dirname(base), path))


def load_run_inputs(path: str) -> RunInputs:
    """A scenario file with its manifests, values and applied policies, planned
    into :class:`~twin.model.run.RunInputs`; probes must resolve against the
    cluster (pods and services never change along a run).  Bad input raises
    :class:`InputError` naming the scenario step."""
    from twin.model.build import parse_policy_source
    from twin.model.scenario import parse_scenario
    from twin.semantics.probe import resolve_targets
    from twin.semantics.view import ClusterView
    scenario = parse_scenario(read_source(path))
    values = rel(path, scenario.values) if scenario.values else None
    cluster = load_cluster([rel(path, m) for m in scenario.manifests], values)
    applies = {s.index: parse_policy_source(read_source(rel(path, s.path)))
               for s in scenario.steps if s.kind == "apply"}
    inputs = RunInputs.plan(scenario, cluster, applies, path)
    view = ClusterView(cluster)
    for step in scenario.steps:
        if step.kind == "probe":
            try:
                resolve_targets(view, step.probe)
            except InputError as exc:  # name the scenario step, not the bare probe
                raise InputError([error(f"Scenario {scenario.name}", f"steps[{step.index}].probe.{f.field}",
                                        f.message, path, step.line) for f in exc.findings]) from None
    return inputs
