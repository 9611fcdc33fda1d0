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
- ``label`` names a Service or Node that exists
- ``arping`` of a service: it exists, is of type LoadBalancer and has an LB IP
  at that point; ``expect`` is ``holder``, ``none`` or a node; ``holder``
  needs a service announced at that point
- ``fault``: L2 announcements are enabled; ``node`` names a node;
  ``holder_of`` names a service announced at that point (else the reason it
  is not, from the semantics)
- ``requests``/``loop`` ``from: external`` go to a service with an LB IP

The cluster changes along the scenario (``label`` steps); whether a service
has an LB IP and is announced at a step is the semantics' answer
(``twin.semantics.l2.scenario_l2_state``), passed in as ``l2_state`` because
the model does not import the semantics.  Without it those checks are skipped.

Probe targets are resolved again by the semantics (``resolve_targets``) when
the run starts; the checks here do not depend on policies.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Mapping

from twin.model.findings import Finding, error
from twin.model.objects import Cluster, Pod, Service
from twin.model.scenario import EXTERNAL, PROBE_KINDS, Scenario, Step, pod_key, service_key


@dataclass(frozen=True)
class L2State:
    """What the semantics say about one service's L2 announcement in a cluster."""

    lb_ips: tuple[str, ...]
    announced: bool
    reason: str = ""  # why it is not announced
    lease: str = ""
    ipam_reason: str = ""  # why LB-IPAM gave it no IP (Cilium's condition reason: no_pool, out_of_ips ...)


#: cluster -> service key -> its L2 state (``twin.semantics.l2.scenario_l2_state``)
L2StateFn = Callable[[Cluster], Mapping[str, L2State]]


def _selects(svc: Service, pod: Pod) -> bool:
    if not svc.selector or pod.namespace != svc.namespace:
        return False
    labels = dict(pod.labels)
    return all(labels.get(k) == v for k, v in svc.selector)


def check_scenario(scenario: Scenario, cluster: Cluster, l2_state: L2StateFn | None = None) -> list[Finding]:
    """Every way the scenario does not fit its cluster, as findings."""
    out: list[Finding] = []
    obj = f"Scenario {scenario.name}"
    pods = {p.key: p for p in cluster.pods}
    services = {s.key: s for s in cluster.services}
    nodes = [n.name for n in cluster.nodes]
    current = cluster  # the cluster as the API server holds it at the step being checked
    state_cache: dict[int, Mapping[str, L2State]] = {}

    def l2_of(key: str) -> L2State | None:
        if l2_state is None:
            return None
        if id(current) not in state_cache:
            state_cache.clear()
            state_cache[id(current)] = l2_state(current)
        return state_cache[id(current)].get(key)

    def lb_service(step: Step, field: str, key: str, what: str) -> Service | None:
        """A service ``what`` needs to be LoadBalancer with an LB IP at this step."""
        svc = services.get(key)
        if svc is None:
            err(step, field, f"no service {key!r} (services: {', '.join(sorted(services)) or 'none'})")
            return None
        if svc.type != "LoadBalancer":
            err(step, field, f"service {key} is of type {svc.type}, not LoadBalancer: {what}")
            return None
        st = l2_of(key)
        if st is not None and not st.lb_ips:
            err(step, field, f"service {key} has no LoadBalancer IP at this point (LB-IPAM: {st.ipam_reason or 'none given'}): "
                f"{what}")
            return None
        return svc

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
    partitioned: set[str] = set()
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
            if t.src == EXTERNAL and k != "syscalls":
                svc = service_ref(step, f"{k}.to", t.dst, t.port, "UDP" if t.kind == "udp" else "TCP")
                if svc is not None:
                    lb_service(step, f"{k}.to", svc.key, "traffic from the external host goes to the service's "
                               "first LB IP")
            else:
                pod_ref(step, f"{k}.from", t.src)
                service_ref(step, f"{k}.to", t.dst, t.port, "UDP" if t.kind == "udp" else "TCP")
        elif k == "label" and step.label is not None:
            lb = step.label
            try:
                current = current.with_labels(lb.kind, lb.key, dict(lb.set), lb.remove)
            except KeyError:
                have = sorted(services) if lb.kind == "Service" else nodes
                err(step, "label.object", f"{lb.kind}/{lb.key} does not exist ({lb.kind.lower()}s: "
                    f"{', '.join(have) or 'none'})")
        elif k == "annotate" and step.label is not None:
            an = step.label
            if pod_ref(step, "annotate.object", an.key) is not None:
                current = current.with_annotations(an.kind, an.key, dict(an.set), an.remove)
        elif k == "throughput" and step.throughput is not None:
            tp = step.throughput
            a, b = pod_ref(step, "throughput.from", tp.src), pod_ref(step, "throughput.to", tp.dst)
            if a is not None and a is b:
                err(step, "throughput.to", f"{tp.dst} is also the client: iperf3 needs two pods")
        elif k == "arping" and step.arping is not None:
            a = step.arping
            if a.service:
                lb_service(step, "arping.service", a.service, "arping asks who answers ARP for its first LB IP")
            if a.expect not in (None, "holder", "none") and a.expect not in nodes:
                err(step, "arping.expect", f"must be holder, none or a node ({', '.join(nodes)}), got {a.expect!r}")
            if a.expect == "holder" and a.service and a.service in services:
                st = l2_of(a.service)
                if st is not None and st.lb_ips and not st.announced:
                    err(step, "arping.expect", f"service {a.service} is not announced at this point ({st.reason}): "
                        "no node holds its lease; expect none")
            elif a.expect == "holder" and a.ip and l2_state is not None:
                owners = [key for key, st in l2_state(current).items() if a.ip in st.lb_ips and st.announced]
                if not owners:
                    err(step, "arping.expect", f"no announced service has the IP {a.ip} at this point: no node "
                        "holds a lease for it; expect none")
        elif k == "fault" and step.fault is not None:
            f = step.fault
            if not current.values.l2.enabled:
                err(step, "fault.kind", "L2 announcements are disabled (l2announcements.enabled is false in the "
                    "values): no lease, no elector, nothing for a fault to act on")
            if f.node and f.node not in nodes:
                err(step, "fault.node", f"no node {f.node!r} (nodes: {', '.join(nodes)})")
            if f.kind == "partition":
                partitioned.add(f.node or f"holder of {f.holder_of}")
            elif f.kind == "heal":
                # a partition by holder_of cut off a node known only at run time: any heal may undo it
                if not partitioned or (f.node and f.node in nodes and f.node not in partitioned
                                       and not any(p.startswith("holder of ") for p in partitioned)):
                    err(step, "fault.node" if f.node else "fault.holder_of",
                        f"no earlier step partitioned {f.node or 'the holder of ' + f.holder_of}: nothing to heal")
                partitioned.discard(f.node)
            if f.holder_of:
                if f.holder_of not in services:
                    err(step, "fault.holder_of", f"no service {f.holder_of!r} (services: "
                        f"{', '.join(sorted(services)) or 'none'})")
                else:
                    st = l2_of(f.holder_of)
                    if st is not None and not st.announced and current.values.l2.enabled:
                        err(step, "fault.holder_of", f"service {f.holder_of} is not announced at this point of the "
                            f"scenario ({st.reason}): no node holds its lease")
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
