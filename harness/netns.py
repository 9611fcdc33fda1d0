"""Running Python code inside a network namespace, in the current thread.

The mechanism (setns(2) on the calling thread, restoring the original
namespace in ``finally``) lives once, in :mod:`datapath.attach`; this module
re-exports it for harness code and adds a call-style helper.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from datapath.attach import NetnsRef, entered_netns, netns_path, open_iproute

__all__ = ["NetnsRef", "entered_netns", "netns_path", "open_iproute", "run_in_netns"]

T = TypeVar("T")


def run_in_netns(netns: NetnsRef, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` with this thread inside ``netns``.

    ``netns`` is a path usable by setns(2) (``/proc/PID/ns/net``,
    ``/run/netns/NAME``) or a bare name under ``/run/netns``.  Only the
    calling thread moves; it is back in its original namespace afterwards,
    also when ``fn`` raises.  Sockets created inside stay bound to ``netns``.
    """
    with entered_netns(netns):
        return fn(*args, **kwargs)
