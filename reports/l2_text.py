"""Plain-text L2 sections of a run's result: who holds which lease since when, ARP
replies per ``arping`` step (MAC → node), gratuitous ARP, faults, the L2
consistency check, and each failover's measured outage against the twin's
interval.  Pure functions of the result dict (``result.json``); nothing here
re-runs or re-derives the twin.

Shapes read (per backend, ``result["observations"][NAME]``):

* ``leases``: LeaseTransition dicts {lease, index, t, holder, previous, transitions}
* ``arp``: ArpObservation dicts {name, kind (arping|garp), t, ip, nodes, macs, step, index}
* ``faults``: FaultRecord dicts {t, kind, node, step, lease}
* ``l2_checks``: L2Check dicts {problem, lease, node, since, interface, detail}
* ``predictions``: dicts with ``kind: failover`` {step, fault, node, lease, loop,
  outage_lo, outage_hi, persists, samples, derivation} and ``kind:
  lease-transitions`` / ``lease-losses`` {lease (a name or ``*`` for all), lo, hi}
* ``traffic``: RequestRecord dicts {name, i, t, outcome, ...} (the failover's loop)
* ``events``: ``lease-lost`` events {t, event, lease, ...} (leaderships lost)
* ``measurements.failovers`` (optional): [{step, loop, outage_s, persisting, ...}] when the
  harness measured the outage; otherwise it is read from the loop's requests
  with the twin's definition (``twin.semantics.failover.measured_outage``):
  from the first failed request after the fault to the first answered one
  after the last failure (still failing at the end: the outage persists).
"""
from __future__ import annotations


def _s(t) -> str:
    return "?" if t is None else f"{float(t):.3f} s"


def _num(x) -> str:
    return "?" if x is None else f"{float(x):.3g}"


def current_holders(leases: list[dict]) -> list[dict]:
    """The last transition of each lease (its holder now and since when), by lease name."""
    last: dict[str, dict] = {}
    for rec in sorted(leases, key=lambda r: (r.get("t", 0.0), r.get("index", 0))):
        last[rec["lease"]] = rec
    return [last[k] for k in sorted(last)]


def _predictions(result: dict) -> list[dict]:
    """Every backend's predictions (the twin's), without duplicates, in order."""
    seen, out = set(), []
    for obs in result.get("observations", {}).values():
        for p in obs.get("predictions") or []:
            key = (p.get("kind"), p.get("step"), p.get("lease"), p.get("node"))
            if p.get("kind") in ("failover", "lease-transitions", "lease-losses") and key not in seen:
                seen.add(key)
                out.append(p)
    return out


def measured_failover(obs: dict, pred: dict, request_timeout_s: float = 1.0) -> dict | None:
    """The outage one backend measured for a failover prediction (None: that backend has
    no record of the fault step)."""
    for m in (obs.get("measurements") or {}).get("failovers") or []:
        if m.get("step") == pred.get("step") and m.get("outage_s") is not None \
                and m.get("loop", pred.get("loop")) == pred.get("loop"):
            return {"outage_s": float(m["outage_s"]), "failures": m.get("failures"), "requests": m.get("requests"),
                    "persists": bool(m.get("persisting", m.get("persists"))), "from": "harness"}
    fault = next((f for f in obs.get("faults") or [] if f.get("step") == pred.get("step")), None)
    if fault is None:
        return None
    rows = sorted((r["t"], r.get("outcome") == "answered") for r in obs.get("traffic") or []
                  if r.get("name") == pred.get("loop"))
    after = [(t, ok) for t, ok in rows if t >= fault["t"]]
    failures = [t for t, ok in after if not ok]
    out = {"failures": len(failures), "requests": len(after), "from": "requests", "persists": False,
           "outage_s": 0.0}
    if failures:
        recovered = next((t for t, ok in rows if ok and t > failures[-1]), None)
        out["persists"] = recovered is None
        end = failures[-1] + request_timeout_s if recovered is None else recovered
        out["outage_s"] = round(end - failures[0], 6)
    return out


def _inside(x: float, lo, hi, tol: float = 0.0) -> bool:
    return lo is not None and hi is not None and float(lo) - tol <= x <= float(hi) + tol


def lease_lines(name: str, obs: dict) -> list[str]:
    recs = obs.get("leases") or []
    if not recs:
        return []
    out = [f"  {name}: leases (holder now, since when; {len(recs)} transition record(s) in the run):"]
    for r in current_holders(recs):
        prev = f", took it from {r['previous']}" if r.get("previous") else ""
        out.append(f"    {r['lease']:45} {r['holder']:10} since {_s(r['t'])}{prev} (leaseTransitions {r.get('transitions', 0)})")
    return out


def arp_lines(name: str, obs: dict) -> list[str]:
    out = []
    for a in obs.get("arp") or []:
        macs, nodes = list(a.get("macs") or []), list(a.get("nodes") or [])
        seen: dict[str, int] = {}
        for who in ([f"{m} ({n})" if n != m else m for m, n in zip(macs, nodes)] if macs else nodes):
            seen[who] = seen.get(who, 0) + 1
        pairs = ", ".join(f"{who} ×{k}" if k > 1 else who for who, k in seen.items())
        if a.get("kind") == "garp":
            out.append(f"  {name}: gratuitous ARP for {a['ip']} at {_s(a['t'])} from {pairs or '?'}")
        else:
            who = f"replies from {pairs}" if (macs or nodes) else "NO reply"
            out.append(f"  {name}: arping {a['name']} (step {a.get('step')}) who-has {a['ip']} at {_s(a['t'])}: {who}")
    return out


def fault_lines(name: str, obs: dict) -> list[str]:
    out = []
    for f in obs.get("faults") or []:
        lease = f" (holder of {f['lease']})" if f.get("lease") else ""
        out.append(f"  {name}: fault {f['kind']} at node {f['node']}{lease}, step {f.get('step')}, at {_s(f['t'])}")
    return out


def check_lines(name: str, obs: dict) -> list[str]:
    out = []
    for c in obs.get("l2_checks") or []:
        iface = f" interface {c['interface']}" if c.get("interface") else ""
        detail = f": {c['detail']}" if c.get("detail") else ""
        out.append(f"  {name}: L2 CHECK {c['problem']}: node {c['node']} holds {c['lease']}{iface} "
                   f"since {_s(c['since'])}{detail}")
    return out


def prediction_lines(result: dict) -> list[str]:
    """Each failover: the twin's interval and every backend's measured outage, in or out;
    each lease-transition count prediction against every backend's count."""
    out = []
    observations = result.get("observations", {})
    for p in _predictions(result):
        if p["kind"] == "failover":
            lo, hi = p.get("outage_lo"), p.get("outage_hi")
            tol = float(p.get("tolerance_s") or 0.0)
            pred_persists = " (twin predicts it persists)" if p.get("persists") else ""
            samples = sorted(x for x in p.get("samples") or [] if isinstance(x, (int, float)))
            if samples:
                pred_persists += f" [{len(samples)} twin reruns, median {samples[len(samples) // 2]:.3f} s]"
            head = (f"  failover step {p.get('step')} ({p.get('fault')} {p.get('node')}, {p.get('lease')}): "
                    f"twin predicts outage {_num(lo)}–{_num(hi)} s" + (f" ±{tol:g}" if tol else "") + pred_persists)
            parts = []
            for name, obs in observations.items():
                m = measured_failover(obs, p)
                if m is None:
                    continue
                verdict = "inside" if _inside(m["outage_s"], lo, hi, tol) else "OUTSIDE"
                persists = ", still failing at the end" if m["persists"] else ""
                parts.append(f"{name} measured {m['outage_s']:.3f} s ({m['failures']} of {m['requests']} requests "
                             f"failed{persists}) {verdict}")
            out.append(head + ("; " + "; ".join(parts) if parts else ""))
            if p.get("derivation"):
                out.append(f"    derivation: {p['derivation']}")
        else:
            lo, hi = p.get("lo"), p.get("hi")
            lease = p.get("lease")
            parts = []
            for name, obs in observations.items():
                if p["kind"] == "lease-transitions":
                    # the Lease's own leaseTransitions (holder changes after the first acquisition),
                    # which is what the twin predicts; the holder records are shown beside it
                    recs = [r for r in obs.get("leases") or [] if lease == "*" or r.get("lease") == lease]
                    last: dict = {}
                    for r in recs:
                        last[r["lease"]] = max(last.get(r["lease"], 0), int(r.get("transitions", 0)))
                    n = sum(last.values())
                    parts.append(f"{name} counted {n} {'inside' if _inside(n, lo, hi) else 'OUTSIDE'} "
                                 f"({len(recs)} holder record(s))")
                    continue
                else:
                    n = sum(1 for e in obs.get("events") or []
                            if e.get("event") == "lease-lost" and (lease == "*" or e.get("lease") == lease))
                parts.append(f"{name} counted {n} {'inside' if _inside(n, lo, hi) else 'OUTSIDE'}")
            what = "lease transitions" if p["kind"] == "lease-transitions" else "leaderships lost"
            of = "all leases" if lease == "*" else lease
            out.append(f"  {what} of {of}: twin predicts {lo}–{hi}" + ("; " + "; ".join(parts) if parts else ""))
    return out


def unpredicted_failover_lines(result: dict) -> list[str]:
    """Failovers a backend measured (``measurements.failovers``) that no twin prediction covers
    (e.g. a run on the real side alone)."""
    predicted = {(p.get("step"), p.get("loop")) for p in _predictions(result) if p.get("kind") == "failover"}
    out = []
    for name, obs in result.get("observations", {}).items():
        for m in (obs.get("measurements") or {}).get("failovers") or []:
            if (m.get("step"), m.get("loop")) in predicted or m.get("outage_s") is None:
                continue
            persists = ", still failing at the end" if m.get("persisting") else ""
            new = f"; new holder {m['new_holder']}" if m.get("new_holder") else ""
            out.append(f"  {name}: failover step {m.get('step')} ({m.get('fault')} {m.get('node')}, loop "
                       f"{m.get('loop')}): outage {float(m['outage_s']):.3f} s ({m.get('failures')} of "
                       f"{m.get('requests')} requests failed{persists}){new}; no twin prediction in this result")
    return out


def l2_lines(result: dict) -> list[str]:
    """Every L2 section of a result, per backend, then the predictions against the measurements."""
    out: list[str] = []
    for name, obs in result.get("observations", {}).items():
        out += lease_lines(name, obs) + arp_lines(name, obs) + fault_lines(name, obs) + check_lines(name, obs)
    return out + prediction_lines(result) + unpredicted_failover_lines(result)
