"""Label selectors (matchLabels, matchExpressions)."""
from __future__ import annotations

from typing import Any

from twin.model.load.context import Ctx
from twin.model.objects import LabelSelector, Requirement, labels_of

OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


def parse_selector(ctx: Ctx, data: Any, path: tuple) -> LabelSelector:
    if not isinstance(data, dict):
        return LabelSelector()
    reqs = []
    for i, expr in enumerate(data.get("matchExpressions") or []):
        p = path + ("matchExpressions", i)
        op = expr.get("operator")
        values = tuple(str(v) for v in (expr.get("values") or []))
        if not expr.get("key"):
            ctx.err(p + ("key",), "is required")
            continue
        if op not in OPERATORS:
            ctx.err(p + ("operator",), f"must be one of {sorted(OPERATORS)}, got {op!r}")
            continue
        if op in ("In", "NotIn") and not values:
            ctx.err(p + ("values",), f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            ctx.err(p + ("values",), f"must be empty for operator {op}, got {list(values)}")
        reqs.append(Requirement(str(expr["key"]), op, values))
    return LabelSelector(labels_of(data.get("matchLabels")), tuple(reqs))


def selector_matches(sel: LabelSelector, labels: tuple) -> bool:
    """Kubernetes label-selector semantics over plain labels."""
    return sel.matches(dict(labels))
