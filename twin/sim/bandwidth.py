"""The Bandwidth Manager in the twin: a limiter per (node, pod) and a
throughput client per ``throughput`` step, as a fluid model in virtual time.

* :class:`Limiter` — the limit a node's native device applies to one pod's
  egress.  Its rate follows the node agent's view of the pod's annotation
  (:func:`twin.semantics.bandwidth.egress_limit` on ``agent.cluster``): a
  changed annotation takes effect when that agent regenerates (its own
  ``agent_regenerate`` draw), plus, when the calibration profile has
  measured it, the time to program the new rate (``apply_delay_s``: a
  uniform draw between its lowest and highest sample, from the limiter's
  own stream).  Flows that leave the node share the pod's rate by streams
  (two concurrent throughput steps from one pod share it too); the limiter
  keeps the history of (rate, streams) segments.
* :class:`ThroughputClient` — one per step: joins its sender's limiter for
  ``duration``, then integrates the predicted goodput
  (:func:`twin.semantics.rates.predict_throughput`) over the segments of
  its run and of each sampling interval (time-weighted).  A segment boundary
  caused by a limit change is uncertain by the agent delay's (and apply
  delay's) bounds: where a window or interval contains one, its ``[lo, hi]``
  also covers the mixes with the change at either bound.
"""
from __future__ import annotations

from dataclasses import dataclass

from twin.model.calibration import BandwidthProfile
from twin.model.observations import Rate, RateInterval, ThroughputRecord
from twin.model.scenario import Step
from twin.semantics.bandwidth import DEFAULT_MTU, EgressLimit, egress_limit
from twin.semantics.rates import Prediction, interval_bounds, predict_throughput
from twin.sim.world import Component, World


@dataclass(frozen=True)
class Segment:
    """From ``t`` on, the pod's limit as programmed and the streams sharing it.
    ``window``: when the limit changed at ``t``, the range of times the change could have
    taken effect (publish + the delays' bounds); None for other boundaries."""

    t: float
    limit: EgressLimit | None
    streams: int
    window: tuple[float, float] | None = None


def _key(limit: EgressLimit | None):
    return limit.rate_bps if limit is not None else None


def _stream_factors(p: Prediction) -> tuple[float, float | None]:
    """The bounds of one stream's calibrated share of ``p``'s sum, relative to a fair share
    (lo, hi; hi None when nothing bounds it)."""
    g, st, n = p.goodput, p.streams[0], len(p.streams)
    f_lo = st.lo * n / g.lo if st.lo is not None and g.lo else 0.0
    f_hi = st.hi * n / g.hi if st.hi is not None and g.hi else None
    return f_lo, f_hi


class Limiter(Component):
    """One pod's egress limit on its node's native device (see the module docstring)."""

    kind = "limiter"

    def __init__(self, world: World, agent, api, pod: str, profile: BandwidthProfile):
        super().__init__(world, f"{agent.name}/{pod}")
        self.agent, self.pod, self.profile = agent, pod, profile
        self.limit = self._from_agent()
        self.flows: dict[str, int] = {}  # cross-node flow name -> streams
        self.history: list[Segment] = [Segment(self.env.now, self.limit, 0)]
        #: rate (bit/s or None) -> when the API last published a change of the pod's limit to it
        self.published: dict = {}
        self._last_published = _key(self._limit_in(api.cluster))
        api.watchers.append(self)
        agent.listeners.append(self._regenerated)

    # -- the agent's view --
    def _limit_in(self, cluster) -> EgressLimit | None:
        try:
            return egress_limit(cluster.pod(self.pod), cluster.values)
        except KeyError:  # the pod does not exist (yet) in that view
            return None

    def _from_agent(self) -> EgressLimit | None:
        return self._limit_in(self.agent.cluster)

    def notify(self, version: int, cluster, states) -> None:
        """An API watcher for the publish time of a change of this pod's limit (the start of the
        window in which the agent applies it); it does not change the limit."""
        key = _key(self._limit_in(cluster))
        if key != self._last_published:
            self._last_published = key
            self.published[key] = self.env.now

    def _apply_bounds(self) -> tuple[float, float]:
        d = self.profile.apply_delay_s
        return (min(d), max(d)) if d else (0.0, 0.0)

    def _regenerated(self, version: int) -> None:
        new = self._from_agent()
        if _key(new) == _key(self.limit):
            self.limit = new
            return
        lo_r, hi_r = self.agent.delays.agent_regenerate.bounds()
        lo_a, hi_a = self._apply_bounds()
        pub = self.published.get(_key(new), self.env.now - lo_r)
        window = (pub + lo_r + lo_a, pub + hi_r + hi_a)
        if hi_a > 0:
            self.env.process(self._program(new, self.rng.uniform(lo_a, hi_a), window, version))
        else:
            self._set(new, window, version)

    def _program(self, new, delay: float, window, version: int):
        yield self.env.timeout(delay)
        self._set(new, window, version)

    def _set(self, new: EgressLimit | None, window, version: int) -> None:
        self.limit = new
        self.world.log("bandwidth-limit-applied", node=self.agent.name, pod=self.pod, version=version,
                       rate_bps=_key(new), raw=new.raw if new is not None else None)
        self._push(window)

    # -- flows --
    def _push(self, window=None) -> None:
        seg = Segment(self.env.now, self.limit, sum(self.flows.values()), window)
        if self.history and self.history[-1].t == seg.t:
            prev = self.history[-1]
            seg = Segment(seg.t, seg.limit, seg.streams, window or prev.window)
            self.history[-1] = seg
        else:
            self.history.append(seg)

    def join(self, flow: str, streams: int) -> None:
        self.flows[flow] = streams
        self._push()

    def leave(self, flow: str) -> None:
        self.flows.pop(flow, None)
        self._push()

    def segments(self, t0: float, t1: float) -> list[Segment]:
        """The history entries that cover ``[t0, t1)`` (the first one moved to ``t0``)."""
        out = []
        for i, s in enumerate(self.history):
            end = self.history[i + 1].t if i + 1 < len(self.history) else float("inf")
            if end <= t0 or s.t >= t1:
                continue
            out.append(s if s.t >= t0 else Segment(t0, s.limit, s.streams, None))
        return out


class ThroughputClient(Component):
    """One ``throughput`` step (iperf3 client and server) in the fluid model."""

    kind = "throughput"

    def __init__(self, world: World, name: str, limiter: Limiter, same_node: bool, profile: BandwidthProfile,
                 mtu: int = DEFAULT_MTU):
        super().__init__(world, name)
        self.limiter, self.same_node, self.profile, self.mtu = limiter, same_node, profile, mtu
        self._cache: dict = {}

    def _pred(self, limit: EgressLimit | None, total: int, duration_s: float) -> Prediction:
        key = (_key(limit), limit.raw if limit else None, limit.enforced if limit else None, total, duration_s)
        p = self._cache.get(key)
        if p is None:
            p = self._cache[key] = predict_throughput(limit, self.same_node, total, duration_s, self.profile, self.mtu)
        return p

    def run(self, step: Step, sender: str, receiver: str):
        """A SimPy generator: the transfer takes ``duration`` of virtual time, then is recorded."""
        t = step.throughput
        start = self.env.now
        start_limit = self.limiter.limit
        if not self.same_node:
            self.limiter.join(t.name, t.parallel)
        self.world.log("throughput-start", throughput=t.name, sender=sender, receiver=receiver,
                       limit_bps=_key(start_limit), same_node=self.same_node)
        yield self.env.timeout(t.duration_s)
        end = self.env.now
        if not self.same_node:
            self.limiter.leave(t.name)
        self.world.log("throughput-end", throughput=t.name)
        self.world.obs.throughput.append(self.record(step, sender, receiver, start, end, start_limit))

    # -- integration --
    def _mix(self, segs: list[Segment], a: float, b: float, parallel: int, duration_s: float,
             which: str) -> tuple[float, float, float | None, list[Prediction]]:
        """Time-weighted goodput of this flow over ``[a, b)`` given the segments (sorted, the first at or before a)."""
        point = lo = 0.0
        hi: float | None = 0.0
        preds = []
        for i, s in enumerate(segs):
            s0 = max(a, s.t)
            s1 = min(b, segs[i + 1].t) if i + 1 < len(segs) else b
            if s1 <= s0:
                continue
            w = (s1 - s0) / (b - a)
            limited = not self.same_node and s.limit is not None and s.limit.enforced
            total = max(s.streams, parallel) if limited else parallel
            p = self._pred(s.limit, total, duration_s)
            preds.append(p)
            r = p.goodput if which == "goodput" else p.interval
            share = parallel / total
            f_lo, f_hi = 1.0, 1.0
            if share < 1:  # other flows share the pod's limit: this flow's streams get the calibrated shares
                f_lo, f_hi = _stream_factors(p)
            point += w * r.bps * share
            lo += w * (r.lo if r.lo is not None else r.bps) * share * f_lo
            hi = None if hi is None or r.hi is None or f_hi is None else hi + w * r.hi * share * f_hi
        return point, lo, hi, preds

    def _rate(self, segs: list[Segment], a: float, b: float, parallel: int, duration_s: float,
              which: str) -> tuple[Rate, list[Prediction], bool]:
        point, lo, hi, preds = self._mix(segs, a, b, parallel, duration_s, which)
        widened = False
        for i, s in enumerate(segs):
            if s.window is None or i == 0:
                continue
            wlo, whi = s.window
            if whi <= a or wlo >= b:
                continue
            prev_t = segs[i - 1].t
            next_t = segs[i + 1].t if i + 1 < len(segs) else float("inf")
            for moved in (max(wlo, prev_t, a), min(whi, next_t, b)):
                alt = list(segs)
                alt[i] = Segment(moved, s.limit, s.streams, s.window)
                _, alo, ahi, _ = self._mix(alt, a, b, parallel, duration_s, which)
                lo = min(lo, alo)
                hi = None if hi is None or ahi is None else max(hi, ahi)
            widened = True
        return Rate(point, lo, hi), preds, widened

    def record(self, step: Step, sender: str, receiver: str, start: float, end: float,
               start_limit: EgressLimit | None) -> ThroughputRecord:
        t = step.throughput
        duration = end - start
        segs = self.limiter.segments(start, end)
        goodput, preds, widened = self._rate(segs, start, end, t.parallel, duration, "goodput")
        intervals = []
        for i0, i1 in interval_bounds(duration, t.interval_s):
            r, _, w = self._rate(segs, start + i0, start + i1, t.parallel, duration, "interval")
            intervals.append(RateInterval(i0, i1, r))
            widened = widened or w
        # per stream: goodput / n; the interval from the first segment's calibrated shares of its sum
        first = preds[0]
        f_lo, f_hi = _stream_factors(first)
        n = t.parallel
        if n == 1:
            streams = (goodput,)
        else:
            hi = goodput.hi / n * f_hi if goodput.hi is not None and f_hi is not None else None
            streams = tuple(Rate(goodput.bps / n, goodput.lo / n * f_lo, hi) for _ in range(n))
        changes = [s for s in segs[1:] if s.window is not None]
        basis = first.basis
        if changes:
            basis = (f"{len(changes)} limit change(s) during the run at "
                     + ", ".join(f"{s.t - start:.3f} s (to {_key(s.limit)} bit/s; window {s.window[0] - start:.3f}.."
                                 f"{s.window[1] - start:.3f} s: the bounds of the agent's regenerate delay and "
                                 f"the calibrated apply delay)" for s in changes)
                     + "; goodput and intervals are time-weighted mixes"
                     + (", the ones containing a change widened to cover its window" if widened else "")
                     + "; at the start: " + basis)
        shared = [s for s in segs if s.streams > t.parallel]
        if shared and not self.same_node:
            basis = (f"shares its sender's limit with other flows ({max(s.streams for s in shared)} streams at most); "
                     + basis)
        return ThroughputRecord(
            name=t.name, step=step.index, t=round(start, 6), sender=t.sender, receiver=t.receiver,
            direction=t.direction, parallel=t.parallel, duration_s=t.duration_s, same_node=self.same_node,
            limit_bps=_key(start_limit), goodput=goodput, streams=streams, intervals=tuple(intervals),
            retransmits=None, mechanism="model", basis=basis,
            evidence=tuple(f"segment t={s.t - start:.6f}s rate_bps={_key(s.limit)} streams={s.streams}"
                           for s in segs))
