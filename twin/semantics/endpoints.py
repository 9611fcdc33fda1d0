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
2. status: the kubelet reports NotReady (``status_s``).
3. endpoints: the endpoint controller drops the pod from the service's
   endpoints (``endpoints_s``).
4. agents: every node's agent updates its LB maps (``agent_s``, uniform).

New connections avoid the backend from stage 4 on; established TCP keeps its
backend; connected UDP sockets to it are destroyed (socket termination, on
by default).
"""
from __future__ import annotations

from dataclasses import dataclass

from twin.model import apps
from twin.model.objects import Pod, ProbeSpec

#: Default readiness probe for pods that declare none (documented, both backends).
DEFAULT_PROBE = dict(period_s=1.0, timeout_s=1.0, failure_threshold=3, success_threshold=1, initial_delay_s=0.0)


@dataclass(frozen=True)
class PipelineTiming:
    status_s: tuple[float, float] = (0.005, 0.03)
    endpoints_s: tuple[float, float] = (0.002, 0.02)
    agent_s: tuple[float, float] = (0.01, 0.06)
    #: a probe of a dead server that refuses connections
    refused_probe_s: tuple[float, float] = (0.0005, 0.01)

    @property
    def after_detection(self) -> tuple[float, float]:
        return (self.status_s[0] + self.endpoints_s[0] + self.agent_s[0],
                self.status_s[1] + self.endpoints_s[1] + self.agent_s[1])


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
    return ((s - 1) * spec.period_s + lo_after, s * spec.period_s + timing.refused_probe_s[1] + hi_after)


def outage_interval(spec: ProbeSpec, request_interval_s: float, timing: PipelineTiming = PipelineTiming()) -> tuple[float, float]:
    """Where the client's last failed request (after the kill) may fall.

    The last request that can still pick the dead backend leaves at most one
    request interval before the client's node removed it, and at the earliest
    right at the kill.  So the window (kill → last failure) lies in
    [0, removal_hi]; with requests every ``request_interval_s`` and a share of
    1/n per request it is very likely near the removal time, so the twin
    predicts [removal_lo − interval, removal_hi].
    """
    lo, hi = removal_interval(spec, timing)
    return (max(0.0, lo - request_interval_s), hi)
