"""Reading manifests and values from disk into model sources (the I/O boundary)."""
from __future__ import annotations

import os
from pathlib import Path

from twin.model.build import build_cluster
from twin.model.findings import InputError, error
from twin.model.objects import Cluster
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
