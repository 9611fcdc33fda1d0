"""Datapath-only numeric codes, and the ``-D`` flags shared with the BPF C.

Shared constants come from :mod:`twin.model.enums`; the few codes that only
the datapath uses live here, so the C never holds a literal number.
"""
from __future__ import annotations

import enum
import errno
import socket

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol, ReservedIdentity


class FlowVerdictCode(enum.IntEnum):
    """``flow_event.verdict`` values."""

    FORWARDED = 1
    DROPPED = 2


class BackendState(enum.IntEnum):
    """``lb4_backend.flags``: Cilium's backend states (``BE_STATE_*``)."""

    ACTIVE = 0  # selectable for new connections
    TERMINATING = 1  # kept for existing sockets, never chosen


class LBSlot(enum.IntEnum):
    """``lb4_key.backend_slot``: 0 is the master entry, backends are 1..count."""

    MASTER = 0
    FIRST_BACKEND = 1


class SockHookVerdict(enum.IntEnum):
    """Return codes of cgroup sock_addr programs (the kernel's contract)."""

    REJECT = 0  # -EPERM, or the errno set with bpf_set_retval()
    PROCEED = 1


class SockType(enum.IntEnum):
    """``bpf_sock_addr.type`` values the socket LB translates."""

    STREAM = socket.SOCK_STREAM
    DGRAM = socket.SOCK_DGRAM


class SockErrno(enum.IntEnum):
    """errno values the socket programs return (via ``bpf_set_retval(-E…)``)."""

    EHOSTUNREACH = errno.EHOSTUNREACH  # service with no active backend


#: max_entries of the socket-LB maps (a dict, not an enum: equal sizes are fine).
LB_MAP_SIZES: dict[str, int] = {
    "SERVICES": 65536,
    "BACKENDS": 65536,
    "REVNAT": 65535,  # u16 rev_nat_index, 0 unused
    "SOCK_REVNAT": 131072,
}


def _flags(prefix: str, members: type[enum.IntEnum]) -> list[str]:
    return [f"-D{prefix}_{m.name}={int(m.value)}" for m in members]


def bpf_cflags() -> list[str]:
    """``-D`` flags for every constant the BPF C uses."""
    return (
        _flags("DIRECTION", Direction)
        + _flags("MAP_VERDICT", MapVerdict)
        + _flags("DROP_REASON", DropReason)
        + _flags("RESERVED_IDENTITY", ReservedIdentity)
        + _flags("PROTOCOL", Protocol)
        + _flags("FLOW_VERDICT", FlowVerdictCode)
    )


def sock_cflags() -> list[str]:
    """``-D`` flags for ``bpf_sock.c``: everything of :func:`bpf_cflags` plus the LB codes."""
    return (
        bpf_cflags()
        + _flags("BACKEND_STATE", BackendState)
        + _flags("LB_SLOT", LBSlot)
        + _flags("SOCK_HOOK", SockHookVerdict)
        + _flags("SOCK_TYPE", SockType)
        + _flags("ERRNO", SockErrno)
        + [f"-DLB_MAP_SIZE_{name}={size}" for name, size in LB_MAP_SIZES.items()]
    )
