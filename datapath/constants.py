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


# -- bandwidth manager (datapath/bandwidth.py, bpf/lib/bandwidth.h) ------------------

class BandwidthMode(enum.IntEnum):
    """``-DBW_MODE``: how bpf_host.c's egress enforces a pod's limit."""

    HTB = 1  # skb->priority = the pod's HTB leaf class (kernels without sch_fq)
    EDT = 2  # skb->tstamp = earliest departure time, an fq root qdisc paces (Cilium)


#: Major number of the root qdisc the bandwidth manager puts on a native device
#: (``cb:``); its HTB leaf classes are ``cb:<minor>``, one per limited pod.
BW_QDISC_MAJOR = 0xCB
#: The largest leaf minor (tc class minors are 16 bit, 0 names the qdisc itself).
BW_MAX_MINOR = 0xFFFF
#: Cilium's ``DefaultTimeHorizon``: EDT drops a packet whose departure time lies
#: this far or further in the future.
BW_TIME_HORIZON_NS = 2_000_000_000
NSEC_PER_SEC = 1_000_000_000
#: max_entries of ``bw_pods`` (-DBW_MAP_SIZE): one per pod of the node.
BW_MAP_SIZE = 4096
#: HTB's bounds on a class's quantum (bytes): the kernel clamps to these with a
#: warning; the bandwidth manager clamps first (net/sched/sch_htb.c).
HTB_QUANTUM_MIN = 1000
HTB_QUANTUM_MAX = 200000
#: HTB's default rate-to-quantum divisor (tc's r2q).
HTB_R2Q = 10


def bandwidth_cflags(mode: BandwidthMode) -> list[str]:
    """``-D`` flags for ``lib/bandwidth.h``: the variant and the map size."""
    return _flags("BW_MODE", BandwidthMode) + [
        f"-DBW_MODE={int(mode)}", f"-DBW_MAP_SIZE={BW_MAP_SIZE}", f"-DBW_NSEC_PER_SEC={NSEC_PER_SEC}ULL"]
