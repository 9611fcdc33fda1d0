"""The twin's rate model (pure): the goodput a bulk TCP transfer gets under a
pod's egress limit, with an interval, from a calibration profile.

Structure (every number comes from the profile or from the header
accounting of :mod:`twin.semantics.bandwidth`; none is tuned here):

* **What limits.**  A limit is enforced only when the annotation is enforced
  (:func:`~twin.semantics.bandwidth.egress_limit`) *and* the data leaves the
  sender's node: Cilium limits at the native device, so pods on one node
  are not limited.
* **Steady goodput** = wire limit x :func:`~twin.semantics.bandwidth.tcp_payload_fraction`
  (the MTU's header overhead) x efficiency.
* **Efficiency** samples = calibrated goodput / (limit x fraction at the
  profile's MTU), one per repetition, at each calibrated limit (per parallel
  count).  Between calibrated limits the point, the lowest and the highest
  sample are interpolated linearly in log(limit) between the two neighbours;
  beyond them the nearest calibrated limit is used and the prediction says
  "extrapolated".
* **Interval** = the point x the [min, max] relative spread of every
  calibrated run against its own configuration's mean, pooled over all
  calibrated limits (the run-to-run spread is the machine's; five runs of
  one configuration say little about its tails): distribution-free, with n
  exchangeable samples a new one falls inside [min, max] with probability
  (n-1)/(n+1) (0.96 for the 50 runs of the default calibration).
  Per-interval rates use the profile's per-interval samples the same way.
* **Parallel streams** share the pod's limit: the sum comes from the
  profile's points with that parallel count when the limit lies within
  the limits measured with it, else from parallel 1.  Per stream = sum / n,
  its interval from the calibrated streams' shares of their run's sum
  (Jain's fairness index of the calibration is reported).
* **Duration.**  A run's goodput includes a startup part (slow start
  bursting into the limiter's buffer, or ramping up): measured goodput -
  steady goodput, where steady is the mean of the per-interval samples
  after each repetition's first.  Assumption: that excess, in bits
  (excess x calibrated duration), is the same for any duration, so its
  effect on the goodput scales as 1/T.  The spread of the samples is kept.
* **Unlimited** paths (no enforced limit, or one node) are bounded below
  only, by the best goodput of the highest calibrated limit: what they
  reach depends on the machine's CPU and load, which the twin does not
  model.  The point is the mean of the profile's ``unlimited`` samples for
  the path (same-node / cross-node; measured on an idle machine, named in
  the basis), or the floor when the profile has none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Sequence

from twin.model.calibration import BandwidthProfile, RatePoint
from twin.model.observations import Rate, RateInterval
from twin.semantics.bandwidth import DEFAULT_MTU, EgressLimit, tcp_payload_fraction

COVERAGE = "with n samples a new measurement falls inside [min, max] with probability (n-1)/(n+1)"


@dataclass(frozen=True)
class Efficiency:
    """Goodput / (limit x payload fraction) at one limit: point (mean), lowest and highest sample."""

    point: float
    lo: float
    hi: float
    n: int  # samples behind it (the smaller of the two neighbours when interpolated)
    parallel: int  # the parallel count of the calibration points used
    extrapolated: bool
    how: str  # "calibrated at 10M", "interpolated 5M..10M", "extrapolated from 1G"


@dataclass(frozen=True)
class Prediction:
    """A predicted throughput run: whole-run goodput (all streams), per stream, per interval."""

    goodput: Rate
    streams: tuple[Rate, ...]
    interval: Rate  # the goodput of any one sampling interval (all streams)
    limit_bps: int | None  # the enforced wire rate that applies (None: unlimited)
    same_node: bool
    extrapolated: bool
    fairness: float | None  # Jain's index of the calibration's streams (None: no per-stream samples)
    basis: str

    def intervals(self, duration_s: float, interval_s: float) -> tuple[RateInterval, ...]:
        """The per-interval predictions of a run of ``duration_s`` sampled every ``interval_s``."""
        return tuple(RateInterval(t0, t1, self.interval) for t0, t1 in interval_bounds(duration_s, interval_s))


def interval_bounds(duration_s: float, interval_s: float) -> list[tuple[float, float]]:
    """``[t0, t1)`` of each sampling interval (iperf3 -i; the last one may be shorter)."""
    out, k = [], 0
    while True:
        t0 = round(k * interval_s, 9)
        if t0 >= duration_s - 1e-9:
            return out
        out.append((t0, round(min(duration_s, (k + 1) * interval_s), 9)))
        k += 1


def enforced_rate(limit: EgressLimit | None, leaves_node: bool) -> int | None:
    """The wire rate (bit/s) that limits a pod's traffic on this path; None when nothing does
    (no annotation, one Cilium ignores, or a path that stays on the sender's node)."""
    if limit is None or not limit.enforced or not leaves_node:
        return None
    return limit.rate_bps


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 = equal shares, 1/n = one takes all."""
    sq = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * sq) if sq > 0 else 1.0


def _reps(profile: BandwidthProfile, p: RatePoint) -> list[list[float]]:
    """The point's interval samples split by repetition (empty when they do not split evenly)."""
    per = round(profile.duration_s / profile.interval_s)
    xs, n = list(p.intervals_bps), len(p.goodput_bps)
    if per < 2 or not xs or len(xs) != per * n:
        return []
    return [xs[i * per:(i + 1) * per] for i in range(n)]


def startup_excess_bps(profile: BandwidthProfile, p: RatePoint) -> float:
    """Measured goodput - steady goodput (the mean of the interval samples after each repetition's
    first) of a calibration point; 0 when the samples do not allow it."""
    reps = _reps(profile, p)
    if not reps:
        return 0.0
    steady = fmean(x for r in reps for x in r[1:])
    return fmean(p.goodput_bps) - steady


def _samples(profile: BandwidthProfile, p: RatePoint, kind: str, duration_s: float) -> list[float]:
    if kind == "intervals":
        return list(p.intervals_bps) or list(p.goodput_bps)
    xs = list(p.goodput_bps)
    if duration_s and abs(duration_s - profile.duration_s) > 1e-9:
        # the startup excess (bits) is fixed: its share of the goodput scales as 1/T
        shift = startup_excess_bps(profile, p) * (1 - profile.duration_s / duration_s)
        xs = [x - shift for x in xs]
    return xs


def _pooled_spread(profile: BandwidthProfile, kind: str, duration_s: float) -> tuple[float, float, int]:
    """The run-to-run spread of the limiter on the calibrated machine: every calibrated sample
    relative to the mean of its own configuration, pooled over all limited points
    -> (min - 1, max - 1, n).  Five runs of one configuration say little about its tails;
    the relative spread is the machine's, so it is pooled."""
    devs = []
    for p in profile.limited:
        xs = _samples(profile, p, kind, duration_s)
        m = fmean(xs)
        devs += [x / m - 1 for x in xs] if m > 0 else []
    return min(devs), max(devs), len(devs)


def _eff_at(profile: BandwidthProfile, p: RatePoint, kind: str, duration_s: float) -> tuple[float, float, float, int]:
    ideal = p.limit_bps * tcp_payload_fraction(profile.mtu)
    point = fmean(x / ideal for x in _samples(profile, p, kind, duration_s))
    dlo, dhi, n = _pooled_spread(profile, kind, duration_s)
    return point, point * (1 + dlo), point * (1 + dhi), n


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:g}M"


def efficiency(profile: BandwidthProfile, rate_bps: int, parallel: int = 1, kind: str = "goodput",
               duration_s: float | None = None) -> Efficiency:
    """The calibrated efficiency at ``rate_bps`` (``kind``: ``goodput`` = whole runs of
    ``duration_s``, default the profile's; ``intervals`` = one sampling interval)."""
    if rate_bps <= 0:
        raise ValueError(f"efficiency: the rate must be positive, got {rate_bps}")
    dur = profile.duration_s if duration_s is None else duration_s
    pts = sorted((p for p in profile.limited if p.parallel == parallel), key=lambda p: p.limit_bps)
    if not pts or not pts[0].limit_bps <= rate_bps <= pts[-1].limit_bps:
        pts = sorted((p for p in profile.limited if p.parallel == 1), key=lambda p: p.limit_bps)
        if not pts:
            raise ValueError(f"{profile.file}: no parallel-1 calibration points")
    used = pts[0].parallel
    if rate_bps <= pts[0].limit_bps or rate_bps >= pts[-1].limit_bps:
        p = pts[0] if rate_bps <= pts[0].limit_bps else pts[-1]
        point, lo, hi, n = _eff_at(profile, p, kind, dur)
        exact = p.limit_bps == rate_bps
        return Efficiency(point, lo, hi, n, used, not exact,
                          f"calibrated at {_mbit(p.limit_bps)}" if exact else f"extrapolated from {_mbit(p.limit_bps)}")
    for a, b in zip(pts, pts[1:]):
        if a.limit_bps <= rate_bps <= b.limit_bps:
            break
    ea, eb = _eff_at(profile, a, kind, dur), _eff_at(profile, b, kind, dur)
    if rate_bps == a.limit_bps or a.limit_bps == b.limit_bps:
        return Efficiency(*ea, used, False, f"calibrated at {_mbit(a.limit_bps)}")
    if rate_bps == b.limit_bps:
        return Efficiency(*eb, used, False, f"calibrated at {_mbit(b.limit_bps)}")
    w = (math.log(rate_bps) - math.log(a.limit_bps)) / (math.log(b.limit_bps) - math.log(a.limit_bps))
    mix = [(1 - w) * x + w * y for x, y in zip(ea[:3], eb[:3])]
    return Efficiency(mix[0], mix[1], mix[2], min(ea[3], eb[3]), used, False,
                      f"interpolated in log(limit) between {_mbit(a.limit_bps)} and {_mbit(b.limit_bps)}")


def _shares(points: Sequence[RatePoint], parallel: int) -> list[float]:
    """Each calibrated stream's goodput x n / its run's sum (1 = a fair share)."""
    out = []
    for p in points:
        for run in p.streams_bps:
            if len(run) == parallel and sum(run) > 0:
                out += [x * parallel / sum(run) for x in run]
    return out


def _fairness(points: Sequence[RatePoint], parallel: int) -> float | None:
    runs = [run for p in points for run in p.streams_bps if len(run) == parallel and sum(run) > 0]
    return fmean(jain(r) for r in runs) if runs else None


def _streams(goodput: Rate, parallel: int, points: Sequence[RatePoint]) -> tuple[tuple[Rate, ...], float | None, str]:
    if parallel == 1:
        return (goodput,), None, ""
    shares = _shares(points, parallel)
    fair = _fairness(points, parallel)
    each = goodput.bps / parallel
    if not shares:
        hi = goodput.hi if goodput.hi is not None else None
        return (tuple(Rate(each, 0.0, hi) for _ in range(parallel)), None,
                f"; per stream = sum/{parallel}, shares of {parallel} streams not calibrated: "
                "interval [0, the sum's hi]")
    lo_s, hi_s = min(shares), max(shares)
    lo = (goodput.lo if goodput.lo is not None else goodput.bps) / parallel * lo_s
    hi = goodput.hi / parallel * hi_s if goodput.hi is not None else None
    return (tuple(Rate(each, lo, hi) for _ in range(parallel)), fair,
            f"; per stream = sum/{parallel} x calibrated share {lo_s:.3f}..{hi_s:.3f} of {len(shares)} streams, "
            f"Jain's fairness index of the calibration {fair:.3f}")


def _unlimited(profile: BandwidthProfile, same_node: bool, parallel: int, why: str) -> Prediction:
    path = "same-node" if same_node else "cross-node"
    pts = [p for p in profile.unlimited if p.path == path and p.parallel == parallel] or \
          [p for p in profile.unlimited if p.path == path and p.parallel == 1]
    # The floor: an unlimited flow goes at least as fast as the fastest limited one measured (the
    # limiter, not the machine, bounds those).  Above it the twin claims nothing: what an unlimited
    # flow reaches is the machine's CPU and the veth/bridge path under whatever else runs, which the
    # twin does not model; the calibrated idle-machine range is reported in the basis, not predicted.
    top = max((p for p in profile.limited if p.parallel == 1), key=lambda p: p.limit_bps, default=None) or \
        max(profile.limited, key=lambda p: p.limit_bps)
    floor = max(top.goodput_bps)
    if not pts:
        basis = (f"{why}: unlimited, no calibration for this path ({path}); goodput at least the best of the "
                 f"highest calibrated limit {_mbit(top.limit_bps)} ({_mbit(floor)}), no upper bound; "
                 f"{profile.describe()}")
        r = Rate(floor, floor, None)
        streams = tuple(Rate(floor / parallel, 0.0, None) for _ in range(parallel))
        return Prediction(r, streams if parallel > 1 else (r,), r, None, same_node, True, None, basis)
    good = [x for p in pts for x in p.goodput_bps]
    point = fmean(good)
    goodput = Rate(point, min(floor, point), None)
    basis = (f"{why}: unlimited: goodput at least the best of the highest calibrated limit "
             f"{_mbit(top.limit_bps)} ({_mbit(floor)}), no upper bound (the machine's load bounds it, which the "
             f"twin does not model); point = mean of the calibrated {path} path on an idle machine "
             f"({len(good)} runs, {_mbit(min(good))}..{_mbit(max(good))}, parallel {pts[0].parallel}); "
             f"{profile.describe()}")
    streams = tuple(Rate(point / parallel, 0.0, None) for _ in range(parallel))
    return Prediction(goodput, streams if parallel > 1 else (goodput,), Rate(point, goodput.lo, None), None,
                      same_node, False, None, basis)


def predict_throughput(limit: EgressLimit | None, same_node: bool, parallel: int, duration_s: float,
                       profile: BandwidthProfile, mtu: int = DEFAULT_MTU) -> Prediction:
    """Predict a throughput run from the sender pod's egress limit (as its node's agent has it),
    whether sender and receiver share a node, the stream count and the duration."""
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, got {parallel}")
    rate = enforced_rate(limit, not same_node)
    if rate is None:
        if limit is not None and limit.enforced and same_node:
            why = f"limit {limit.raw!r} not applied: sender and receiver on one node (Cilium limits at the native device)"
        elif limit is not None and not limit.enforced:
            why = f"annotation {limit.raw!r} not enforced ({limit.note})"
        else:
            why = "no egress-bandwidth annotation"
        return _unlimited(profile, same_node, parallel, why)
    frac = tcp_payload_fraction(mtu)
    eff = efficiency(profile, rate, parallel, "goodput", duration_s)
    ieff = efficiency(profile, rate, parallel, "intervals")
    ideal = rate * frac
    goodput = Rate(ideal * eff.point, ideal * eff.lo, ideal * eff.hi)
    interval = Rate(ideal * ieff.point, ideal * ieff.lo, ideal * ieff.hi)
    pts = [p for p in profile.limited if p.parallel == parallel]
    streams, fair, sbasis = _streams(goodput, parallel, pts)
    par = (f"parallel {parallel} from the parallel-{eff.parallel} calibration" if eff.parallel == parallel
           else f"{parallel} streams share the limit: sum from parallel-1 (parallel {parallel} not calibrated "
                f"at this limit)") if parallel > 1 else "one stream"
    dur = ""
    if abs(duration_s - profile.duration_s) > 1e-9:
        dur = (f"; duration {duration_s:g} s vs calibrated {profile.duration_s:g} s: assumption: the startup "
               "excess (measured - steady goodput, in bits) is fixed, its effect scales as 1/T")
    extra = "; EXTRAPOLATED beyond the calibrated limits" if eff.extrapolated else "; within the calibrated limits"
    basis = (f"limit {_mbit(rate)}bit/s ({limit.raw!r}) x payload fraction {frac:.4f} (MTU {mtu}) x efficiency "
             f"{eff.point:.4f} [{eff.lo:.4f}, {eff.hi:.4f}] ({eff.how}; interval = the point x the [min, max] relative spread of all {eff.n} calibrated runs "
             f"(each against its own configuration's mean), "
             f"{COVERAGE}); per interval efficiency [{ieff.lo:.4f}, {ieff.hi:.4f}]; {par}{sbasis}{dur}{extra}; "
             f"{profile.describe()}")
    return Prediction(goodput, streams, interval, rate, same_node, eff.extrapolated, fair, basis)


def rate_bounds(predicted: Rate, tolerance: float = 0.05) -> tuple[float, float | None]:
    """The accepted range of a measurement against ``predicted``: its interval widened by
    ``tolerance`` (``settings.rate_tolerance``) on each side, ``lo x (1 - tol) .. hi x (1 + tol)``;
    without ``lo`` the point is the lower end; a missing ``hi`` (an unlimited path) bounds
    nothing above (None)."""
    lo = predicted.lo if predicted.lo is not None else predicted.bps
    return lo * (1 - tolerance), (predicted.hi * (1 + tolerance) if predicted.hi is not None else None)


def rate_agrees(measured_bps: float, predicted: Rate, tolerance: float = 0.05) -> bool:
    """Whether a measured goodput falls in :func:`rate_bounds`."""
    lo, hi = rate_bounds(predicted, tolerance)
    return measured_bps >= lo and (hi is None or measured_bps <= hi)
