"""The one observation schema both backends produce.

Every record has a ``key`` that identifies it across backends, so the harness
diffs by key everywhere (never by position).  ``as_dict`` gives the JSON form
written to ``result.json`` (with the key included).

* :class:`FlowRecord`   one probe towards one destination (Hubble-like)
* :class:`RequestRecord` one request of a ``requests``/``loop`` step through a frontend
* :class:`HoldResult`   a ``check`` of a long-lived connection
* :class:`SyscallFacts` what strace/tcpdump show for one request through a ClusterIP
* :class:`KillRecord`   a ``kill``/``restart`` step and when it happened
* :class:`LeaseTransition` a Lease changing holder (or being lost), as the API server saw it
* :class:`ArpObservation` ARP seen by the external host: an ``arping`` step's replies, or a gratuitous ARP
* :class:`FaultRecord`  a ``fault`` step: what was done to which node, and when
* :class:`L2Check`      the consistency check's finding: a lease holder that cannot answer ARP
* :class:`ThroughputRecord` a ``throughput`` step: goodput measured (real) or predicted with an interval (twin)
* :class:`RateInterval` one sampling interval of a throughput step
* :class:`Event`        one line of a backend's time-ordered event log
* :class:`Observations` everything one backend observed in one run
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


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


@dataclass(frozen=True)
class RequestRecord:
    """One request of a ``requests``/``loop`` step through a service frontend.

    ``outcome``: ``answered`` | ``refused`` | ``timeout`` | ``EHOSTUNREACH`` | ``error``.
    """

    name: str  # the traffic step's name
    i: int  # index of the request within the step
    t: float  # start, seconds since scenario start
    service: str  # ns/name
    frontend: str  # ip:port
    backend: str | None  # ns/pod that answered (None: nobody, or the answer does not say)
    outcome: str
    status: int | None = None  # HTTP status

    @property
    def key(self) -> str:
        return f"{self.name}#{self.i}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class HoldResult:
    """A ``check`` step on a long-lived connection: ``alive`` or ``closed``."""

    hold: str
    backend: str | None
    state: str
    t: float
    why: str | None = None
    step: int = -1  # the check step (or the hold step, when no connection could be held)

    @property
    def key(self) -> str:
        return f"{self.hold}@{self.step}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class SyscallFacts:
    """What the client's syscalls and a capture inside its pod show for one request."""

    name: str
    connect: str | None  # ip:port passed to connect()
    getsockname_ip: str | None
    getpeername: str | None  # ip:port returned by getpeername()
    capture_ips: tuple[str, ...] = ()
    capture_has_frontend: bool = False
    outcome: str | None = None
    evidence: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.name

    def as_dict(self) -> dict:
        d = asdict(self)
        d["capture_ips"], d["evidence"], d["key"] = list(self.capture_ips), list(self.evidence), self.key
        return d


@dataclass(frozen=True)
class KillRecord:
    """A ``kill`` or ``restart`` step: which pod's server, and when (seconds since start)."""

    t: float
    action: str  # kill | restart
    pod: str
    step: int = -1

    @property
    def key(self) -> str:
        return f"{self.action} {self.pod}@{self.step}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class LeaseTransition:
    """A Lease's holder changed at ``t`` (seconds since scenario start), as written to
    the API server: ``holder`` took it from ``previous`` (None: it was new or free).
    ``transitions`` is the Lease's ``leaseTransitions`` after the write.
    ``index`` numbers the transitions of one lease from 0 (the first acquisition)."""

    lease: str  # cilium-l2announce-<ns>-<svc>
    index: int
    t: float
    holder: str
    previous: str | None = None
    transitions: int = 0

    @property
    def key(self) -> str:
        return f"{self.lease}#{self.index}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class ArpObservation:
    """ARP seen by the external host.

    ``kind``: ``arping`` (the replies to an ``arping`` step, in arrival order) or
    ``garp`` (a gratuitous ARP for ``ip`` that arrived at ``t``).  ``nodes`` are the
    repliers' MACs resolved to node names (a MAC of no node stays as the MAC)."""

    name: str  # the arping step's name, or "garp"
    kind: str  # arping | garp
    t: float
    ip: str
    nodes: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    step: int = -1
    index: int = 0  # garp: numbered per ip from 0

    @property
    def key(self) -> str:
        return f"{self.name}@{self.step}" if self.kind == "arping" else f"garp {self.ip}#{self.index}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nodes"], d["macs"], d["key"] = list(self.nodes), list(self.macs), self.key
        return d


@dataclass(frozen=True)
class FaultRecord:
    """A ``fault`` step: ``kind`` done to ``node`` at ``t`` (``lease``: the lease whose
    holder was chosen, for ``holder_of``)."""

    t: float
    kind: str
    node: str
    step: int = -1
    lease: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind} {self.node}@{self.step}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class L2Check:
    """A finding of the L2 consistency check (lease holders vs programmed responders
    vs interfaces), run on every node: ``problem`` is ``responder-missing`` (the node
    holds ``lease`` but answers ARP for none of its IPs) or ``interface-down`` (the
    node holds ``lease`` but the selected interface ``interface`` is down:
    cilium#35507), ``since`` when it was first seen."""

    problem: str
    lease: str
    node: str
    since: float
    interface: str | None = None
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.problem} {self.lease} {self.node}"

    def as_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass(frozen=True)
class Rate:
    """A goodput in bit/s; the twin's carries its predicted interval ``[lo, hi]``."""

    bps: float
    lo: float | None = None
    hi: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RateInterval:
    """Goodput (all streams together) over ``[t0, t1)`` seconds since the step started."""

    t0: float
    t1: float
    rate: Rate

    def as_dict(self) -> dict:
        return {"t0": self.t0, "t1": self.t1, **self.rate.as_dict()}


@dataclass(frozen=True)
class ThroughputRecord:
    """A ``throughput`` step: a bulk TCP transfer from ``sender`` to ``receiver``.

    Goodput is payload bits per second at the receiver (iperf3's
    ``sum_received``), over the whole step (``goodput``, all streams), per
    stream (``streams``, in stream order) and per sampling interval
    (``intervals``).  The real side fills ``bps`` from iperf3's JSON and
    ``retransmits``; the twin fills ``bps`` with its point prediction and
    ``lo``/``hi`` with the predicted interval, and says in ``basis`` what the
    prediction rests on (limit, mechanism, calibration profile).

    ``limit_bps`` is the sender's enforced egress limit when the step started
    as the backend's own state had it (None: unlimited); ``limited`` whether
    the data path crosses the sender's native device (False for pods on one
    node).  ``mechanism``: ``edt-fq`` | ``htb`` (real), ``model`` (twin).
    """

    name: str
    step: int
    t: float  # start, seconds since scenario start
    sender: str  # ns/pod
    receiver: str  # ns/pod
    direction: str  # reverse | forward
    parallel: int
    duration_s: float
    same_node: bool
    limit_bps: int | None
    goodput: Rate
    streams: tuple[Rate, ...] = ()
    intervals: tuple[RateInterval, ...] = ()
    retransmits: int | None = None
    mechanism: str = ""
    basis: str = ""
    evidence: tuple[str, ...] = ()
    #: real side: CPU seconds of the two iperf3 processes (user + system, as iperf3 reports them)
    cpu_s: float | None = None

    @property
    def key(self) -> str:
        return self.name

    @property
    def limited(self) -> bool:
        return self.limit_bps is not None and not self.same_node

    def as_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "step": self.step, "t": self.t, "sender": self.sender,
                "receiver": self.receiver, "direction": self.direction, "parallel": self.parallel,
                "duration_s": self.duration_s, "same_node": self.same_node, "limit_bps": self.limit_bps,
                "goodput": self.goodput.as_dict(), "streams": [r.as_dict() for r in self.streams],
                "intervals": [i.as_dict() for i in self.intervals], "retransmits": self.retransmits,
                "mechanism": self.mechanism, "basis": self.basis, "evidence": list(self.evidence),
                "cpu_s": self.cpu_s}


@dataclass(frozen=True)
class Event:
    """One entry of a backend's event log (``step``, ``api``, ``agent-regenerated``,
    ``pod-not-ready``, ``maps-reconciled`` ...) with its own fields."""

    t: float
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        if name == "t":
            return self.t
        if name == "event":
            return self.event
        return self.fields.get(name, default)

    def as_dict(self) -> dict:
        return {"t": self.t, "event": self.event, **self.fields}


def event(t: float, name: str, **fields: Any) -> Event:
    return Event(round(t, 6), name, dict(fields))


@dataclass
class Observations:
    """Everything one backend observed in one run of a scenario (a backend that
    could not run has no Observations; the runner records why in its status)."""

    backend: str  # twin | real
    flows: list[FlowRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    holds: list[HoldResult] = field(default_factory=list)
    syscalls: list[SyscallFacts] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    leases: list[LeaseTransition] = field(default_factory=list)
    arp: list[ArpObservation] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    l2_checks: list[L2Check] = field(default_factory=list)
    throughput: list[ThroughputRecord] = field(default_factory=list)
    #: the Bandwidth Manager as this backend ran it: ``mechanism`` (edt-fq | htb | model | none),
    #: ``reason`` (why that one), and per node what was programmed (real) or the calibration used (twin)
    bandwidth: dict = field(default_factory=dict)
    #: the twin's analytical predictions (outage/readmission intervals), one dict per kill
    predictions: list[dict] = field(default_factory=list)
    virtual_seconds: float | None = None
    wall_seconds: float = 0.0

    def log(self, t: float, name: str, **fields: Any) -> None:
        self.events.append(event(t, name, **fields))

    def sorted_events(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.t)

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "flows": [f.as_dict() for f in self.flows],
            "events": [e.as_dict() for e in self.sorted_events()],
            "traffic": [r.as_dict() for r in self.requests],
            "holds": [h.as_dict() for h in self.holds],
            "syscalls": [s.as_dict() for s in self.syscalls],
            "kills": [k.as_dict() for k in self.kills],
            "leases": [x.as_dict() for x in self.leases],
            "arp": [x.as_dict() for x in self.arp],
            "faults": [x.as_dict() for x in self.faults],
            "l2_checks": [x.as_dict() for x in self.l2_checks],
            "throughput": [x.as_dict() for x in self.throughput],
            "bandwidth": dict(self.bandwidth),
            "predictions": list(self.predictions),
            "virtual_seconds": self.virtual_seconds, "wall_seconds": self.wall_seconds,
        }
