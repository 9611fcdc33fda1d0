"""Reading manifests, values and scenarios from disk into model sources (the I/O boundary).

Every failure to read a file is an :class:`InputError` naming the file and
why (no such file, permission denied, a symlink loop, not UTF-8, larger
than :data:`~twin.model.limits.MAX_FILE_BYTES`), never a traceback.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from twin.model import limits
from twin.model.load import build_cluster, parse_policy_source
from twin.model.findings import Finding, InputError, error
from twin.model.objects import Cluster
from twin.model.run import RunInputs
from twin.model.scenario import Scenario, parse_scenario
from twin.model.scenario_check import check_scenario
from twin.model.yamlsrc import Source
from twin.semantics.l2 import scenario_l2_state

YAML_SUFFIXES = (".yaml", ".yml", ".json")


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop)"
    if exc.errno == errno.EISDIR:
        return "is a directory, not a file"
    return exc.strerror or str(exc)


def _read(path: Path, what: str = "file") -> Source:
    """Read one file as UTF-8 text, or raise InputError saying why not."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limits.MAX_FILE_BYTES:
                raise InputError([error("<input>", "", f"{what} is {size} bytes, more than the limit of "
                                        f"{limits.MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)", name)])
            raw = fh.read(limits.MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError([error("<input>", "", f"cannot read {what} {name}: {_os_reason(exc)}", name)]) from None
    if len(raw) > limits.MAX_FILE_BYTES:  # a pipe or a file that grew while read
        raise InputError([error("<input>", "", f"{what} is more than the limit of {limits.MAX_FILE_BYTES} bytes "
                                "(MAX_FILE_BYTES)", name)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError([error("<input>", "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {col} "
                                "(YAML files must be UTF-8)", name, line)]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return Source(name, text)


def read_sources(paths: list[str]) -> list[Source]:
    """Files are read as given; directories contribute their YAML files, sorted."""
    out: list[Source] = []
    problems: list[Finding] = []
    for p in paths:
        path = Path(p)
        try:
            if path.is_dir():
                files = sorted(f for f in path.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file())
            else:
                files = [path]
        except OSError as exc:
            problems.append(error("<input>", "", f"cannot read {p}: {_os_reason(exc)}", p))
            continue
        for f in files:
            try:
                out.append(_read(f, "manifest file"))
            except InputError as exc:
                problems.extend(exc.findings)
    if problems:
        raise InputError(problems)
    return out


def read_source(path: str, what: str = "file") -> Source:
    return _read(Path(path), what)


def load_cluster(paths: list[str], values: str | None = None, strict_errors: bool = True) -> Cluster:
    return build_cluster(read_sources(paths), read_source(values, "values file") if values else None, strict_errors)


def rel(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.path.dirname(base), path))


def _step_error(scenario: Scenario, path: str, step_index: int, field: str, message: str,
                line: int | None) -> Finding:
    return error(f"Scenario {scenario.name}", f"steps[{step_index}].{field}", message, path, line)


def load_run_inputs(path: str) -> RunInputs:
    """Read a scenario and everything it names; check it against its cluster.

    Raises :class:`InputError` (exit 2) with every problem found: the
    scenario's own shape, its manifests and values, each ``apply`` step's
    policy file (the finding names the step and its line, then the policy
    file's own findings follow), and the scenario-vs-cluster checks of
    :func:`~twin.model.scenario_check.check_scenario`.
    """
    scenario = parse_scenario(read_source(path, "scenario file"))
    manifests = [rel(path, m) for m in scenario.manifests]
    values = rel(path, scenario.values) if scenario.values else None
    cluster = load_cluster(manifests, values)
    applies = {}
    problems: list[Finding] = []
    for step in scenario.steps:
        if step.kind != "apply":
            continue
        policy_file = rel(path, step.path)
        try:
            applies[step.index] = parse_policy_source(read_source(policy_file, "policy file"))
        except InputError as exc:
            problems.append(_step_error(scenario, path, step.index, "apply",
                                        f"{step.path}: cannot apply ({len(exc.findings)} problem(s) below)", step.line))
            problems.extend(exc.findings)
    problems.extend(f for f in check_scenario(scenario, cluster, scenario_l2_state) if f.severity.value == "error")
    if problems:
        raise InputError(problems)
    return RunInputs.plan(scenario, cluster, applies, path)
