"""The twin's L2 predictions: failover outages and lease-transition counts.

Each prediction is derived two ways and says so:

(a) **analytic** bounds from the algorithms (:mod:`twin.semantics.failover`,
    pure, with its derivation as text);
(b) **Monte Carlo**: the same scenario rerun in the twin with ``n`` seeds
    derived from the run's seed (every component's stream changes), the
    empirical distribution (``samples``) and its central 98 % interval.

The predicted interval is the envelope of (a) and (b), widened by the
scenario's ``outage_tolerance``.  Formats (one dict each in
``Observations.predictions``)::

    {"kind": "failover", "step": i, "fault": kind, "node": holder, "lease": L, "loop": name,
     "outage_lo": s, "outage_hi": s, "persists": bool, "analytic": [lo, hi],
     "monte_carlo": {"n": n, "central": [lo, hi], "min": s, "max": s, "persist_fraction": f},
     "samples": [s, ...], "derivation": "..."}
    {"kind": "lease-transitions", "lease": L, "lo": n, "hi": n, "samples": [n, ...], "derivation": "..."}
    {"kind": "lease-transitions-total", "lease": "*", ...}     (the sum over the run's leases)
    {"kind": "lease-losses", "lease": L or "*", ...}

``lease-transitions`` is the Lease's ``leaseTransitions`` at the end of the run
(holder changes after the first acquisition, Kubernetes' own counter: the
largest ``LeaseTransition.transitions`` recorded); ``lease-losses`` counts
leaderships lost (``lease-lost`` events: a renewal missed its deadline, e.g.
throttled by the client's rate limiter — a holder that loses re-acquires its
own lease when nobody took over, which changes no holder).

The outage is :func:`twin.semantics.failover.measured_outage` of the loop's
requests (the harness measures the real side with the same function).
"""
from __future__ import annotations

import random

from twin.model.run import RunInputs
from twin.model.scenario import EXTERNAL
from twin.semantics.delays import Delays
from twin.semantics.election import throttled
from twin.semantics.failover import (FailoverTiming, central_interval, measured_outage, outage_bounds,
                                     prediction_interval)
from twin.semantics.lb import lb_table
from twin.semantics.l2 import lease_name
from twin.semantics.l2 import election_params

#: reruns behind each L2 prediction's distribution
MONTE_CARLO_RUNS = 200


def derived_seed(seed: int, k: int) -> int:
    return random.Random(f"{seed}:monte-carlo:{k}").getrandbits(48)


def _external_loops(inputs: RunInputs, step_times: dict) -> list[tuple]:
    """(traffic, start, end) of every loop from the external host."""
    out = []
    for s in inputs.scenario.steps:
        if s.kind == "loop" and s.traffic.src == EXTERNAL and s.index in step_times:
            start = step_times[s.index]
            out.append((s.traffic, start, start + s.traffic.duration_s))
    return out


def outages(inputs: RunInputs, step_times: dict, obs) -> dict:
    """{(fault step, loop name): measured_outage(...)} of one run; a fault's window ends at
    the next fault (``heal`` excepted), as the harness measures it."""
    out = {}
    faults = sorted(obs.faults, key=lambda f: f.t)
    for f in faults:
        nxt = next((g.t for g in faults if g.t > f.t and g.kind != "heal"), None)
        for t, start, end in _external_loops(inputs, step_times):
            if start <= f.t < end:
                recs = [(r.t, r.outcome == "answered") for r in obs.requests if r.name == t.name]
                out[(f.step, t.name)] = measured_outage(recs, f.t, nxt)
    return out


def _rerun(inputs: RunInputs, seed: int, delays: Delays, overrides: dict):
    from twin.sim.backend import Twin
    from twin.sim.world import SimConfig
    twin = Twin(inputs, SimConfig(seed=seed, delays=delays, overrides=overrides))
    obs = twin.run()
    return outages(inputs, twin.step_times, obs), obs


def l2_predictions(inputs: RunInputs, twin, obs, seed: int, delays: Delays, overrides: dict, n: int) -> list[dict]:
    runs = [_rerun(inputs, derived_seed(seed, k), delays, overrides) for k in range(n)]
    settings = inputs.scenario.settings
    tol = settings.outage_tolerance_s
    params = election_params(inputs.cluster.values)
    preds = []
    faults = sorted(obs.faults, key=lambda f: f.t)
    for f in faults:
        nxt = next((g.t for g in faults if g.t > f.t and g.kind != "heal"), None)
        for t, start, end in _external_loops(inputs, twin.step_times):
            if not start <= f.t < end:
                continue
            window_end = min(end, nxt) if nxt is not None else end
            samples = [r[0][(f.step, t.name)]["outage"] for r in runs if (f.step, t.name) in r[0]]
            persist = [r[0][(f.step, t.name)]["persists"] for r in runs if (f.step, t.name) in r[0]]
            cluster = twin.api.cluster
            held = sum(1 for e in twin.l2.nodes[f.node].electors.values()) or 1
            cands = max((len(a.electors) for name, a in twin.l2.nodes.items() if name != f.node), default=1) or 1
            svc = service_of(t.dst)
            backends = {b.pod for fe in lb_table(cluster, None, twin.api.view.allocation).services
                        if fe.service == svc for b in fe.active}
            on_node = any(cluster.pod(b).node == f.node for b in backends)
            timing = FailoverTiming(params, delays, t.interval_s, settings.request_timeout_s,
                                    settings.external.garp, settings.external.arp_accept,
                                    settings.external.base_reachable_time_s, held, cands, window_end - f.t)
            b = outage_bounds(f.kind, timing, backend_on_node=on_node and f.kind == "node-crash")
            lo, hi = prediction_interval(b, samples, tol)
            central = central_interval(samples) if samples else (None, None)
            preds.append({
                "kind": "failover", "step": f.step, "fault": f.kind, "node": f.node,
                "lease": f.lease or lease_name(cluster.service(svc)), "loop": t.name,
                "outage_lo": round(lo, 6), "outage_hi": round(hi, 6),
                "persists": b.persists or (bool(persist) and sum(persist) * 2 > len(persist)),
                "analytic": [round(b.lo, 6), round(b.hi, 6)],
                "monte_carlo": {"n": len(samples), "central": [central[0], central[1]],
                                "min": min(samples, default=None), "max": max(samples, default=None),
                                "persist_fraction": round(sum(persist) / len(persist), 4) if persist else None},
                "samples": samples,
                "derivation": (f"(a) analytic: {b.derivation}. (b) Monte Carlo: {len(samples)} twin reruns with "
                               f"seeds derived from {seed}. Interval: envelope of (a) and (b) widened by "
                               f"outage_tolerance {tol:g}s"),
            })
    preds += _transition_predictions(inputs, twin, runs, params)
    return preds


def service_of(dst: str) -> str:
    from twin.model.scenario import service_key
    return service_key(dst)


def _transition_predictions(inputs, twin, runs, params) -> list[dict]:
    """Holder changes (``lease-transitions``, as the API server records them) and leadership
    losses (``lease-losses``: an elector's renewal missed its deadline, or it stopped)."""
    leases = sorted({e.lease for a in twin.l2.nodes.values() for e in a.electors.values()} |
                    {x.lease for _, o in runs for x in o.leases})
    agents = [(name, len(a.electors)) for name, a in sorted(twin.l2.nodes.items()) if a.electors]
    # the worst case of each agent: it holds every lease it is a candidate for
    thr = [name for name, e in agents if throttled(e, 0, params)]
    faults = sum(1 for s in inputs.scenario.steps if s.kind == "fault")
    rate = ", ".join(f"{name}: {2 * e / params.retry_period_s:.1f} requests/s holding all {e}" for name, e in agents)
    text = (f"(a) analytic: {len(leases)} announced lease(s); {rate or 'no elector'} against qps {params.qps:g} "
            f"(burst {params.burst}): "
            + (f"throttled on {', '.join(thr)}: a renewal whose token would come after its renew deadline fails, "
               "so leases can be lost (a lost holder re-acquires at once when nobody took over: client-go's "
               "IsLeader shortcut, so losses need not change the holder); the counts come from (b)" if thr else
               "not throttled: no holder change after the first acquisition and no loss without a fault")
            + f". (b) Monte Carlo over {len(runs)} reruns: the range of the counts")

    def losses(o, lease):
        return sum(1 for e in o.events if e.event == "lease-lost" and (lease == "*" or e.get("lease") == lease))

    out = []
    def transitions(o, lease):  # the Lease's leaseTransitions at the end (holder changes after the first)
        return max((x.transitions for x in o.leases if x.lease == lease), default=0)

    def total(o, lease):
        return sum(transitions(o, name) for name in leases)

    out = []
    for kind, count, names in (("lease-transitions", transitions, leases),
                               ("lease-transitions-total", total, ["*"]),
                               ("lease-losses", losses, ["*"] + leases)):
        for lease in names:
            samples = [count(o, lease) for _, o in runs]
            if not samples:
                continue
            lo, hi = min(samples), max(samples)
            if not thr and faults == 0:  # exactly: no holder change after the first, no loss
                lo, hi = 0, max(hi, 0)
            out.append({"kind": kind, "lease": lease, "lo": lo, "hi": hi, "samples": samples, "derivation": text})
    return out
