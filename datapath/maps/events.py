"""``events`` perf buffer: ``struct flow_event`` records and a poller.

The kernel emits one event per drop and per new allowed connection (not for
established or reply packets).  :class:`EventReader` turns them into
:class:`FlowRecord` values.
"""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from twin.model.enums import Direction, DropReason, Protocol, Verdict

from datapath.constants import FlowVerdictCode
from datapath.errors import DatapathError
from datapath.maps._codec import U8, U16, U32, U64, Conv, Field, Struct, enum, five_tuple, pad

MAP_NAME = "events"


@dataclass(frozen=True, order=True)
class FlowRecord:
    """One flow event from the kernel, in plain Python values.

    ``time_ns`` is CLOCK_MONOTONIC (bpf_ktime_get_ns).  For ICMP echo the
    ports are the echo id; for other ICMP they are 0.
    """

    time_ns: int
    ifindex: int
    ep_identity: int
    peer_identity: int
    src_ip: ipaddress.IPv4Address
    src_port: int
    dst_ip: ipaddress.IPv4Address
    dst_port: int
    protocol: int  # a twin.model.enums.Protocol when known
    direction: Direction
    verdict: Verdict
    drop_reason: int  # DropReason when known; 0 if forwarded
    rule_ref: int
    is_reply: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["src_ip"], d["dst_ip"] = str(self.src_ip), str(self.dst_ip)
        return d


def _known(value: int, *enums: Any) -> int:
    for e in enums:
        try:
            return e(value)  # type: ignore[no-any-return]
        except ValueError:
            continue
    return value


def _known_as(*enums: Any) -> Conv:
    return Conv(int, lambda c: _known(int(c), *enums))


FLOW_EVENT = Struct("flow_event", [
    Field("ts_ns", U64, "time_ns"), Field("ifindex", U32, "ifindex"),
    Field("ep_identity", U32, "ep_identity"), Field("peer_identity", U32, "peer_identity"),
    *five_tuple(saddr="src_ip", daddr="dst_ip", sport="src_port", dport="dst_port", protocol_as=_known_as(Protocol)),
    Field("direction", U8, "direction", enum(Direction)),
    Field("verdict", U8, "verdict", Conv(int, lambda c: Verdict.FORWARDED if c == FlowVerdictCode.FORWARDED
                                          else Verdict.DROPPED)),
    Field("is_reply", U8, "is_reply", Conv(int, bool)),
    Field("drop_reason", U16, "drop_reason", _known_as(DropReason)), pad("pad", U16),
    Field("rule_ref", U32, "rule_ref"),
], FlowRecord)
FlowEventC = FLOW_EVENT.ctype


def decode_event(raw: bytes | Any) -> FlowRecord:
    """Decode one ``struct flow_event`` (bytes or a ctypes object)."""
    buf = bytes(raw)
    if len(buf) < ctypes.sizeof(FlowEventC):
        raise DatapathError(
            f"flow event has {len(buf)} bytes, expected {ctypes.sizeof(FlowEventC)}: "
            "the BPF object and datapath/maps/events.py disagree; rebuild both"
        )
    c = FlowEventC.from_buffer_copy(buf[: ctypes.sizeof(FlowEventC)])
    return FLOW_EVENT.from_c(c)  # type: ignore[no-any-return]


class EventReader:
    """Polls one BPF object's ``events`` perf buffer."""

    def __init__(self, bpf: Any, page_cnt: int = 64) -> None:
        self._bpf = bpf
        self._pending: list[FlowRecord] = []
        self.lost = 0
        self._errors: list[Exception] = []

        def on_event(_cpu: int, data: Any, size: int) -> None:
            try:
                self._pending.append(decode_event(ctypes.string_at(data, size)))
            except Exception as exc:  # never raise through the C callback
                self._errors.append(exc)

        def on_lost(count: int) -> None:
            self.lost += count

        self._callbacks = (on_event, on_lost)  # keep references alive
        bpf[MAP_NAME.encode()].open_perf_buffer(on_event, page_cnt=page_cnt, lost_cb=on_lost)

    def poll(self, timeout_ms: int = 0) -> list[FlowRecord]:
        """Records that arrived so far, oldest first; waits up to ``timeout_ms``."""
        self._bpf.perf_buffer_poll(timeout=timeout_ms)
        # drain what is left without waiting
        self._bpf.perf_buffer_poll(timeout=0)
        if self._errors:
            exc = self._errors.pop(0)
            raise DatapathError(f"could not decode a flow event: {exc}") from exc
        out, self._pending = sorted(self._pending), []  # per-CPU rings: order by time
        return out
