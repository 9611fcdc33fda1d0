"""Errors raised by the harness (topology, cleanup, tools).

Hierarchy::

    TwinError                       (twin.model.findings: the project's root)
     └── HarnessError               an operational failure of the harness; `twin` prints it, exit 1
          ├── TopologyError         building, using or tearing down the real topology failed
          │    └── TeardownIncomplete  teardown left kernel objects behind (listed; `twin cleanup` removes them)
          └── ProbeError            a probe could not be run (bad target spec, tool missing)

Every message names the object concerned (a namespace, pod, cgroup, pid),
so the CLI can print it as is: an operational failure never shows a traceback.
"""
from __future__ import annotations

from twin.model.findings import TwinError

__all__ = ["HarnessError", "TopologyError", "TeardownIncomplete", "ProbeError"]


class HarnessError(TwinError):
    """Root of every error raised by ``harness``."""


class TopologyError(HarnessError):
    """Building or using the real topology failed; the message names the object."""


class TeardownIncomplete(TopologyError):
    """Teardown could not remove everything; ``left`` lists what is still there."""

    def __init__(self, message: str, left: list[str] | tuple[str, ...] = ()) -> None:
        self.left = tuple(left)
        super().__init__(message)


class ProbeError(HarnessError, ValueError):
    """A probe cannot be run as asked (e.g. an unknown protocol in a target spec)."""
