"""Plain-text Bandwidth Manager section of a run's result: which mechanism limited
traffic on each backend, and one line per throughput record — the sender's limit,
the twin's point prediction with its interval, the real goodput, real/predicted,
retransmits and the mechanism; Jain's fairness for parallel streams and how many
sampling intervals fell inside the twin's interval.

A pure function of the result dict (``result.json``).  Shapes read:

* ``result["throughput"]`` (written by :func:`harness.runner.diff_throughput`):
  ``{tolerance, mechanism: {backend: str}, reason: {backend: str}, records: [{key,
  sender, receiver, parallel, same_node: {twin, real}, limit_bps: {twin, real},
  twin: {bps, lo, hi} | None, real: bps | None, ratio, inside, retransmits,
  mechanism: {twin, real}, fairness: {twin, real}, intervals: {compared, inside}}]}``
* without it (an older result), each backend's ``observations[NAME]["throughput"]``
  (ThroughputRecord dicts) and ``["bandwidth"]``.
"""
from __future__ import annotations


def mbit(bps) -> str:
    """bit/s as Mbit/s with three decimals (``?`` when unknown)."""
    return "?" if bps is None else f"{float(bps) / 1e6:.3f}"


def limit_text(limit_bps, same_node) -> str:
    if limit_bps is None:
        return "unlimited"
    text = f"limit {mbit(limit_bps)} Mbit/s"
    return text + " (same node: not applied)" if same_node else text


def twin_text(rate: dict | None) -> str:
    if not rate:
        return "twin -"
    lo, hi = rate.get("lo"), rate.get("hi")
    span = f" [{mbit(lo)}, {mbit(hi) if hi is not None else '∞'}]" if lo is not None or hi is not None else ""
    return f"twin {mbit(rate.get('bps'))}{span} Mbit/s"


def record_line(row: dict) -> str:
    """One line of a throughput record (a row of ``result["throughput"]["records"]``)."""
    pick = lambda d: (d.get("real") if d.get("real") is not None else d.get("twin")) if isinstance(d, dict) else d  # noqa: E731
    streams = f", {row['parallel']} streams" if row.get("parallel", 1) > 1 else ""
    parts = [f"{row['key']} ({row['sender']} → {row['receiver']}{streams})",
             limit_text(pick(row.get("limit_bps") or {}), pick(row.get("same_node") or {})),
             twin_text(row.get("twin")),
             f"real {mbit(row.get('real'))} Mbit/s" if row.get("real") is not None else "real -",
             f"ratio {row['ratio']:.3f}" if row.get("ratio") is not None else "ratio -",
             f"retransmits {row['retransmits']}" if row.get("retransmits") is not None else "retransmits -",
             f"mechanism {pick(row.get('mechanism') or {}) or '-'}"]
    fair = (row.get("fairness") or {}).get("real")
    if row.get("parallel", 1) > 1 and fair is not None:
        parts.append(f"fairness {fair:.3f}")
    iv = row.get("intervals") or {}
    if iv.get("compared"):
        parts.append(f"intervals {iv['inside']}/{iv['compared']} inside")
    mark = "" if row.get("inside") in (None, True) else "  OUTSIDE"
    return "; ".join(parts) + mark


def _rows_from_observations(result: dict) -> list[dict]:
    rows: dict[str, dict] = {}
    for name, obs in (result.get("observations") or {}).items():
        for r in obs.get("throughput") or []:
            row = rows.setdefault(r["key"], {"key": r["key"], "sender": r["sender"], "receiver": r["receiver"],
                                             "parallel": r["parallel"], "limit_bps": {}, "same_node": {},
                                             "mechanism": {}, "twin": None, "real": None,
                                             "retransmits": None, "ratio": None})
            row["limit_bps"][name], row["same_node"][name] = r["limit_bps"], r["same_node"]
            row["mechanism"][name] = r["mechanism"]
            if name == "twin":
                row["twin"] = r["goodput"]
            else:
                row["real"], row["retransmits"] = r["goodput"]["bps"], r.get("retransmits")
    return list(rows.values())


def throughput_lines(result: dict) -> list[str]:
    """The Bandwidth Manager lines of ``twin run``'s summary (empty without throughput records)."""
    sec = result.get("throughput")
    rows = sec["records"] if sec else _rows_from_observations(result)
    if not rows:
        return []
    if sec:
        mech, reason = sec.get("mechanism") or {}, sec.get("reason") or {}
    else:
        obs = result.get("observations") or {}
        mech = {n: (o.get("bandwidth") or {}).get("mechanism") for n, o in obs.items()}
        reason = {n: (o.get("bandwidth") or {}).get("reason") for n, o in obs.items()}
    out = []
    for name in mech:
        why = f" ({reason[name]})" if reason.get(name) else ""
        out.append(f"  bandwidth manager [{name}]: mechanism {mech[name] or '-'}{why}")
    tol = f" (tolerance ±{sec['tolerance']:g} around the twin's interval)" if sec and sec.get("tolerance") is not None else ""
    out.append(f"  throughput{tol}:")
    out += [f"    {record_line(r)}" for r in rows]
    return out
