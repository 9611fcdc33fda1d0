"""Parse YAML text into documents that remember where each value came from.

Pure: takes text that the caller has read.  Each document is returned as
plain Python data plus a map from field path to line number, so that
validation can name the line of a bad value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from twin.model.findings import Finding, error

Path = tuple  # tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    """A named text (a file the caller read, or an inline document)."""

    name: str
    text: str


@dataclass
class Document:
    data: Any
    file: str
    index: int  # position of the document in its file
    lines: dict = field(default_factory=dict)  # Path -> 1-based line

    def line(self, path: Path) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def _convert(node: yaml.Node, path: Path, lines: dict) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = _convert(k, path + ("<key>",), {})
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            out[key] = _convert(v, path + (key,), lines)
            lines[path + (key,)] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, path + (i,), lines) for i, v in enumerate(node.value)]
    # Scalars: let SafeLoader resolve the tag (int, bool, null, str ...).
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def parse_documents(source: Source) -> tuple[list[Document], list[Finding]]:
    """Split a multi-document YAML text; syntax errors become findings with a line."""
    docs: list[Document] = []
    try:
        nodes = list(yaml.compose_all(source.text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [error("<yaml>", "", f"YAML syntax error: {problem}", source.name, line)]
    findings: list[Finding] = []
    for i, node in enumerate(nodes):
        if node is None:
            continue
        lines: dict = {}
        try:
            data = _convert(node, (), lines)
        except yaml.YAMLError as exc:
            findings.append(error("<yaml>", "", f"YAML error: {exc}", source.name, node.start_mark.line + 1))
            continue
        if data is None:
            continue
        docs.append(Document(data, source.name, i, lines))
    return docs, findings
