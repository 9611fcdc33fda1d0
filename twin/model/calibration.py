"""Calibration profiles: measurements of the real datapath that the twin's
models are built from (never constants tuned until a test passes).

A profile is a versioned JSON file in ``twin/calibration/`` written by the
measuring tool (``make calibrate-bandwidth``, ``harness.calibrate``), read by
:func:`twin.calibration.load_bandwidth_profile` and parsed here (pure); it says where, when and how it was measured.  The twin says which
profile it used in every prediction's ``basis``.

``bandwidth.json`` (schema 1)::

    {"profile": "bandwidth", "schema": 1,
     "measured": {"date": ..., "host": ..., "kernel": ..., "cpus": 2, "how": "<command and topology>"},
     "mechanism": "htb",            # the limiter that ran (edt-fq | htb)
     "mtu": 1500, "tool": "iperf3 3.12 -R -J", "duration_s": 5.0, "interval_s": 1.0,
     "limited": [{"limit_bps": 10000000, "parallel": 1,
                  "goodput_bps": [...],      # whole-run receiver goodput, one per repetition (all streams)
                  "streams_bps": [[...], ...],  # per repetition, each stream's goodput
                  "intervals_bps": [...]}],  # every interval_s sample of every repetition (all streams)
     "unlimited": [{"path": "same-node" | "cross-node", "parallel": 1,
                    "goodput_bps": [...], "streams_bps": [[...]], "intervals_bps": [...]}],
     "apply_delay_s": [...]}        # annotation published -> the new rate programmed (the agent's reconcile)
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA = 1


class CalibrationError(ValueError):
    """A profile is missing or malformed (names the file and the field)."""


@dataclass(frozen=True)
class RatePoint:
    """Repeated measurements of one configuration."""

    parallel: int
    goodput_bps: tuple[float, ...]
    streams_bps: tuple[tuple[float, ...], ...] = ()
    intervals_bps: tuple[float, ...] = ()
    limit_bps: int | None = None  # limited points
    path: str = "cross-node"  # unlimited points: same-node | cross-node


@dataclass(frozen=True)
class BandwidthProfile:
    file: str
    measured: dict
    mechanism: str
    mtu: int
    tool: str
    duration_s: float
    interval_s: float
    limited: tuple[RatePoint, ...]
    unlimited: tuple[RatePoint, ...]
    apply_delay_s: tuple[float, ...] = field(default=())

    def describe(self) -> str:
        m = self.measured
        return (f"calibration {self.file.replace(chr(92), '/').rsplit('/', 1)[-1]} ({self.mechanism}, {self.tool}, {self.duration_s:g} s runs; "
                f"measured {m.get('date', '?')} on {m.get('host', '?')}, kernel {m.get('kernel', '?')})")

    def as_dict(self) -> dict:
        def point(p: RatePoint) -> dict:
            d = {"parallel": p.parallel, "goodput_bps": list(p.goodput_bps),
                 "streams_bps": [list(s) for s in p.streams_bps], "intervals_bps": list(p.intervals_bps)}
            if p.limit_bps is not None:
                d = {"limit_bps": p.limit_bps, **d}
            else:
                d = {"path": p.path, **d}
            return d
        return {"profile": "bandwidth", "schema": SCHEMA, "measured": dict(self.measured),
                "mechanism": self.mechanism, "mtu": self.mtu, "tool": self.tool, "duration_s": self.duration_s,
                "interval_s": self.interval_s, "limited": [point(p) for p in self.limited],
                "unlimited": [point(p) for p in self.unlimited], "apply_delay_s": list(self.apply_delay_s)}


def _floats(file: str, where: str, value) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise CalibrationError(f"{file}: {where}: must be a list of numbers")
    return tuple(float(x) for x in value)


def _point(file: str, where: str, d, limited: bool) -> RatePoint:
    if not isinstance(d, dict):
        raise CalibrationError(f"{file}: {where}: must be a mapping")
    good = _floats(file, f"{where}.goodput_bps", d.get("goodput_bps"))
    if not good:
        raise CalibrationError(f"{file}: {where}.goodput_bps: needs at least one measurement")
    streams = tuple(_floats(file, f"{where}.streams_bps[{i}]", s) for i, s in enumerate(d.get("streams_bps") or []))
    par = d.get("parallel", 1)
    if not isinstance(par, int) or par < 1:
        raise CalibrationError(f"{file}: {where}.parallel: must be a positive integer")
    if limited:
        lim = d.get("limit_bps")
        if not isinstance(lim, int) or lim <= 0:
            raise CalibrationError(f"{file}: {where}.limit_bps: must be a positive integer (bit/s)")
        return RatePoint(par, good, streams, _floats(file, f"{where}.intervals_bps", d.get("intervals_bps") or []),
                         limit_bps=lim)
    path = d.get("path")
    if path not in ("same-node", "cross-node"):
        raise CalibrationError(f"{file}: {where}.path: must be same-node or cross-node")
    return RatePoint(par, good, streams, _floats(file, f"{where}.intervals_bps", d.get("intervals_bps") or []),
                     path=path)


def parse_bandwidth_profile(data, file: str) -> BandwidthProfile:
    """A bandwidth profile from its JSON document (``file`` names it in errors)."""
    if not isinstance(data, dict) or data.get("profile") != "bandwidth":
        raise CalibrationError(f"{file}: profile: must be \"bandwidth\"")
    if data.get("schema") != SCHEMA:
        raise CalibrationError(f"{file}: schema: this twin reads schema {SCHEMA}, the file has {data.get('schema')!r}")
    for key in ("mechanism", "tool"):
        if not isinstance(data.get(key), str):
            raise CalibrationError(f"{file}: {key}: must be a string")
    try:
        mtu, dur, ivl = int(data["mtu"]), float(data["duration_s"]), float(data.get("interval_s", 1.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{file}: mtu/duration_s/interval_s: {exc}") from None
    limited = tuple(_point(file, f"limited[{i}]", d, True) for i, d in enumerate(data.get("limited") or []))
    unlimited = tuple(_point(file, f"unlimited[{i}]", d, False) for i, d in enumerate(data.get("unlimited") or []))
    if not limited:
        raise CalibrationError(f"{file}: limited: needs at least one measured limit")
    return BandwidthProfile(file, dict(data.get("measured") or {}), data["mechanism"], mtu, data["tool"], dur, ivl,
                            limited, unlimited, _floats(file, "apply_delay_s", data.get("apply_delay_s") or []))
