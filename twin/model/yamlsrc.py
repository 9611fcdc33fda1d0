"""Parse YAML text into documents that remember where each value came from.

Pure: takes text that the caller has read.  Each document is returned as
plain Python data plus a map from field path to line number, so that
validation can name the line of a bad value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from twin.model import limits
from twin.model.findings import Finding, error
from twin.model.schema import fmt_path

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


class _TooBig(Exception):
    """A document exceeds one of the limits in :mod:`twin.model.limits`."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


class _Converter:
    """Node graph → plain data, counting nodes, alias expansions and depth.

    PyYAML's composer keeps an alias as a second reference to its anchor's
    node; converting to plain data expands it.  Expansions are counted so an
    alias bomb ("billion laughs") stops at :data:`~twin.model.limits.MAX_ALIAS_EXPANSION`,
    and a recursive alias (``&a [*a]``) stops at the nesting limit.
    """

    def __init__(self, findings: list, file: str):
        self.findings = findings
        self.file = file
        self.nodes = 0
        self.expanded = 0
        self.seen: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, path: Path, lines: dict, depth: int = 0, aliased: bool = False) -> Any:
        line = node.start_mark.line + 1
        if depth > limits.MAX_NESTING_DEPTH:
            raise _TooBig(f"nesting deeper than {limits.MAX_NESTING_DEPTH} levels (limit MAX_NESTING_DEPTH)", line)
        self.nodes += 1
        if self.nodes > limits.MAX_YAML_NODES:
            raise _TooBig(f"more than {limits.MAX_YAML_NODES} YAML nodes (limit MAX_YAML_NODES)", line)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self.seen:
                aliased = True
            self.seen.add(id(node))
        if aliased:
            self.expanded += 1
            if self.expanded > limits.MAX_ALIAS_EXPANSION:
                raise _TooBig(f"aliases (*name) expand to more than {limits.MAX_ALIAS_EXPANSION} nodes "
                              "(limit MAX_ALIAS_EXPANSION; a \"billion laughs\" file?)", line)
        lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for k, v in node.value:
                key = self.convert(k, path + ("<key>",), {}, depth + 1, aliased)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    key = str(key)
                if key in out:
                    self.findings.append(error("<yaml>", fmt_path(path + (key,)),
                                               f"duplicate key {key!r} in a mapping (first at line {lines.get(path + (key,))}); "
                                               "the API server rejects it", self.file, k.start_mark.line + 1))
                    continue
                lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self.convert(v, path + (key,), lines, depth + 1, aliased)
                lines[path + (key,)] = k.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, path + (i,), lines, depth + 1, aliased) for i, v in enumerate(node.value)]
        # Scalars: let SafeLoader's constructor resolve the tag (int, bool, null, str ...).
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!int abc, a 5000-digit integer
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value[:40]!r} as {node.tag}: {exc}",
                                                    node.start_mark) from None


#: libyaml's parser when PyYAML was built with it (about 10x faster), else PyYAML's own
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _shape_ok(text: str, name: str) -> Finding | None:
    """Measure nesting and size on the event stream, before anything is built.

    PyYAML's composer recurses per level (a deep document would end in
    RecursionError) and holds every node in memory (a large flat one would
    take gigabytes), so both limits are checked on the stream of events.
    """
    depth = 0
    nodes = 0
    for ev in yaml.parse(text, Loader=_LOADER):
        if isinstance(ev, yaml.NodeEvent):
            nodes += 1
            if nodes > limits.MAX_YAML_NODES:
                return error("<yaml>", "", f"more than {limits.MAX_YAML_NODES} YAML nodes (limit MAX_YAML_NODES)",
                             name, ev.start_mark.line + 1)
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limits.MAX_NESTING_DEPTH:
                return error("<yaml>", "", f"nesting deeper than {limits.MAX_NESTING_DEPTH} levels "
                             "(limit MAX_NESTING_DEPTH)", name, ev.start_mark.line + 1)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def _yaml_error(exc: yaml.YAMLError, name: str, text: str = "") -> Finding:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.reader.ReaderError):  # a control character or bad encoding
        ch = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        problem = f"unacceptable character U+{ch:04X} (control characters are not allowed in YAML)"
        line = text.count("\n", 0, exc.position) + 1
    return error("<yaml>", "", f"YAML syntax error: {problem}", name, line)


def parse_documents(source: Source) -> tuple[list[Document], list[Finding]]:
    """Split a multi-document YAML text; syntax errors become findings with a line.

    Inputs beyond the limits of :mod:`twin.model.limits` (size, nesting, alias
    expansion) are refused with an error naming the limit.
    """
    docs: list[Document] = []
    if len(source.text) > limits.MAX_FILE_BYTES:
        return [], [error("<input>", "", f"{len(source.text)} characters is more than the limit of "
                          f"{limits.MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)", source.name)]
    try:
        bad = _shape_ok(source.text, source.name)
        if bad is not None:
            return [], [bad]
        nodes = list(yaml.compose_all(source.text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        return [], [_yaml_error(exc, source.name, source.text)]
    except RecursionError:
        return [], [error("<yaml>", "", f"nesting too deep (limit MAX_NESTING_DEPTH = {limits.MAX_NESTING_DEPTH})",
                          source.name)]
    findings: list[Finding] = []
    conv = _Converter(findings, source.name)
    for i, node in enumerate(nodes):
        if node is None:
            continue
        lines: dict = {}
        try:
            data = conv.convert(node, (), lines)
        except _TooBig as exc:
            findings.append(error("<yaml>", "", str(exc), source.name, exc.line))
            break
        except yaml.YAMLError as exc:
            findings.append(_yaml_error(exc, source.name) if getattr(exc, "problem_mark", None)
                            else error("<yaml>", "", f"YAML error: {exc}", source.name, node.start_mark.line + 1))
            continue
        if data is None:
            continue
        docs.append(Document(data, source.name, i, lines))
    return docs, findings
