"""Bandwidth annotations: Kubernetes quantities in bits per second."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": Decimal("0.001"),
}
_QTY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m))?$")
#: kubelet / CNI bandwidth plugin limits (Cilium itself checks neither)
MIN_BPS = 1_000
MAX_BPS = 10**15


def parse_quantity(text: str) -> int:
    """Parse a Kubernetes quantity ("10M", "10Mi", "1.5G", "1e6") into an integer (rounded up)."""
    m = _QTY.match(str(text).strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {text!r} (examples: 10M, 10Mi, 1G)")
    num, exp, suf = m.groups()
    try:
        value = Decimal(num) * (Decimal(10) ** int(exp[1:]) if exp else Decimal(_SUFFIX[suf or ""]))
    except InvalidOperation as exc:  # pragma: no cover - regex guards this
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    whole = int(value.to_integral_value(rounding="ROUND_CEILING"))
    return whole
