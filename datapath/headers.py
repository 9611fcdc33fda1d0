"""Where bcc finds kernel headers on these machines.

Debian has no headers for the running 6.18 kernel; ``make setup`` merges the
installed ``linux-headers-*-common`` and ``-amd64`` trees into one tree (see
``merge_headers`` in ``scripts/setup.sh``).  bcc reads the tree's location from the
``BCC_KERNEL_SOURCE`` environment variable, which this module sets for the
process once a tree is found, so the CLI works without the Makefile.

Search order (the first that exists wins):

1. ``$BCC_KERNEL_SOURCE`` when set (an override: if it does not point to a
   header tree, that is the answer, not a fallback);
2. ``.build/kernel-headers`` next to the installed project (what ``make setup`` builds);
3. ``/var/cache/cilium-twin/kernel-headers`` (a shared cache: ``scripts/setup.sh``
   links it to the tree it built).
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "BCC_KERNEL_SOURCE"
PROJECT_TREE = Path(__file__).resolve().parent.parent / ".build" / "kernel-headers"
CACHE_TREE = Path("/var/cache/cilium-twin/kernel-headers")


def _is_tree(path: Path) -> bool:
    return (path / "include" / "linux").is_dir()


def find_kernel_headers() -> tuple[Path | None, str]:
    """(tree, how it was found) or (None, why none was found)."""
    env = os.environ.get(ENV)
    if env:
        p = Path(env)
        if _is_tree(p):
            return p, f"${ENV}"
        return None, f"${ENV}={env!r} is not a kernel-header tree (no include/linux in it)"
    for p, how in ((PROJECT_TREE, "the tree `make setup` built"), (CACHE_TREE, "the shared cache")):
        if _is_tree(p):
            return p, how
    return None, (f"no kernel-header tree for bcc: none at {PROJECT_TREE} or {CACHE_TREE} and ${ENV} is unset; "
                  "run `make setup` (as root) to build it")


def ensure_kernel_headers() -> tuple[Path | None, str]:
    """:func:`find_kernel_headers`, and export the tree found for bcc in this
    process (and its children)."""
    tree, how = find_kernel_headers()
    if tree is not None:
        os.environ[ENV] = str(tree)
    return tree, how
