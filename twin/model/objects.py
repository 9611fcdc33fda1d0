"""The cluster model: frozen data, no behaviour beyond small accessors."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

Labels = tuple  # tuple[tuple[str, str], ...] sorted


def labels_of(d: dict | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


#: the pod annotations of the Bandwidth Manager (``twin.semantics.bandwidth`` says what they do)
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"

@dataclass(frozen=True)
class Origin:
    """Where an object came from: file and line of its document."""

    file: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def keys(self) -> set[str]:
        return {k for k, _ in self.match_labels} | {r.key for r in self.match_expressions}

    def matches(self, labels: dict, key=lambda k: k) -> bool:
        """Kubernetes label-selector semantics; ``key`` normalizes selector keys
        (Cilium strips ``k8s:``/``any:`` sources)."""
        for k, v in self.match_labels:
            if labels.get(key(k)) != v:
                return False
        for r in self.match_expressions:
            k = key(r.key)
            present = k in labels
            if r.operator == "In" and (not present or labels[k] not in r.values):
                return False
            if r.operator == "NotIn" and present and labels[k] in r.values:
                return False
            if r.operator == "Exists" and not present:
                return False
            if r.operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class ContainerPort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness probe (Kubernetes defaults where a field is absent)."""

    kind: str  # httpGet | tcpSocket
    port: int | str
    path: str = "/"
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay_s: float = 0.0


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    readiness: ProbeSpec | None = None


@dataclass(frozen=True)
class Node:
    name: str
    labels: Labels
    ip: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network
    interfaces: tuple[str, ...] = ("ens5",)
    taints: tuple[tuple[str, str], ...] = ()  # (key, effect)
    origin: Origin = Origin()

    @property
    def uplink(self) -> str:
        return self.interfaces[0]


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels
    node: str
    ip: ipaddress.IPv4Address
    containers: tuple[Container, ...] = ()
    annotations: Labels = ()
    service_account: str = "default"
    owner: str = ""  # "Deployment/name" when expanded from a Deployment
    origin: Origin = Origin()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def annotation(self, name: str) -> Optional[str]:
        return dict(self.annotations).get(name)


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP | LoadBalancer | NodePort
    cluster_ip: ipaddress.IPv4Address | None
    ports: tuple[ServicePort, ...]
    selector: Labels
    labels: Labels = ()
    annotations: Labels = ()
    external_ips: tuple[ipaddress.IPv4Address, ...] = ()
    load_balancer_ip: ipaddress.IPv4Address | None = None  # spec.loadBalancerIP request
    load_balancer_class: str = ""
    external_traffic_policy: str = "Cluster"
    origin: Origin = Origin()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class HTTPRule:
    method: str = ""  # regex, matched against the whole method; "" = any
    path: str = ""  # regex, matched against the whole path; "" = any
    host: str = ""
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortProtocol:
    port: int | str  # 0 = all ports; str = named port
    end_port: int | None = None
    protocol: str = "ANY"  # TCP, UDP, SCTP, ANY


@dataclass(frozen=True)
class PortRule:
    ports: tuple[PortProtocol, ...] = ()
    http: tuple[HTTPRule, ...] | None = None  # None: no L7 rules


@dataclass(frozen=True)
class PeerRule:
    """One entry of ingress/egress/ingressDeny/egressDeny."""

    index: int
    endpoints: tuple[LabelSelector, ...] | None = None  # fromEndpoints / toEndpoints
    entities: tuple[str, ...] | None = None  # fromEntities / toEntities
    to_ports: tuple[PortRule, ...] | None = None

    @property
    def has_peers(self) -> bool:
        return self.endpoints is not None or self.entities is not None


@dataclass(frozen=True)
class PolicySpec:
    endpoint_selector: LabelSelector | None
    ingress: tuple[PeerRule, ...] = ()
    egress: tuple[PeerRule, ...] = ()
    ingress_deny: tuple[PeerRule, ...] = ()
    egress_deny: tuple[PeerRule, ...] = ()
    description: str = ""
    default_deny_ingress: bool | None = None  # spec.enableDefaultDeny.ingress
    default_deny_egress: bool | None = None
    index: int = 0  # position in `specs` (0 for `spec`)
    path: str = "spec"  # field path of this rule in its document: "spec" or "specs[i]"


@dataclass(frozen=True)
class NetworkPolicy:
    """A CiliumNetworkPolicy (namespaced)."""

    namespace: str
    name: str
    specs: tuple[PolicySpec, ...]
    origin: Origin = Origin()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _field_line(lines: tuple, origin: Origin, path: str) -> int | None:
    """Line of a field (or of its nearest enclosing field) in the object's document."""
    found = dict(lines)
    while path:
        if path in found:
            return found[path]
        path = path.rpartition(".")[0]
    return origin.line


@dataclass(frozen=True)
class L2AnnouncementPolicy:
    name: str
    service_selector: LabelSelector | None
    node_selector: LabelSelector | None
    interfaces: tuple[str, ...]
    external_ips: bool
    load_balancer_ips: bool
    origin: Origin = Origin()
    #: (field path, line) of the document's fields, e.g. ("spec.interfaces[0]", 14)
    lines: tuple[tuple[str, int], ...] = ()

    def line(self, path: str) -> int | None:
        return _field_line(self.lines, self.origin, path)


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network | None = None
    start: ipaddress.IPv4Address | None = None
    stop: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class LBIPPool:
    name: str
    blocks: tuple[IPBlock, ...]
    allow_first_last: bool = False
    service_selector: LabelSelector | None = None
    disabled: bool = False
    origin: Origin = Origin()
    #: (field path, line) of the document's fields, e.g. ("spec.serviceSelector", 9)
    lines: tuple[tuple[str, int], ...] = ()

    def line(self, path: str) -> int | None:
        return _field_line(self.lines, self.origin, path)


@dataclass(frozen=True)
class L2Settings:
    enabled: bool = False
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 5.0
    retry_period_s: float = 2.0


@dataclass(frozen=True)
class Values:
    """Cluster settings from a Helm-values file (the subset the seed uses)."""

    kube_proxy_replacement: bool = True
    bandwidth_manager: bool = False
    external_ips: bool = False
    l2: L2Settings = L2Settings()
    socket_lb: bool = True
    #: destroy connected UDP sockets to removed backends (socketLB.terminatePodConnections)
    terminate_pod_connections: bool = True
    allow_localhost: str = "auto"
    #: the agent's API client rate limit (k8sClientRateLimit.qps/burst; Cilium's defaults 5/10)
    client_qps: float = 5.0
    client_burst: int = 10
    #: the values file (empty when there is none)
    origin: Origin = Origin()
    #: (field path, line) for each key of the values file, e.g. ("l2announcements.leaseDuration", 7)
    lines: tuple[tuple[str, int], ...] = ()

    def line(self, path: str) -> int | None:
        """Line of a field (or of its nearest enclosing section) in the values file."""
        found = dict(self.lines)
        while path:
            if path in found:
                return found[path]
            path = path.rpartition(".")[0]
        return self.origin.line


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...] = ()
    namespaces: tuple[str, ...] = ("default",)
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    l2_policies: tuple[L2AnnouncementPolicy, ...] = ()
    pools: tuple[LBIPPool, ...] = ()
    values: Values = Values()
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.10.0.0/16")
    node_network: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.10.0/24")
    findings: tuple = ()

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod(self, key: str) -> Pod:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)

    def service(self, key: str) -> Service:
        for s in self.services:
            if s.key == key:
                return s
        raise KeyError(key)

    def policy(self, key: str) -> NetworkPolicy:
        for p in self.policies:
            if p.key == key:
                return p
        raise KeyError(key)

    def with_policy(self, policy: NetworkPolicy) -> "Cluster":
        """Apply (create or replace) a policy, keeping manifest order."""
        pols = list(self.policies)
        for i, p in enumerate(pols):
            if p.key == policy.key:
                pols[i] = policy
                return replace(self, policies=tuple(pols))
        return replace(self, policies=tuple(pols) + (policy,))

    def with_labels(self, kind: str, key: str, set_: Mapping[str, str] = {}, remove: tuple[str, ...] = ()) -> "Cluster":
        """A ``label`` step: set and remove labels of a ``Service`` (key ns/name) or a
        ``Node`` (key name).  KeyError when there is no such object."""
        def relabel(labels) -> tuple:
            d = {k: v for k, v in dict(labels).items() if k not in remove}
            d.update(set_)
            return tuple(sorted(d.items()))
        if kind == "Service":
            svc = self.service(key)
            return replace(self, services=tuple(replace(s, labels=relabel(s.labels)) if s is svc else s
                                                for s in self.services))
        if kind == "Node":
            node = self.node(key)
            return replace(self, nodes=tuple(replace(n, labels=relabel(n.labels)) if n is node else n
                                             for n in self.nodes))
        raise KeyError(f"{kind}/{key}")

    def with_annotations(self, kind: str, key: str, set_: Mapping[str, str] = {},
                         remove: tuple[str, ...] = ()) -> "Cluster":
        """An ``annotate`` step: set and remove annotations of a ``Pod`` (key ns/name).
        KeyError when there is no such pod."""
        if kind != "Pod":
            raise KeyError(f"{kind}/{key}")
        pod = self.pod(key)
        d = {k: v for k, v in dict(pod.annotations).items() if k not in remove}
        d.update(set_)
        new = replace(pod, annotations=tuple(sorted(d.items())))
        return replace(self, pods=tuple(new if p is pod else p for p in self.pods))

    def without_policy(self, key: str) -> "Cluster":
        if not any(p.key == key for p in self.policies):
            raise KeyError(key)
        return replace(self, policies=tuple(p for p in self.policies if p.key != key))
