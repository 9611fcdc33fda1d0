"""Security identities, endpoint selection and the ipcache.

Cilium derives an identity from a pod's labels plus its namespace (and
service account and cluster name); pods with equal label sets share one
numeric identity.  Numbers here are handed out from
``FIRST_POD_IDENTITY`` in sorted order of label sets, so they are a pure
function of the cluster.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from twin.model import topology
from twin.model.enums import FIRST_POD_IDENTITY, ReservedIdentity
from twin.model.objects import Cluster, LabelSelector, Pod

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
SA_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
#: Labels Cilium's default label filter leaves out of identities.
EXCLUDED_LABELS = ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
                   "job-name", "controller-uid")
_SOURCE_PREFIXES = ("k8s:", "any:", "container:")

RESERVED_NAMES = {
    ReservedIdentity.HOST: "reserved:host",
    ReservedIdentity.WORLD: "reserved:world",
    ReservedIdentity.REMOTE_NODE: "reserved:remote-node",
    ReservedIdentity.HEALTH: "reserved:health",
    ReservedIdentity.INIT: "reserved:init",
    ReservedIdentity.UNMANAGED: "reserved:unmanaged",
    ReservedIdentity.KUBE_APISERVER: "reserved:kube-apiserver",
    ReservedIdentity.INGRESS: "reserved:ingress",
}


def identity_labels(pod: Pod) -> tuple:
    labels = {k: v for k, v in pod.labels if k not in EXCLUDED_LABELS}
    labels[NAMESPACE_LABEL] = pod.namespace
    labels[SA_LABEL] = pod.service_account
    labels[CLUSTER_LABEL] = "default"
    return tuple(sorted(labels.items()))


def normalize_key(key: str) -> str:
    for p in _SOURCE_PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def selector_matches_labels(sel: LabelSelector, labels: dict) -> bool:
    """Match a Cilium endpoint selector (keys may carry a ``k8s:``/``any:`` source)."""
    return sel.matches(labels, normalize_key)


def selector_names_namespace(sel: LabelSelector) -> bool:
    return any(normalize_key(k) == NAMESPACE_LABEL for k in sel.keys())


@dataclass(frozen=True)
class IdentityInfo:
    number: int
    labels: tuple  # sorted (key, value) pairs, unprefixed

    @property
    def namespace(self) -> str | None:
        return dict(self.labels).get(NAMESPACE_LABEL)

    def short(self) -> str:
        shown = [f"{k}={v}" if v else k for k, v in self.labels if k not in (SA_LABEL, CLUSTER_LABEL, NAMESPACE_LABEL)]
        ns = self.namespace
        return f"{ns + ':' if ns else ''}{self.number}[{','.join(shown)}]"


class Identities:
    """Identity allocation and ipcache for one cluster (cached, pure)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    @cached_property
    def by_labels(self) -> dict[tuple, int]:
        sets = sorted({identity_labels(p) for p in self.cluster.pods})
        return {ls: FIRST_POD_IDENTITY + i for i, ls in enumerate(sets)}

    @cached_property
    def infos(self) -> dict[int, IdentityInfo]:
        out = {num: IdentityInfo(num, ls) for ls, num in self.by_labels.items()}
        for rid, name in RESERVED_NAMES.items():
            out[int(rid)] = IdentityInfo(int(rid), ((name, ""),))
        return out

    @cached_property
    def of_pod(self) -> dict[str, int]:
        return {p.key: self.by_labels[identity_labels(p)] for p in self.cluster.pods}

    def pod_identity(self, pod: Pod) -> int:
        return self.of_pod[pod.key]

    @cached_property
    def pod_identities(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.by_labels.values())))

    @cached_property
    def pods_by_identity(self) -> dict[int, tuple[Pod, ...]]:
        out: dict[int, list] = {}
        for p in self.cluster.pods:
            out.setdefault(self.of_pod[p.key], []).append(p)
        return {k: tuple(v) for k, v in out.items()}

    def ipcache(self, node_name: str) -> dict[ipaddress.IPv4Network, int]:
        """IP prefix -> identity as the agent on ``node_name`` sees it.

        Pods map to their identity; this node's own addresses (node IP and
        router IP) to ``host``, other nodes' addresses to ``remote-node``.
        Anything else falls back to ``world`` (not listed).
        """
        out: dict[ipaddress.IPv4Network, int] = {}
        for ip, node in self._node_by_ip.items():
            out[ipaddress.IPv4Network(f"{ip}/32")] = self._node_identity(node, node_name)
        for ip, ident in self._pod_by_ip.items():  # pods last: a pod's entry wins
            out[ipaddress.IPv4Network(f"{ip}/32")] = ident
        return out

    @cached_property
    def _pod_by_ip(self) -> dict[ipaddress.IPv4Address, int]:
        return {p.ip: self.of_pod[p.key] for p in self.cluster.pods}

    @cached_property
    def _node_by_ip(self) -> dict[ipaddress.IPv4Address, str]:
        out: dict[ipaddress.IPv4Address, str] = {}
        for n in self.cluster.nodes:
            out[n.ip] = n.name
            out[ipaddress.IPv4Address(topology.router_ip(n.pod_cidr))] = n.name
        return out

    def identity_of_ip(self, ip: ipaddress.IPv4Address, node_name: str) -> int:
        """What ``ipcache(node_name)`` says of ``ip`` (``world`` when it says nothing),
        without building the whole ipcache: pods first, as their entries are written last."""
        ip = ipaddress.IPv4Address(ip)
        if ip in self._pod_by_ip:
            return self._pod_by_ip[ip]
        owner = self._node_by_ip.get(ip)
        return int(ReservedIdentity.WORLD) if owner is None else self._node_identity(owner, node_name)

    @staticmethod
    def _node_identity(node: str, seen_from: str) -> int:
        return int(ReservedIdentity.HOST if node == seen_from else ReservedIdentity.REMOTE_NODE)

    def labels_of(self, identity: int) -> dict:
        info = self.infos.get(identity)
        return dict(info.labels) if info else {}

    def describe(self, identity: int) -> str:
        info = self.infos.get(identity)
        return info.short() if info else str(identity)
