"""Nodes: from Node documents, or the seed's three nodes when there are none."""
from __future__ import annotations

import ipaddress

from twin.model import limits, topology
from twin.model.load.context import Pending
from twin.model.objects import Node, labels_of


def build_nodes(pending: Pending) -> list[Node]:
    nodes: list[Node] = []
    if not pending.nodes:
        for i, (name, labels, cp) in enumerate(topology.SEED_NODES):
            taints = ((topology.CONTROL_PLANE_LABEL, "NoSchedule"),) if cp else ()
            nodes.append(Node(name, labels_of(labels), topology.node_ip(i), topology.pod_cidr(i),
                              (topology.UPLINK,), taints))
        return nodes
    if len(pending.nodes) > limits.MAX_NODES:
        rec = pending.nodes[limits.MAX_NODES]
        rec.ctx.err((), f"more than {limits.MAX_NODES} nodes (limit MAX_NODES)")
        return nodes
    names: dict[str, int | None] = {}
    cidrs: list[tuple[ipaddress.IPv4Network, str]] = []
    for i, rec in enumerate(pending.nodes):
        ctx, data = rec.ctx, rec.data
        meta, spec, status = data["metadata"], rec.spec, data.get("status") or {}
        if meta["name"] in names:
            ctx.err(("metadata", "name"), f"duplicate Node {meta['name']!r} (first at line {names[meta['name']]}); "
                    "node names are unique in a cluster")
            continue
        names[meta["name"]] = ctx.origin.line
        labels = dict(meta.get("labels") or {})
        labels.setdefault("kubernetes.io/hostname", meta["name"])
        ip = topology.node_ip(i)
        for j, a in enumerate(status.get("addresses") or []):
            if a.get("type") == "InternalIP":
                try:
                    ip = ipaddress.IPv4Address(a.get("address"))
                except ValueError:
                    ctx.err(("status", "addresses", j, "address"), f"not an IPv4 address: {a.get('address')!r}")
        cidr = topology.pod_cidr(i)
        if spec.get("podCIDR"):
            try:
                cidr = ipaddress.IPv4Network(spec["podCIDR"])
            except ValueError:
                ctx.err(("spec", "podCIDR"), f"not an IPv4 CIDR: {spec['podCIDR']!r}")
        for other, where in ((topology.SERVICE_CIDR, "the service CIDR"), (topology.NODE_NETWORK, "the node network"),
                             *((c, f"node {n}'s pod CIDR") for c, n in cidrs)):
            if cidr.overlaps(other):
                ctx.err(("spec", "podCIDR"), f"{cidr} overlaps {where} {other}; pod CIDRs must be disjoint "
                        "from each other, the service CIDR and the node network")
                break
        cidrs.append((cidr, meta["name"]))
        taints = []
        for j, t in enumerate(spec.get("taints") or []):
            if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                ctx.err(("spec", "taints", j, "effect"), f"must be NoSchedule, PreferNoSchedule or NoExecute, got {t.get('effect')!r}")
            taints.append((str(t.get("key")), str(t.get("effect"))))
        ifaces = (meta.get("annotations") or {}).get("twin.dev/interfaces")
        interfaces = tuple(x.strip() for x in ifaces.split(",")) if ifaces else (topology.UPLINK,)
        nodes.append(Node(meta["name"], labels_of(labels), ip, cidr, interfaces, tuple(taints), ctx.origin))
    return nodes
