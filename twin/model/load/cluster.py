"""Entry points: build a :class:`Cluster` from manifest and values sources, or
parse the policies of a scenario ``apply`` step."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from twin.model import topology
from twin.model.findings import InputError, error
from twin.model.load.context import Pending
from twin.model.load.crosscheck import check_policy_named_ports, check_service_named_ports
from twin.model.load.documents import collect, load_documents
from twin.model.load.l2 import build_l2, build_pool
from twin.model.load.nodes import build_nodes
from twin.model.load.placement import build_pods
from twin.model.load.policies import build_policy
from twin.model.load.services import build_services
from twin.model.load.values import build_values
from twin.model.objects import Cluster, NetworkPolicy, Origin
from twin.model.yamlsrc import Source, parse_documents


def build_cluster(manifests: Iterable[Source], values: Source | None = None, strict_errors: bool = True) -> Cluster:
    """Load, validate and build.  Raises :class:`InputError` if any error is found."""
    docs, findings = load_documents(manifests)
    vdoc = None
    if values is not None:
        vdocs, vf = parse_documents(values)
        findings.extend(vf)
        if len(vdocs) > 1:
            findings.append(error("values", "", "a values file must hold one document", values.name))
        vdoc = vdocs[0] if vdocs else None
    pending = Pending()
    for doc in docs:
        collect(doc, pending, findings)
    vals = build_values(vdoc, findings)
    if vdoc is None and values is not None:  # an empty values file: defaults, but findings still name it
        vals = replace(vals, origin=Origin(values.name, None))
    nodes = build_nodes(pending)
    namespaces = ["default", "kube-system"]
    for rec in pending.namespaces:
        if rec.meta["name"] not in namespaces:
            namespaces.append(rec.meta["name"])
    pods = build_pods(pending, nodes)
    services = build_services(pending, topology.SERVICE_CIDR)
    svc_recs: dict = {}
    for rec in pending.services:
        svc_recs.setdefault(f"{rec.namespace}/{rec.meta['name']}", rec)
    for svc in services:
        check_service_named_ports(svc, svc_recs[svc.key], pods)
    policies, seen = [], {}
    for rec in pending.policies:
        ctx = rec.ctx
        pol = build_policy(ctx, rec.namespace, rec.data)
        if pol is None:
            continue
        check_policy_named_ports(rec, pods)
        if pol.key in seen:
            ctx.warn(("metadata", "name"), f"CiliumNetworkPolicy {pol.key} appears again; like kubectl apply, the later one replaces the earlier")
            policies[seen[pol.key]] = pol
            continue
        seen[pol.key] = len(policies)
        policies.append(pol)
    l2 = [build_l2(rec.ctx, rec.data) for rec in pending.l2]
    pools = [p for p in (build_pool(rec.ctx, rec.data) for rec in pending.pools) if p]
    for objs, what in ((pods, "Pod"), (services, "Service"), (policies, "CiliumNetworkPolicy")):
        for o in objs:
            if o.namespace not in namespaces and pending.namespaces:
                findings.append(error(f"{what} {o.key}", "metadata.namespace",
                                      f"namespace {o.namespace!r} does not exist (the API server would refuse it)",
                                      o.origin.file, o.origin.line))
    cluster = Cluster(tuple(nodes), tuple(namespaces), tuple(pods), tuple(services), tuple(policies),
                      tuple(l2), tuple(pools), vals, topology.SERVICE_CIDR, topology.NODE_NETWORK,
                      tuple(findings))
    errors = [f for f in findings if f.severity.value == "error"]
    if errors and strict_errors:
        raise InputError(errors)
    return cluster


def parse_policy_source(src: Source, namespace: str = "default") -> list[NetworkPolicy]:
    """Parse documents holding only CiliumNetworkPolicies (for scenario apply steps)."""
    docs, findings = load_documents([src])
    pending = Pending()
    for doc in docs:
        collect(doc, pending, findings)
    others = pending.pods or pending.services or pending.nodes or pending.l2 or pending.pools or pending.namespaces
    if others:
        findings.append(error("<apply>", "", "only CiliumNetworkPolicy objects can be applied in a step", src.name))
    pols = [p for p in (build_policy(rec.ctx, rec.namespace, rec.data) for rec in pending.policies) if p]
    errors = [f for f in findings if f.severity.value == "error"]
    if errors:
        raise InputError(errors)
    return pols
