"""Text forms of the CLI's answers (``twin show``, ``verdict``, ``truth-table``);
the JSON forms are the data themselves."""
from __future__ import annotations

import csv
import io


def show_text(data: dict) -> str:
    lines = []
    for p in data["pods"]:
        bw = f" egress≤{p['egress_bandwidth_bps']} bit/s" if p["egress_bandwidth_bps"] else ""
        lines.append(f"pod {p['namespace']}/{p['name']:30} {p['node']:8} {p['ip']:15} id={p['identity']}{bw}")
    for s in data["services"]:
        lb = f" lb={','.join(s['lb_ips'])}" if s["lb_ips"] else ""
        l2 = f" l2={','.join(s['l2']['candidate_nodes'])}" if s["l2"]["announced"] else ""
        lines.append(f"svc {s['namespace']}/{s['name']:30} {s['type']:12} {s['cluster_ip']}{lb}{l2} → {len(s['backends'])} backend(s)")
    for p in data.get("pools") or []:
        state = "disabled" if p["disabled"] else (f"CONFLICTING with {', '.join(p['conflicts_with'])}: allocates nothing"
                                                  if p["conflicting"] else "active")
        lines.append(f"pool {p['name']:30} {state}; {p['ips_available']} of {p['ips_total']} addresses available")
    lines += l2_text(data)
    for f in data["findings"]:
        lines.append(f"{f['severity']}: {f['object']} {f['field']}: {f['message']}")
    return "\n".join(lines)


def _secs(x: float) -> str:
    return f"{x * 1000:g}ms" if x < 1 else f"{x:g}s"


def l2_text(data: dict) -> list[str]:
    """The L2 section of ``twin show``: effective timings, then per LoadBalancer service
    (or service with external IPs) whether it is announced, by which candidates, and why not."""
    l2 = data.get("l2") or {}
    svcs = [s for s in data["services"] if s["type"] == "LoadBalancer" or s.get("external_ips")]
    if not svcs and not l2.get("enabled"):
        return []
    t = l2.get("timings") or {}
    out = ["", f"L2 announcements: {'enabled' if l2.get('enabled') else 'disabled'}"]
    if t:
        out.append(f"  lease {_secs(t['leaseDuration'])}, renew deadline {_secs(t['renewDeadline'])}, "
                   f"retry {_secs(t['retryPeriod'])}; API client {t['qps']:g} qps, burst {t['burst']}")
        for note in t.get("rewrites") or []:
            out.append(f"  rewritten by Cilium: {note}")
    for s in svcs:
        a = s["l2"]
        ips = ", ".join(s["lb_ips"] + [i for i in s.get("external_ips", []) if i not in s["lb_ips"]]) or "no IP"
        head = f"  {s['namespace']}/{s['name']} ({ips})"
        if a["announced"]:
            where = "; ".join(f"{n} on {', '.join(i)}" for n, i in a["interfaces"].items())
            out.append(f"{head}: announced, lease {a['lease']}; candidates: {where}")
        else:
            out.append(f"{head}: not announced: {a['reason']}")
    return out


def verdict_text(src: str, dst: str, verdict: dict, rows: list[dict]) -> str:
    """One line per destination (per backend for a service), or the aggregate when there is none."""
    return "\n".join(f"{r['verdict']:9} {src} → {r.get('destination', dst)}: {r['explanation']}" for r in rows or [verdict])


def truth_table_text(rows: list[dict]) -> str:
    return "\n".join(f"{r['src']:40} → {r['dst']:40} {r['protocol']}/{r['port']:<5} {r['verdict']}" for r in rows)


def truth_table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["src"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
