"""Service backends: selector → endpoints, port resolution, per service port."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.objects import Cluster, Pod, Service, ServicePort


@dataclass(frozen=True)
class Backend:
    pod: Pod
    port: int
    protocol: str

    @property
    def address(self) -> str:
        return f"{self.pod.ip}:{self.port}"


def target_port(pod: Pod, sp: ServicePort) -> int | None:
    """Resolve a targetPort (number or container port name) on one pod."""
    if isinstance(sp.target_port, int):
        return sp.target_port
    for c in pod.containers:
        for cp in c.ports:
            if cp.name == sp.target_port and cp.protocol == sp.protocol:
                return cp.port
    return None


def selected_pods(cluster: Cluster, svc: Service) -> list[Pod]:
    """Pods an endpoint controller would list: same namespace, selector matches.

    A Service without a selector gets no managed endpoints (Kubernetes leaves
    them to the user; the twin has none).
    """
    if not svc.selector:
        return []
    sel = dict(svc.selector)
    return [p for p in cluster.pods if p.namespace == svc.namespace
            and all(dict(p.labels).get(k) == v for k, v in sel.items())]


def backends(cluster: Cluster, svc: Service, sp: ServicePort) -> list[Backend]:
    out = []
    for pod in selected_pods(cluster, svc):
        port = target_port(pod, sp)
        if port is not None:
            out.append(Backend(pod, port, sp.protocol))
    return out


def service_port(svc: Service, port: int | None, protocol: str = "TCP") -> ServicePort:
    """Find a service port; ``None`` picks the only/first port."""
    for sp in svc.ports:
        if (port is None or sp.port == port) and sp.protocol == protocol:
            return sp
    have = ", ".join(f"{sp.port}/{sp.protocol}" for sp in svc.ports)
    raise KeyError(f"service {svc.key} has no port {port}/{protocol} (ports: {have})")


def frontends(svc: Service, lb_ips: tuple[ipaddress.IPv4Address, ...] = ()) -> list[ipaddress.IPv4Address]:
    out = [svc.cluster_ip] if svc.cluster_ip else []
    return out + list(svc.external_ips) + list(lb_ips)
