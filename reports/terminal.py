"""Plain-text summary of a scenario result (what `twin run` prints)."""
from __future__ import annotations

from reports.bandwidth_text import throughput_lines
from reports.l2_text import l2_lines


def render(result: dict) -> str:
    lines = [f"scenario {result['scenario']} ({', '.join(result['backends'])})"]
    for name, reason in (result.get("unavailable") or {}).items():
        lines.append(f"  {name}: UNAVAILABLE (requested but could not run): {reason}")
    for name, reason in (result.get("failed") or {}).items():
        lines.append(f"  {name}: FAILED during the run: {reason}")
    for name, reason in (result.get("degraded") or {}).items():
        lines.append(f"  {name}: skipped, the demo runs without it: {reason}")
    for name, obs in result["observations"].items():
        flows = obs["flows"]
        fwd = sum(1 for f in flows if f["verdict"] == "FORWARDED")
        if flows or not (obs.get("traffic") or obs.get("throughput")):
            lines.append(f"  {name}: {len(flows)} flow records, {fwd} forwarded, {len(flows) - fwd} dropped")
    shown = next((o["flows"] for o in result["observations"].values()), [])
    for f in shown:
        extra = f" HTTP {f['http_status']}" if f.get("http_status") else ""
        reason = f" ({f['drop_reason']})" if f.get("drop_reason") else ""
        lines.append(f"    step {f['step']:>2} {f['probe']:<28} {f['src']} → {f['dst']} {f['protocol']}/{f['port']}: "
                     f"{f['verdict']}{reason}{extra}")
    for name, obs in result["observations"].items():
        m = obs.get("measurements") or {}
        for req, r in (m.get("requests") or {}).items():
            shares = ", ".join(f"{k.split('/')[-1]} {v}" for k, v in sorted(r.get("backends", {}).items()))
            bad = {k: v for k, v in r.get("outcomes", {}).items() if k != "answered"}
            chi = (f"; chi-square p={r['chi2']['p_value']}" if "p_value" in r["chi2"] else f"; chi-square skipped: {r['chi2']['skipped']}") \
                if r.get("chi2") else ""
            lines.append(f"  {name}: {req}: answered by {shares or 'nobody'}" + (f"; failed {bad}" if bad else "") + chi)
        for k in m.get("kills") or []:
            pred = f" (predicted {k['predicted_outage_s'][0]}–{k['predicted_outage_s'][1]} s ±{k.get('tolerance_s')})" \
                if k.get("predicted_outage_s") else ""
            lines.append(f"  {name}: kill {k['pod']}: {k['failures']} of {k['requests']} requests failed, "
                         f"outage {k['outage_s']} s{pred}" + (f", back after restart in {k['readmit_s']} s" if k.get("readmit_s") is not None else ""))
        for h in m.get("holds") or []:
            lines.append(f"  {name}: long-lived connection {h['hold']} to {h.get('backend')}: {h['state']}")
        for sc in m.get("syscalls") or []:
            lines.append(f"  {name}: {sc['name']}: connect({sc['connect']}) getsockname→{sc['getsockname_ip']} "
                         f"getpeername→{sc['getpeername']}; capture saw {', '.join(sc.get('capture_ips', []))}"
                         + (" INCLUDING the ClusterIP" if sc.get("capture_has_frontend") else " (never the ClusterIP)"))
    lines += throughput_lines(result)
    lines += l2_lines(result)
    for ch in result.get("verdict_changes", []):
        lines.append(f"  verdict changed: {ch['flow']}: {ch['before']} (step {ch['before_step']}) → "
                     f"{ch['after']} (step {ch['after_step']})")
    for e in result.get("expectation_failures", []):
        lines.append(f"  EXPECTATION FAILED [{e['backend']}] {e['probe']} → {e['dst']}: expected {e['field']}={e['expected']!r}, got {e['got']!r}")
    dis = result.get("disagreements", [])
    if dis:
        lines.append(f"  DISAGREE: {len(dis)} difference(s) between backends")
        for d in dis:
            names = [k for k in d if k not in ("key", "field", "why")]
            vals = ", ".join(f"{n}={d[n]!r}" for n in names)
            lines.append(f"    {d['key']} {d['field']}: {vals}" + (f" — {d['why']}" if d.get("why") else ""))
    elif len(result["observations"]) > 1:
        lines.append("  AGREE: no disagreement between the backends (flow records and service observations)")
    verdict = "ok" if result["ok"] else "FAILED"
    if result.get("unavailable"):
        verdict += f" (requested backend(s) could not run: {', '.join(result['unavailable'])})"
    elif result.get("degraded"):
        verdict += f" (on {', '.join(n for n in result['observations'])} only)"
    lines.append(f"  result: {verdict}")
    return "\n".join(lines)
