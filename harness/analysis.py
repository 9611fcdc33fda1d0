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


# -- L2 announcements and lease failover ------------------------------------------------------

#: fault kinds after which the faulted node must not hold the lease any more (it cannot renew);
#: ``nic-down`` keeps renewing over the backup path (cilium#35507) and ``responder-missing``
#: keeps its leases, so neither moves a lease
MOVING_FAULTS = ("partition", "agent-kill", "node-crash")


def failover_outage(rows: Iterable[RequestRecord], loop: str, fault_t: float, until: float | None = None) -> dict:
    """The client's view of one fault — the ONE outage definition, used for both backends.

    The outage starts at the first failed request at or after the fault and ends at
    the first answered request after the last failure that follows it; 0 when no
    request failed.  When no request was answered after the last failure (the
    outage outlasted the loop) ``persisting`` is true and ``outage_s`` runs to the
    start of the last request of the window (a lower bound).  ``until`` ends the
    window (e.g. at the next fault of the same run)."""
    mine = sorted((r for r in rows if r.name == loop and r.t >= fault_t and (until is None or r.t < until)),
                  key=lambda r: r.t)
    failed = [r for r in mine if r.outcome != "answered"]
    base = {"loop": loop, "requests": len(mine), "failures": len(failed)}
    if not failed:
        return {**base, "outage_s": 0.0, "first_failure_s": None, "recovered_s": None, "persisting": False}
    first, last = failed[0], failed[-1]
    back = next((r for r in mine if r.t > last.t and r.outcome == "answered"), None)
    end = back.t if back else mine[-1].t
    return {**base, "outage_s": round(end - first.t, 6), "first_failure_s": round(first.t - fault_t, 6),
            "recovered_s": round(back.t - fault_t, 6) if back else None, "persisting": back is None}


def holder_at(leases: Iterable, lease: str, t: float) -> str | None:
    """The holder of ``lease`` at ``t`` by the recorded transitions (the last one at or before ``t``)."""
    last = None
    for x in sorted((x for x in leases if x.lease == lease), key=lambda x: (x.t, x.index)):
        if x.t <= t:
            last = x.holder or None
    return last


def transitions_count(leases: Iterable, lease: str) -> int:
    """A lease's ``leaseTransitions`` at the end of the run (Kubernetes' own counter: holder
    changes after the first acquisition), as the last recorded transition says it."""
    return max((x.transitions for x in leases if x.lease == lease), default=0)


def l2_measurements(obs: Observations, scenario: Scenario, predictions: list[dict] | None = None,
                    lease_of: dict[str, str] | None = None) -> dict:
    """What the L2 diff needs from one backend's observations (JSON-ready).

    * ``leases``: per lease, its holders in order, ``transitions`` (its
      ``leaseTransitions`` at the end: holder changes after the first acquisition) and
      the twin's predicted interval for it (``lease-transitions`` predictions)
    * ``arping``: per arping step (key ``NAME@STEP``), the distinct answering nodes
    * ``garp``: per IP, how many gratuitous ARPs the external host saw and from whom
    * ``checks``: the L2 consistency findings, keyed ``PROBLEM LEASE`` (the node is
      a field: it may legitimately differ when the holders differ)
    * ``failovers``: per fault with a ``loop`` running, the outage by
      :func:`failover_outage`, with the twin's ``failover`` prediction for that step
    ``lease_of`` maps service keys to lease names (for ``holder_of`` faults)."""
    preds = predictions or []
    by_lease: dict[str, list] = {}
    for x in sorted(obs.leases, key=lambda x: (x.t, x.index)):
        by_lease.setdefault(x.lease, []).append(x)
    tpred = {p["lease"]: p for p in preds if p.get("kind") == "lease-transitions"}
    # leadership given up without a holder change on the API server (a renewal missed its deadline and,
    # usually, the same node took the lease again): the electors' "lost" events, releases excluded
    lost = Counter(e.get("lease") for e in obs.events if e.event == "lease-lost"
                   and (e.get("reason") or (e.get("detail") or {}).get("reason")) != "released")
    leases = {}
    for name in sorted(set(by_lease) | set(tpred)):
        xs = by_lease.get(name, [])
        p = tpred.get(name)
        leases[name] = {"holders": [x.holder for x in xs], "transitions": transitions_count(xs, name),
                        "acquired": bool(xs), "lost": lost.get(name, 0),
                        "first_t": xs[0].t if xs else None,
                        **({"predicted": [p["lo"], p["hi"]]} if p else {})}
    arping = {}
    for a in obs.arp:
        if a.kind != "arping":
            continue
        arping[a.key] = {"key": a.key, "name": a.name, "ip": a.ip, "t": a.t, "step": a.step,
                         "nodes": sorted(set(a.nodes)), "answering": len(set(a.nodes)), "replies": len(a.nodes)}
    garp: dict[str, dict] = {}
    for a in obs.arp:
        if a.kind == "garp":
            g = garp.setdefault(a.ip, {"count": 0, "nodes": []})
            g["count"] += 1
            g["nodes"] = sorted(set(g["nodes"]) | set(a.nodes))
    checks = {}
    for c in sorted(obs.l2_checks, key=lambda c: c.since):
        checks.setdefault(f"{c.problem} {c.lease}", {"key": f"{c.problem} {c.lease}", "problem": c.problem,
                                                     "lease": c.lease, "node": c.node, "since": c.since,
                                                     "interface": c.interface})
    fpred = {p["step"]: p for p in preds if p.get("kind") == "failover"}
    failovers = []
    running: dict[str, object] = {}
    faults = sorted(obs.faults, key=lambda f: f.t)
    for step in scenario.steps:
        if step.kind == "loop":
            running[step.traffic.name] = step.traffic
        elif step.kind == "await":
            running.pop(step.name, None)
        elif step.kind == "fault" and step.fault.kind != "heal":
            f = next((f for f in faults if f.step == step.index), None)
            if f is None:
                continue
            nxt = next((g.t for g in faults if g.t > f.t and g.kind != "heal"), None)
            lease = f.lease or (lease_of or {}).get(step.fault.holder_of) or next(
                (name for name in sorted(by_lease) if holder_at(obs.leases, name, f.t) == f.node), None)
            for loop in running:
                # keyed by the fault's role (the step as written), not the node: holders differ between runs
                role = step.fault.node or f"holder of {step.fault.holder_of}"
                entry = {"key": f"{loop}/{f.kind} {role}@{f.step}", "fault": f.kind, "node": f.node, "step": f.step,
                         "t": f.t,
                         "lease": lease, **failover_outage(obs.requests, loop, f.t, nxt)}
                after = [x for x in by_lease.get(lease, []) if x.t >= f.t] if lease else []
                entry["new_holder"] = after[0].holder if after else None
                p = fpred.get(step.index)
                if p is not None:
                    entry["predicted_outage_s"] = [p["outage_lo"], p["outage_hi"]]
                    entry["tolerance_s"] = scenario.settings.outage_tolerance_s
                failovers.append(entry)
    return {"leases": leases, "arping": list(arping.values()), "garp": garp, "checks": list(checks.values()),
            "failovers": failovers}


def ks_2samp(a: list[float], b: list[float]) -> dict:
    """Two-sample Kolmogorov–Smirnov test: the statistic D = sup |F_a − F_b| and the
    asymptotic p-value (Kolmogorov's distribution with Stephens' small-sample
    correction, as in Numerical Recipes' ``probks``)."""
    a, b = sorted(a), sorted(b)
    n, m = len(a), len(b)
    if not n or not m:
        return {"statistic": None, "p_value": None, "n": n, "m": m, "why": "an empty sample"}
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(a[i], b[j])
        while i < n and a[i] <= x:
            i += 1
        while j < m and b[j] <= x:
            j += 1
        d = max(d, abs(i / n - j / m))
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 1e-9:
        p = 1.0
    else:
        p, sign, prev = 0.0, 1.0, 0.0
        for k in range(1, 101):
            term = 2 * sign * math.exp(-2 * k * k * lam * lam)
            p += term
            if abs(term) <= 1e-10 * p or abs(term) <= 1e-12 * prev:
                break
            sign, prev = -sign, abs(term)
        else:
            p = 1.0
        p = min(1.0, max(0.0, p))
    return {"statistic": round(d, 6), "p_value": round(p, 6), "n": n, "m": m}
