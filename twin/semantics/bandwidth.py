"""Bandwidth Manager semantics (pure): what Cilium does with a pod's
``kubernetes.io/egress-bandwidth`` annotation, and the byte accounting of a
limited TCP flow.

What Cilium does (``pkg/bandwidth``: ``GetBytesPerSec``; the endpoint's
``EndpointPolicyBandwidthEvent``; ``bpf/lib/edt.h``: ``edt_sched_departure``):

* The annotation is a Kubernetes quantity in **bits** per second
  (``resource.ParseQuantity``): "10M" = 10,000,000; "10Mi" = 10,485,760.
* The map gets ``uint64(q.Value() / 8)`` bytes per second: Go's int64
  division truncates toward zero, and a negative value wraps around to
  nearly 2^64.
* A value that does not parse only produces a debug log: no limit at all.
* No range check.  The BPF program delays each packet by
  ``wire_len * NSEC_PER_SEC / bps``: with 0 bytes per second (a value of 0
  to 7) BPF's division by zero yields 0 and nothing is ever delayed; with a
  wrapped negative value the delay is 0 for any packet.  Both mean no limit.
* Only the egress annotation: ``kubernetes.io/ingress-bandwidth`` is ignored
  (this Cilium version's docs: "not supported").
* Enforced where a pod's packet leaves the node (the native device, EDT +
  fq), so traffic between pods on the same node is not limited.

Byte accounting: EDT (``ctx_wire_len``) and HTB (``qdisc_pkt_len``) both
count the Ethernet frame without FCS, preamble and inter-frame gap, and a
GSO packet as the sum of its segments with their headers.  A TCP segment of
a full-size frame carries ``MSS = MTU - 20 (IPv4) - 20 (TCP) - 12 (TCP
timestamps option, on by default in Linux)`` bytes of payload in
``MTU + 14`` bytes on the wire: at MTU 1500, 1448 / 1514 = 95.64 % of the
limit is the best possible goodput.  This is the overhead behind Cilium's
published "95-98 %" accuracy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from twin.model.objects import Cluster, Pod, Values

from twin.model.objects import EGRESS_ANNOTATION, INGRESS_ANNOTATION  # noqa: E402  (re-exported)

_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": Decimal("0.001"),
}
_QTY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m))?$")
#: kubelet / CNI bandwidth plugin limits (Cilium itself checks neither)
MIN_BPS = 1_000
MAX_BPS = 10**15
_U64 = 2**64
_I64_MAX = 2**63 - 1

#: header bytes of a full-size TCP/IPv4 segment on Ethernet, as the limiters count them
ETH_HEADER = 14
IPV4_HEADER = 20
TCP_HEADER = 20
TCP_TIMESTAMPS = 12
#: the MTU of the project's links (Mininet veth pairs, Linux default)
DEFAULT_MTU = 1500


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


@dataclass(frozen=True)
class EgressLimit:
    """One pod's egress annotation as Cilium applies it."""

    raw: str
    #: the quantity's value in bit/s (None: it does not parse)
    bits_per_s: int | None
    #: what Cilium writes to its throttle map: ``uint64(value / 8)`` (0 when it does not parse)
    bytes_per_s: int
    #: whether any packet is ever delayed
    enforced: bool
    #: why it is not enforced, or what is unusual about it ("" when nothing is)
    note: str = ""

    @property
    def rate_bps(self) -> int | None:
        """The enforced wire rate in bit/s (``bytes_per_s * 8``), None when nothing is limited."""
        return self.bytes_per_s * 8 if self.enforced else None


def cilium_bytes_per_s(bits: int) -> int:
    """``uint64(q.Value() / 8)``: int64 division truncating toward zero, then the
    two's-complement wrap of a negative result (Value() saturates at int64's range)."""
    bits = max(-_I64_MAX - 1, min(_I64_MAX, bits))
    q = abs(bits) // 8
    return (-q) % _U64 if bits < 0 else q


def egress_limit(pod: "Pod", values: "Values") -> EgressLimit | None:
    """The pod's egress limit as Cilium applies it; None when the pod has no annotation."""
    raw = pod.annotation(EGRESS_ANNOTATION)
    return None if raw is None else limit_of(str(raw), values.bandwidth_manager)


def limit_of(raw: str, bandwidth_manager: bool = True) -> EgressLimit:
    """What Cilium does with an ``egress-bandwidth`` annotation of ``raw``."""
    try:
        bits = parse_quantity(raw)
    except ValueError as exc:
        return EgressLimit(raw, None, 0, False,
                           f"{exc}; Cilium logs this at debug level and applies no limit")
    if not bandwidth_manager:
        return EgressLimit(raw, bits, 0, False, "bandwidthManager.enabled is false: the annotation has no effect")
    nbytes = cilium_bytes_per_s(bits)
    if bits < 0:
        return EgressLimit(raw, bits, nbytes, False,
                           f"{raw!r} is negative: Cilium stores uint64({bits}/8) = {nbytes} bytes/s, so the BPF "
                           "delay len*1e9/bps is 0 for every packet: no limit")
    if nbytes == 0:
        return EgressLimit(raw, bits, 0, False,
                           f"{raw!r} = {bits} bit/s is 0 bytes/s after Cilium's /8: the BPF delay len*1e9/0 is 0 "
                           "(BPF division by zero yields 0): no limit")
    note = ""
    if not MIN_BPS <= bits <= MAX_BPS:
        note = (f"{raw!r} = {bits} bit/s is outside 1 kbit/s..1 Pbit/s: kubelet's bandwidth plugin would reject "
                "it, Cilium applies it unchecked")
    return EgressLimit(raw, bits, nbytes, True, note)


def node_limits(cluster: "Cluster", node: str) -> dict[str, EgressLimit]:
    """The enforced limits of the pods on ``node``, by pod key (``ns/name``):
    what the node's agent programs on its native device."""
    out: dict[str, EgressLimit] = {}
    for pod in cluster.pods:
        if pod.node != node:
            continue
        lim = egress_limit(pod, cluster.values)
        if lim is not None and lim.enforced:
            out[pod.key] = lim
    return out


def mss(mtu: int = DEFAULT_MTU, timestamps: bool = True) -> int:
    """TCP payload bytes of a full-size segment on an IPv4 link of ``mtu``."""
    return mtu - IPV4_HEADER - TCP_HEADER - (TCP_TIMESTAMPS if timestamps else 0)


def tcp_payload_fraction(mtu: int = DEFAULT_MTU, timestamps: bool = True) -> float:
    """Payload bytes per counted wire byte of a bulk TCP flow: ``MSS / (MTU + 14)``
    (1448 / 1514 at MTU 1500).  The best goodput a limit of R bit/s allows is
    ``R * tcp_payload_fraction()``."""
    return mss(mtu, timestamps) / (mtu + ETH_HEADER)
