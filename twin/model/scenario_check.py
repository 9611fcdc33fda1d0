"""A scenario checked against its cluster, before anything runs.

:func:`check_scenario` is pure: it returns findings, it raises nothing.  Each
finding names the scenario file, the step's line and the step field, so a
typo in a pod name is an input error (exit 2) instead of a ``KeyError`` deep
inside a backend.

What is checked:

- every ``from`` names a pod; a ``to`` of ``svc:NS/NAME`` names a service
  and a port (and protocol) the service has; a ``to`` of ``NS/POD`` names a pod
- ``hold``'s backend is a pod the service selects
- ``kill``/``restart`` name a pod that some service selects (the only pods
  whose server the scenario can stop); a pod is restarted only after it was
  killed, and not killed twice without a restart in between

Probe targets are resolved again by the semantics (``resolve_targets``) when
the run starts; the checks here do not depend on policies.
"""
from __future__ import annotations

import ipaddress

from twin.model.findings import Finding, error
from twin.model.objects import Cluster, Pod, Service
from twin.model.scenario import EXTERNAL, PROBE_KINDS, Scenario, Step, pod_key, service_key


def _selects(svc: Service, pod: Pod) -> bool:
    if not svc.selector or pod.namespace != svc.namespace:
        return False
    labels = dict(pod.labels)
    return all(labels.get(k) == v for k, v in svc.selector)


def check_scenario(scenario: Scenario, cluster: Cluster) -> list[Finding]:
    """Every way the scenario does not fit its cluster, as findings."""
    out: list[Finding] = []
    obj = f"Scenario {scenario.name}"
    pods = {p.key: p for p in cluster.pods}
    services = {s.key: s for s in cluster.services}

    def err(step: Step, field: str, msg: str) -> None:
        out.append(error(obj, f"steps[{step.index}].{field}", msg, scenario.file, step.line))

    def pod_ref(step: Step, field: str, key: str) -> Pod | None:
        if key in pods:
            return pods[key]
        near = sorted(k for k in pods if k.split("/")[-1] == key.split("/")[-1])
        hint = f" (did you mean {', '.join(near)}?)" if near else f" (pods: {', '.join(sorted(pods)) or 'none'})"
        err(step, field, f"no pod {key!r}{hint}")
        return None

    def service_ref(step: Step, field: str, dst: str, port: int | None, protocol: str) -> Service | None:
        key = service_key(dst)
        if key is None:
            err(step, field, f"must be svc:NS/NAME, got {dst!r}")
            return None
        svc = services.get(key)
        if svc is None:
            err(step, field, f"no service {key!r} (services: {', '.join(sorted(services)) or 'none'})")
            return None
        if port is not None and not any(sp.port == port and sp.protocol == protocol for sp in svc.ports):
            have = ", ".join(f"{sp.port}/{sp.protocol}" for sp in svc.ports)
            err(step, field.rsplit(".", 1)[0] + ".port",
                f"service {key} has no port {port}/{protocol} (ports: {have}); requests to it would only time out")
        return svc

    killed: set[str] = set()
    for step in scenario.steps:
        k = step.kind
        if k == "probe" and step.probe is not None:
            p = step.probe
            pod_ref(step, "probe.from", p.src)
            if service_key(p.dst) is not None:
                if p.kind != "ping":
                    service_ref(step, "probe.to", p.dst, p.port, PROBE_KINDS.get(p.kind, "TCP"))
                elif service_ref(step, "probe.to", p.dst, None, "TCP") is not None:
                    err(step, "probe.kind", "a service IP does not answer ICMP echo with socket LB; probe a pod")
            elif p.dst != "external":
                try:
                    ipaddress.IPv4Address(p.dst)
                except ValueError:
                    pod_ref(step, "probe.to", pod_key(p.dst))
        elif k in ("requests", "loop", "syscalls") and step.traffic is not None:
            t = step.traffic
            if not (t.src == EXTERNAL and k in ("requests", "loop")):  # the external host, through the LB IP
                pod_ref(step, f"{k}.from", t.src)
            service_ref(step, f"{k}.to", t.dst, t.port, "UDP" if t.kind == "udp" else "TCP")
        elif k == "hold" and step.hold is not None:
            h = step.hold
            pod_ref(step, "hold.from", h.src)
            svc = service_ref(step, "hold.to", h.dst, h.port, "TCP")
            backend = h.backend
            be = pod_ref(step, "hold.backend", backend)
            if svc is not None and be is not None and not _selects(svc, be):
                err(step, "hold.backend", f"pod {backend} is not a backend of service {svc.key} "
                    "(its selector does not match the pod's labels)")
        elif k in ("kill", "restart"):
            pod = pod_ref(step, f"{k}.pod", step.pod)
            if pod is None:
                continue
            if not any(_selects(s, pod) for s in cluster.services):
                err(step, f"{k}.pod", f"pod {step.pod} is not a backend of any service: {k} stops and starts "
                    "a service backend's server")
                continue
            if k == "kill":
                if step.pod in killed:
                    err(step, "kill.pod", f"pod {step.pod} is already killed (restart it first)")
                killed.add(step.pod)
            else:
                if step.pod not in killed:
                    err(step, "restart.pod", f"pod {step.pod} was not killed by an earlier step: nothing to restart")
                killed.discard(step.pod)
    return out
