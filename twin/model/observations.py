"""The one observation schema both backends produce (Hubble-like flow records)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class FlowRecord:
    """One probe's outcome towards one destination (one backend for a service).

    ``key`` identifies the record across backends: the probe's name plus the
    destination it reached (the backend pod for a service probe).
    """

    probe: str
    step: int
    time: float  # seconds since scenario start (virtual for the twin, wall for real)
    src: str  # ns/pod
    dst: str  # ns/pod, or an IP for destinations outside the cluster
    dst_ip: str
    protocol: str  # TCP, UDP, ICMP
    port: int
    verdict: str  # FORWARDED | DROPPED | ERROR
    drop_reason: str | None = None  # e.g. "Policy denied"
    drop_reason_code: int = 0
    layer: str = "L3/L4"
    http_status: int | None = None
    http_method: str | None = None
    http_path: str | None = None
    body: str | None = None  # first line(s) of an HTTP answer
    src_identity: int | None = None
    dst_identity: int | None = None
    node: str = ""  # node where the verdict was taken
    direction: str | None = None  # where a drop happened: ingress | egress
    explanation: str = ""
    service: str | None = None  # ns/name when probed through a service
    latency_s: float | None = None
    evidence: tuple[str, ...] = ()  # what the real side saw (tool exit, BPF events)

    @property
    def key(self) -> str:
        return f"{self.probe}→{self.dst}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["key"] = self.key
        d["evidence"] = list(self.evidence)
        return d
