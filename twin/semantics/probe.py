"""Probes: resolve a scenario probe's destination and predict its outcome.

A probe to ``svc:NS/NAME`` becomes one probe per backend (the backend's IP
and target port): it checks the policy verdict towards every backend, not
which backend the load balancer picks (``requests`` steps go through the
service address and its socket LB).  Both backends do the same expansion,
so their records line up by key.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model import apps, topology
from twin.model.enums import Direction, Protocol, Verdict
from twin.model.findings import InputError, error
from twin.model.objects import Pod
from twin.model.scenario import Probe, pod_key, service_key
from twin.semantics.flows import PROTOCOL_NAMES
from twin.semantics.services import backends, service_port


@dataclass(frozen=True)
class ProbeTarget:
    dst: str  # ns/pod or IP
    dst_ip: ipaddress.IPv4Address
    pod: Pod | None
    port: int
    service: str | None = None


@dataclass(frozen=True)
class Prediction:
    target: ProbeTarget
    verdict: str
    drop_reason: str | None
    drop_reason_code: int
    layer: str
    http_status: int | None
    body: str | None
    src_identity: int
    dst_identity: int
    direction: str | None
    node: str
    explanation: str


def _bad(probe: Probe, field: str, msg: str) -> InputError:
    return InputError([error(f"probe {probe.name}", field, msg)])


def resolve_targets(view, probe: Probe) -> list[ProbeTarget]:
    c = view.cluster
    try:
        c.pod(probe.src)
    except KeyError:
        raise _bad(probe, "from", f"no pod {probe.src!r}") from None
    dst = probe.dst
    key = service_key(dst)
    if key is not None:
        try:
            svc = c.service(key)
        except KeyError:
            raise _bad(probe, "to", f"no service {key!r}") from None
        if probe.kind == "ping":
            raise _bad(probe, "kind", "a service IP does not answer ICMP echo with socket LB; probe a pod")
        try:
            sp = service_port(svc, probe.port, probe.protocol)
        except KeyError as exc:
            raise _bad(probe, "port", str(exc.args[0])) from None
        return [ProbeTarget(b.pod.key, b.pod.ip, b.pod, b.port, svc.key) for b in backends(c, svc, sp)]
    if dst == "external":
        return [ProbeTarget(str(topology.EXTERNAL_HOST_IP), topology.EXTERNAL_HOST_IP, None, probe.port)]
    try:
        ip = ipaddress.IPv4Address(dst)
        pod = view.flows.pod_at(ip)
        return [ProbeTarget(pod.key if pod else dst, ip, pod, probe.port)]
    except ValueError:
        pass
    key = pod_key(dst)
    try:
        pod = c.pod(key)
    except KeyError:
        raise _bad(probe, "to", f"no pod {key!r} (use svc:NS/NAME for a service, or external)") from None
    return [ProbeTarget(pod.key, pod.ip, pod, probe.port)]


def predict(view, probe: Probe, target: ProbeTarget, ingress_view=None) -> Prediction:
    """Predict a probe; egress with ``view`` (source node), ingress with
    ``ingress_view`` (destination node; defaults to ``view``)."""
    src = view.cluster.pod(probe.src)
    proto = PROTOCOL_NAMES[probe.protocol]
    fv = view.flows.evaluate(view.flows.query(src, target.dst_ip, proto, target.port, probe.http),
                             ingress_view.engine if ingress_view is not None else None)
    d = fv.decision
    status = body = None
    verdict = fv.verdict.value
    explanation = fv.explanation
    if fv.verdict == Verdict.FORWARDED:
        if target.pod is not None:
            app, host, addr = apps.app_of_pod(target.pod), target.pod.name, str(target.pod.ip)
        elif target.dst_ip == topology.EXTERNAL_HOST_IP:
            app, host, addr = apps.EXTERNAL_APP, apps.EXTERNAL_HOSTNAME, str(target.dst_ip)
        else:
            app, host, addr = apps.APPS["none"], str(target.dst_ip), str(target.dst_ip)
        listening = (target.port in app.tcp_ports) if proto == Protocol.TCP else \
            (target.port in app.udp_ports) if proto == Protocol.UDP else True
        if not listening:
            explanation += f"; nothing listens on {probe.protocol}/{target.port} at {target.dst}" + \
                (" (connection refused)" if proto == Protocol.TCP else " (no answer)")
        if probe.kind == "http" and listening:
            status, body = apps.respond(app.name, host, probe.method, probe.path, {}, [addr], f"{src.ip}:0")
    elif d.http_status:
        status, body = d.http_status, apps.L7_DENIED_BODY
    direction = fv.drop_direction.name.lower() if fv.drop_direction is not None else None
    node = src.node if fv.drop_direction in (None, Direction.EGRESS) else (target.pod.node if target.pod else src.node)
    return Prediction(target, verdict, d.drop_reason.text or None, int(d.drop_reason), d.layer, status, body,
                      fv.src_identity, fv.dst_identity, direction, node, explanation)
