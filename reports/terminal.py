"""Plain-text summary of a scenario result (what `twin run` prints)."""
from __future__ import annotations


def render(result: dict) -> str:
    lines = [f"scenario {result['scenario']} ({', '.join(result['backends'])})"]
    for name, obs in result["observations"].items():
        if obs.get("skipped"):
            lines.append(f"  {name}: skipped: {obs['skipped']}")
            continue
        flows = obs["flows"]
        fwd = sum(1 for f in flows if f["verdict"] == "FORWARDED")
        lines.append(f"  {name}: {len(flows)} flow records, {fwd} forwarded, {len(flows) - fwd} dropped")
    shown = next((o["flows"] for o in result["observations"].values() if not o.get("skipped")), [])
    for f in shown:
        extra = f" HTTP {f['http_status']}" if f.get("http_status") else ""
        reason = f" ({f['drop_reason']})" if f.get("drop_reason") else ""
        lines.append(f"    step {f['step']:>2} {f['probe']:<28} {f['src']} → {f['dst']} {f['protocol']}/{f['port']}: "
                     f"{f['verdict']}{reason}{extra}")
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
    elif len([o for o in result["observations"].values() if not o.get("skipped")]) > 1:
        lines.append("  AGREE: every flow record matches between the backends")
    lines.append(f"  result: {'ok' if result['ok'] else 'FAILED'}")
    return "\n".join(lines)
