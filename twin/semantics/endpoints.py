"""The endpoint pipeline: readiness probes → pod Ready → endpoints → node agents → maps.

Both backends run the same stages with the same parameters; this module holds
the parameters and the twin's arithmetic for what they imply.

Readiness probes come from the pod spec.  A pod that serves TCP ports (see
``twin.model.apps``) but declares no readiness probe gets the documented
default below, so that a dead server is noticed (Kubernetes without a probe
would rely on the container exiting; the project's servers are processes,
not containers).

Stages after a server dies, with the delays the twin assumes:

1. probing: the prober on the backend's node probes every ``period``; a
   refused TCP connect fails at once, a hang fails after ``timeout``;
   ``failureThreshold`` consecutive failures make the pod NotReady.
2. status: the kubelet reports NotReady (``kubelet_status``).
3. endpoints: the endpoint controller drops the pod from the service's
   endpoints (``endpoints_controller``).
4. agents: every node's agent updates its LB maps (``agent_regenerate``).

Each stage's distribution and origin is defined once, in
:mod:`twin.semantics.delays`; the intervals below use their ``bounds()``.

New connections avoid the backend from stage 4 on; established TCP keeps its
backend; connected UDP sockets to it are destroyed (socket termination, on
by default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from twin.model import apps
from twin.model.objects import Cluster, Pod, ProbeSpec
from twin.model.scenario import Traffic
from twin.semantics.delays import DELAYS, Delays
from twin.semantics.lb import lb_table

#: Default readiness probe for pods that declare none (documented, both backends).
DEFAULT_PROBE = dict(period_s=1.0, timeout_s=1.0, failure_threshold=3, success_threshold=1, initial_delay_s=0.0)


@dataclass(frozen=True)
class PipelineTiming:
    """The bounds of the pipeline's stages, read from one :class:`~twin.semantics.delays.Delays`
    (where each stage's distribution and origin is defined, once)."""

    delays: Delays = DELAYS

    @property
    def status_s(self) -> tuple[float, float]:
        return self.delays.kubelet_status.bounds()

    @property
    def endpoints_s(self) -> tuple[float, float]:
        return self.delays.endpoints_controller.bounds()

    @property
    def agent_s(self) -> tuple[float, float]:
        return self.delays.agent_regenerate.bounds()

    @property
    def refused_probe_s(self) -> tuple[float, float]:
        """A probe of a dead server that refuses connections."""
        return self.delays.probe_refused.bounds()

    @property
    def answered_probe_s(self) -> tuple[float, float]:
        """A probe of a live server."""
        return self.delays.probe_answered.bounds()

    @property
    def after_detection(self) -> tuple[float, float]:
        return (self.status_s[0] + self.endpoints_s[0] + self.agent_s[0],
                self.status_s[1] + self.endpoints_s[1] + self.agent_s[1])


def probed_backends(cluster: Cluster) -> list[tuple[Pod, ProbeSpec]]:
    """Every pod some service has as a backend, with its readiness probe (the pods
    a kubelet probes and the endpoint pipeline follows), sorted by pod key."""
    keys = sorted({b.pod for fe in lb_table(cluster).services for b in fe.backends})
    out = []
    for key in keys:
        pod = cluster.pod(key)
        spec = readiness_probe(pod)
        if spec is not None:
            out.append((pod, spec))
    return out


def readiness_probe(pod: Pod) -> ProbeSpec | None:
    for c in pod.containers:
        if c.readiness is not None:
            return c.readiness
    app = apps.app_of_pod(pod)
    if app.tcp_ports:
        return ProbeSpec("tcpSocket", app.tcp_ports[0], **DEFAULT_PROBE)
    return None


def probe_port(pod: Pod, spec: ProbeSpec) -> int:
    if isinstance(spec.port, int):
        return spec.port
    for c in pod.containers:
        for cp in c.ports:
            if cp.name == spec.port:
                return cp.port
    raise ValueError(f"pod {pod.key} has no container port named {spec.port!r}")


def removal_interval(spec: ProbeSpec, timing: PipelineTiming = PipelineTiming()) -> tuple[float, float]:
    """Seconds from a server's death until the last node agent removed it (refused probes).

    The first probe after the death comes within one period (phase unknown),
    then ``failureThreshold - 1`` more periods, then the later stages.
    """
    lo_after, hi_after = timing.after_detection
    f = spec.failure_threshold
    return ((f - 1) * spec.period_s + timing.refused_probe_s[0] + lo_after,
            f * spec.period_s + timing.refused_probe_s[1] + hi_after)


def readmit_interval(spec: ProbeSpec, timing: PipelineTiming = PipelineTiming()) -> tuple[float, float]:
    """Seconds from a server's restart until every agent has it back."""
    lo_after, hi_after = timing.after_detection
    s = spec.success_threshold
    return ((s - 1) * spec.period_s + timing.answered_probe_s[0] + lo_after,
            s * spec.period_s + timing.answered_probe_s[1] + hi_after)


#: The chance the twin accepts that a random backend choice alone puts an
#: observation outside its predicted interval.
MISS_PROBABILITY = 1e-3


def requests_to_miss(share: float, miss: float = MISS_PROBABILITY) -> int:
    """How many consecutive requests may all avoid a backend with this share,
    before that run of luck is rarer than ``miss``."""
    if share >= 1.0:
        return 1
    return max(1, math.ceil(math.log(miss) / math.log(1.0 - share)))


def outage_interval(spec: ProbeSpec, request_interval_s: float, share: float = 0.5,
                    timing: PipelineTiming = PipelineTiming()) -> tuple[float, float]:
    """Where the client's last failed request (kill → last failure) falls.

    It cannot be later than the removal on the client's node.  It is earlier
    when the last requests before the removal happened to pick live backends:
    each picks the dead one with probability ``share`` (1/n of the active
    backends), so with probability ≥ 1 − MISS_PROBABILITY the last failure is
    within ``requests_to_miss(share)`` request intervals of the removal.
    """
    lo, hi = removal_interval(spec, timing)
    return (max(0.0, lo - requests_to_miss(share) * request_interval_s), hi)


def readmit_window(spec: ProbeSpec, request_interval_s: float, share: float = 0.5,
                   timing: PipelineTiming = PipelineTiming()) -> tuple[float, float]:
    """Restart → first answer from the restarted backend, for a client looping
    every ``request_interval_s`` (same miss probability as the outage)."""
    lo, hi = readmit_interval(spec, timing)
    return (lo, hi + requests_to_miss(share) * request_interval_s)


def kill_predictions(cluster: Cluster, kills: list[tuple[str, Traffic | None]],
                     delays: Delays = DELAYS) -> list[dict]:
    """Analytical intervals the runs are checked against (outage and readmission).

    ``kills`` lists (pod key, the loop running during the kill or None).  The
    killed pod's share is 1/n of the loop frontend's active backends.
    """
    timing = PipelineTiming(delays)
    table = lb_table(cluster)
    out = []
    for pod_key, loop in kills:
        spec = readiness_probe(cluster.pod(pod_key))
        interval = loop.interval_s if loop else 0.1
        n = max((len(fe.active) for fe in table.services if any(b.pod == pod_key for b in fe.active)), default=1)
        out.append({"pod": pod_key, "loop": loop.name if loop else None, "share": round(1 / n, 4),
                    "removal_s": removal_interval(spec, timing), "readmit_s": readmit_window(spec, interval, 1 / n, timing),
                    "outage_s": outage_interval(spec, interval, 1 / n, timing),
                    "probe": {"kind": spec.kind, "period_s": spec.period_s, "failure_threshold": spec.failure_threshold,
                              "success_threshold": spec.success_threshold}})
    return out
