"""Compile and load ``bpf/bpf_lxc.c`` with bcc: one :class:`NodeProgram` per node.

BPF programs and maps are not namespaced; a node is isolated by having its
own object (its own maps), attached only to that node's lxc devices.

bcc rewrites map syntax (``m.lookup(&k)``) only in its main file, so the
loader inlines our own quoted ``#include "lib/…"`` headers into one text,
with ``#line`` markers so compiler errors still name the real file and line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from datapath.constants import bpf_cflags
from datapath.errors import BpfCompileError

__all__ = [
    "BPF_DIR", "LXC_SOURCE", "KERNEL_SOURCE_ENV", "bpf_cflags", "bundle_source", "NodeProgram",
]

BPF_DIR = Path(__file__).resolve().parent / "bpf"
LXC_SOURCE = BPF_DIR / "bpf_lxc.c"
KERNEL_SOURCE_ENV = "BCC_KERNEL_SOURCE"

#: Entry points of bpf_lxc.c: (function name, hook).
FROM_CONTAINER = "from_container"
TO_CONTAINER = "to_container"


_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def bundle_source(path: Path = LXC_SOURCE, *, search_dir: Path = BPF_DIR) -> str:
    """``path`` with its quoted includes inlined once each, ``#line``-annotated."""
    seen: set[Path] = set()

    def expand(file: Path) -> list[str]:
        file = file.resolve()
        if file in seen:
            return []
        seen.add(file)
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise BpfCompileError(f"cannot read BPF source {file}: {exc}") from exc
        out = [f'#line 1 "{file}"']
        for lineno, line in enumerate(lines, start=1):
            m = _QUOTED_INCLUDE.match(line)
            if m is None:
                out.append(line)
                continue
            target = file.parent / m.group(1)
            if not target.exists():
                target = search_dir / m.group(1)
            if not target.exists():
                raise BpfCompileError(
                    f"{file}:{lineno}: included file {m.group(1)!r} not found "
                    f"next to it or in {search_dir}"
                )
            out.extend(expand(target))
            out.append(f'#line {lineno + 1} "{file}"')
        return out

    return "\n".join(expand(path)) + "\n"


def _check_kernel_source() -> str:
    path = os.environ.get(KERNEL_SOURCE_ENV)
    if not path:
        raise BpfCompileError(
            f"environment variable {KERNEL_SOURCE_ENV} is not set; bcc needs kernel "
            f"headers: set {KERNEL_SOURCE_ENV} to a merged header tree "
            "(`make setup` builds .build/kernel-headers and the Makefile exports it)"
        )
    if not Path(path, "include").is_dir():
        raise BpfCompileError(
            f"{KERNEL_SOURCE_ENV}={path} has no include/ directory; point it at a "
            "kernel header tree (the -common tree merged with the -amd64 tree)"
        )
    return path


def _import_bcc() -> Any:
    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise BpfCompileError(
            "python module bcc is not importable: install python3-bpfcc and run "
            "with /usr/bin/python3 or a venv made with --system-site-packages"
        ) from exc
    return bcc


class NodeProgram:
    """One compiled bpf_lxc object: its two tc programs and its maps."""

    def __init__(self, extra_cflags: Sequence[str] = ()) -> None:
        kernel_source = _check_kernel_source()
        bcc = _import_bcc()
        cflags = [f"-I{BPF_DIR}", *bpf_cflags(), *extra_cflags]
        try:
            self._bpf = bcc.BPF(text=bundle_source().encode(), cflags=cflags)
            self.from_container = self._bpf.load_func(FROM_CONTAINER.encode(), bcc.BPF.SCHED_CLS)
            self.to_container = self._bpf.load_func(TO_CONTAINER.encode(), bcc.BPF.SCHED_CLS)
        except Exception as exc:
            raise BpfCompileError(
                f"bcc could not compile/load {LXC_SOURCE} "
                f"({KERNEL_SOURCE_ENV}={kernel_source}): {exc}; the compiler or "
                "verifier output is printed above on stderr"
            ) from exc
        self._closed = False

    @property
    def bpf(self) -> Any:
        """The underlying ``bcc.BPF`` object."""
        return self._bpf

    def table(self, name: str) -> Any:
        """The bcc table named ``name`` (endpoints, ipcache, policy, conntrack, events)."""
        return self._bpf[name.encode()]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free programs and maps (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._bpf.cleanup()

    def __enter__(self) -> "NodeProgram":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
