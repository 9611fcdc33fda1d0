"""One diff primitive: keyed tables of records, compared field by field with tolerances.

Used for twin-vs-real and for before-vs-after (verdict changes along a run).
A comparison refuses to silently drop rows: a key present on one side only is
itself a disagreement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class Field:
    name: str
    # equal(a, b) -> bool; default exact equality, skipping when either side is None
    equal: Callable[[object, object], bool] | None = None
    required: bool = True  # compare even when one side is None


def within(tolerance: float) -> Callable[[object, object], bool]:
    return lambda a, b: abs(float(a) - float(b)) <= tolerance


def diff_tables(reference: Iterable[dict], candidate: Iterable[dict], key: str, fields: list[Field],
                names: tuple[str, str] = ("twin", "real"), explain: Callable[[dict, dict | None], str] | None = None) -> list[dict]:
    ref = {r[key]: r for r in reference}
    cand = {r[key]: r for r in candidate}
    out: list[dict] = []
    for k in sorted(set(ref) | set(cand)):
        a, b = ref.get(k), cand.get(k)
        if a is None or b is None:
            out.append({"key": k, "field": "<row>", names[0]: a is not None, names[1]: b is not None,
                        "why": f"only the {names[0] if a else names[1]} produced this record"})
            continue
        for f in fields:
            va, vb = a.get(f.name), b.get(f.name)
            if (va is None or vb is None) and not f.required:
                continue
            same = (f.equal(va, vb) if (f.equal and va is not None and vb is not None) else va == vb)
            if not same:
                out.append({"key": k, "field": f.name, names[0]: va, names[1]: vb,
                            "why": explain(a, b) if explain else ""})
    return out


def verdict_changes(records: Iterable[dict]) -> list[dict]:
    """Where the same flow (src, dst, protocol, port, HTTP method/path) changed verdict between probes."""
    last: dict = {}
    out = []
    for r in sorted(records, key=lambda r: (r["step"], r["time"])):
        flow = (r["src"], r["dst"], r["protocol"], r["port"], r.get("http_method"), r.get("http_path"))
        prev = last.get(flow)
        if prev is not None and prev["verdict"] != r["verdict"]:
            out.append({"flow": f"{r['src']} → {r['dst']} {r['protocol']}/{r['port']}"
                                + (f" {r['http_method']} {r['http_path']}" if r.get("http_method") else ""),
                        "before": prev["verdict"], "before_step": prev["step"],
                        "after": r["verdict"], "after_step": r["step"], "probe": r["probe"]})
        last[flow] = r
    return out
