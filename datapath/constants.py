"""Datapath-only numeric codes, and the ``-D`` flags shared with the BPF C.

Shared constants come from :mod:`twin.model.enums`; the few codes that only
the datapath uses live here, so the C never holds a literal number.
"""
from __future__ import annotations

import enum

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol, ReservedIdentity




class FlowVerdictCode(enum.IntEnum):
    """``flow_event.verdict`` values."""

    FORWARDED = 1
    DROPPED = 2


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
