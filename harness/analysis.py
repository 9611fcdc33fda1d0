"""Measurements derived from observations, and the service-level comparisons.

Pure functions of typed :class:`~twin.model.observations.Observations` (the
same for both backends):
backend shares of request steps, outage windows around kills, readmission
after restarts, and the chi-square test used to compare shares.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from twin.model.observations import Observations, RequestRecord
from twin.model.scenario import Scenario


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution (regularized upper gamma Q(dof/2, x/2))."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, x2 = dof / 2.0, x / 2.0
    if x2 < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x2 / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x2 + a * math.log(x2) - math.lgamma(a)))
    # continued fraction for Q (Lentz)
    b, c, d = x2 + 1 - a, 1e300, 1 / (x2 + 1 - a)
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x2 + a * math.log(x2) - math.lgamma(a)) * h)


def chi2_test(counts: dict[str, int], expected_shares: dict[str, float]) -> dict:
    """Goodness of fit of observed counts to expected shares (keys = backends)."""
    n = sum(counts.values())
    keys = sorted(set(expected_shares) | set(counts))
    stat = 0.0
    for k in keys:
        exp = n * expected_shares.get(k, 0.0)
        obs = counts.get(k, 0)
        if exp == 0:
            if obs:
                return {"statistic": math.inf, "dof": len(keys) - 1, "p_value": 0.0, "n": n,
                        "why": f"{obs} answers from {k}, which the twin gives no share"}
            continue
        stat += (obs - exp) ** 2 / exp
    dof = max(1, len([k for k in keys if expected_shares.get(k, 0) > 0]) - 1)
    return {"statistic": round(stat, 4), "dof": dof, "p_value": round(chi2_sf(stat, dof), 6), "n": n}


def backend_counts(rows: Iterable[RequestRecord], name: str) -> Counter:
    """Answers per backend; answers that do not name their backend (e.g. the deathstar
    API's POST replies) are counted under ``"?"``."""
    return Counter(r.backend or "?" for r in rows if r.name == name and r.outcome == "answered")


def outcomes(rows: Iterable[RequestRecord], name: str) -> Counter:
    return Counter(r.outcome for r in rows if r.name == name)


def outage(rows: Iterable[RequestRecord], loop: str, kill_t: float, pod: str, until: float | None = None) -> dict:
    """Client's view of one kill: failures after it, and the window kill → last failure."""
    mine = [r for r in rows if r.name == loop and r.t >= kill_t and (until is None or r.t < until)]
    failed = [r for r in mine if r.outcome != "answered"]
    last_dead = [r for r in mine if r.backend == pod and r.outcome != "answered"]
    return {
        "pod": pod, "requests": len(mine), "failures": len(failed),
        "first_failure_s": round(failed[0].t - kill_t, 6) if failed else None,
        "outage_s": round(failed[-1].t - kill_t, 6) if failed else 0.0,
        "failures_to_dead_backend": len(last_dead),
    }


def readmission(rows: Iterable[RequestRecord], loop: str, restart_t: float, pod: str) -> dict:
    back = [r for r in rows if r.name == loop and r.t >= restart_t and r.backend == pod and r.outcome == "answered"]
    return {"pod": pod, "readmit_s": round(back[0].t - restart_t, 6) if back else None}


def service_measurements(obs: Observations, scenario: Scenario) -> dict:
    """Everything the service diff needs from one backend's observations (JSON-ready).

    ``requests`` is keyed by traffic step name, ``kills`` by ``LOOP/KILL-KEY``
    (the kill record's key, e.g. ``loop/kill default/webpod1@5``), ``holds`` and
    ``syscalls`` are the records' JSON forms (each with its ``key``).
    """
    rows = obs.requests
    out: dict = {"requests": {}, "kills": [], "holds": [h.as_dict() for h in obs.holds],
                 "syscalls": [s.as_dict() for s in obs.syscalls]}
    for step in scenario.steps:
        if step.kind in ("requests", "loop"):
            t = step.traffic
            out["requests"][t.name] = {"backends": dict(backend_counts(rows, t.name)), "outcomes": dict(outcomes(rows, t.name))}
    loops = [s.traffic for s in scenario.steps if s.kind == "loop"]
    kills = obs.kills
    for i, k in enumerate(kills):
        if k.action != "kill":
            continue
        restart = next((r for r in kills[i + 1:] if r.action == "restart" and r.pod == k.pod), None)
        for loop in loops:
            entry = {"key": f"{loop.name}/{k.key}", "loop": loop.name, "kill_t": k.t,
                     **outage(rows, loop.name, k.t, k.pod, restart.t if restart else None)}
            if restart:
                entry.update(readmission(rows, loop.name, restart.t, k.pod))
            out["kills"].append(entry)
    return out
