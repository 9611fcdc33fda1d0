"""Per-document context and the typed records collected before placement."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twin.model import schema
from twin.model.findings import error, warning
from twin.model.objects import Origin
from twin.model.yamlsrc import Document


@dataclass
class Ctx:
    """Per-document context: knows how to name the object and find lines."""

    doc: Document
    kind: str
    obj: str
    findings: list

    def err(self, path: tuple, message: str) -> None:
        self.findings.append(error(self.obj, schema.fmt_path(path), message, self.doc.file, self.doc.line(path)))

    def warn(self, path: tuple, message: str) -> None:
        self.findings.append(warning(self.obj, schema.fmt_path(path), message, self.doc.file, self.doc.line(path)))

    @property
    def origin(self) -> Origin:
        return Origin(self.doc.file, self.doc.line(()))


@dataclass(frozen=True)
class PendingObject:
    """A validated document of one kind, waiting for the cluster to be assembled."""

    ctx: Ctx
    namespace: str | None
    data: dict

    @property
    def meta(self) -> dict:
        return self.data["metadata"]

    @property
    def spec(self) -> dict:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}


@dataclass(frozen=True)
class PendingPod:
    """A pod (from a Pod document or a Deployment replica) waiting for a node and an address."""

    ctx: Ctx
    namespace: str
    meta: dict
    spec: dict
    status: dict
    owner: str = ""  # "Deployment/NAME" for replicas

    @property
    def name(self) -> str:
        return self.meta["name"]


@dataclass
class Pending:
    """Objects collected before nodes, scheduling and addresses are known."""

    nodes: list[PendingObject] = field(default_factory=list)
    namespaces: list[PendingObject] = field(default_factory=list)
    pods: list[PendingPod] = field(default_factory=list)
    services: list[PendingObject] = field(default_factory=list)
    policies: list[PendingObject] = field(default_factory=list)
    l2: list[PendingObject] = field(default_factory=list)
    pools: list[PendingObject] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[Any]:
        return {"Namespace": self.namespaces, "Node": self.nodes, "Service": self.services,
                "CiliumNetworkPolicy": self.policies, "CiliumL2AnnouncementPolicy": self.l2,
                "CiliumLoadBalancerIPPool": self.pools}[kind]
