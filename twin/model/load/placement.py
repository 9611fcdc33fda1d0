"""Placement: scheduling pods onto nodes and allocating pod and service addresses."""
from __future__ import annotations

import hashlib
import ipaddress

from twin.model import topology
from twin.model.load.context import Ctx, Pending
from twin.model.load.pods import containers
from twin.model.load.selectors import parse_selector, selector_matches
from twin.model.objects import LabelSelector, Node, Pod, labels_of


def _tolerates(spec: dict, taint: tuple[str, str]) -> bool:
    for t in spec.get("tolerations") or []:
        if not isinstance(t, dict):
            continue
        if t.get("operator") == "Exists" and not t.get("key"):
            return True
        if t.get("key") == taint[0] and (not t.get("effect") or t.get("effect") == taint[1]):
            return True
    return False


def _anti_affinity(ctx: Ctx, spec: dict) -> list[LabelSelector]:
    """Required pod anti-affinity terms on kubernetes.io/hostname (the seed's netperf).

    The schema has checked the shape; selectors are parsed (and their
    expressions checked) like any other label selector.
    """
    aff = spec.get("affinity") or {}
    path = ("spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    terms = ((aff.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")) or []
    out = []
    for i, t in enumerate(terms):
        if not t.get("topologyKey"):
            ctx.err(path + (i, "topologyKey"), "is required")
        elif t["topologyKey"] != "kubernetes.io/hostname":
            ctx.warn(path + (i, "topologyKey"), f"only kubernetes.io/hostname is modelled; the term on {t['topologyKey']!r} is ignored")
        else:
            out.append(parse_selector(ctx, t.get("labelSelector") or {}, path + (i, "labelSelector")))
    return out


def schedule(ctx: Ctx, ns: str, spec: dict, nodes: list[Node], placed: list) -> str | None:
    """Deterministic scheduler for pods without ``nodeName``.

    Feasible nodes: no NoSchedule/NoExecute taint the pod does not tolerate,
    ``nodeSelector`` matches, required pod anti-affinity on hostname holds.
    Among them, the node with the fewest pods; ties go to manifest order.
    """
    node_sel = spec.get("nodeSelector") or {}
    anti = _anti_affinity(ctx, spec)
    counts = {n.name: 0 for n in nodes}
    for p in placed:
        counts[p[1]] = counts.get(p[1], 0) + 1
    feasible = []
    for n in nodes:
        if any(eff in ("NoSchedule", "NoExecute") and not _tolerates(spec, (k, eff)) for k, eff in n.taints):
            continue
        if not all(dict(n.labels).get(k) == v for k, v in node_sel.items()):
            continue
        if any(pns == ns and node == n.name and selector_matches(sel, plabels)
               for sel in anti for (pns, node, plabels) in placed):
            continue
        feasible.append(n)
    if not feasible:
        ctx.err(("spec",), "no node fits the pod (taints, nodeSelector, pod anti-affinity); it would stay Pending")
        return None
    return min(feasible, key=lambda n: (counts[n.name], nodes.index(n))).name


def build_pods(pending: Pending, nodes: list[Node]) -> list[Pod]:
    by_name = {n.name: n for n in nodes}
    placed: list = []  # (ns, node, labels)
    next_host = {n.name: topology.FIRST_POD_HOST for n in nodes}
    # a full node CIDR is one finding per (document, node), not one per pod
    exhausted: dict[tuple, list] = {}
    used: set = set()
    pods = []
    seen = set()
    order = sorted(range(len(pending.pods)), key=lambda i: 0 if pending.pods[i].spec.get("nodeName") else 1)
    results: dict[int, Pod] = {}
    for i in order:
        rec = pending.pods[i]
        ctx, ns, meta, spec, status, owner = rec.ctx, rec.namespace, rec.meta, rec.spec, rec.status, rec.owner
        key = (ns, meta["name"])
        if key in seen:
            ctx.err(("metadata", "name"), f"duplicate Pod {ns}/{meta['name']}")
            continue
        seen.add(key)
        ctrs = containers(ctx, spec)
        if spec.get("hostNetwork") is True:
            ctx.warn(("spec", "hostNetwork"), "host-network pods are not Cilium endpoints; the twin does not model "
                     "them and treats this pod as a pod-network pod")
        labels = labels_of(meta.get("labels"))
        node = spec.get("nodeName")
        if node and node not in by_name:
            ctx.err(("spec", "nodeName"), f"no such node {node!r} (nodes: {', '.join(by_name)})")
            continue
        if not node:
            node = schedule(ctx, ns, spec, nodes, placed)
            if node is None:
                continue
        placed.append((ns, node, labels))
        cidr = by_name[node].pod_cidr
        ip = None
        if status.get("podIP"):
            try:
                want = ipaddress.IPv4Address(status["podIP"])
                if want in cidr and want not in used:
                    ip = want
                else:
                    ctx.warn(("status", "podIP"), f"{want} is not free inside {node}'s pod CIDR {cidr}; allocating another")
            except ValueError:
                ctx.err(("status", "podIP"), f"not an IPv4 address: {status['podIP']!r}")
        while ip is None:
            cand = cidr.network_address + next_host[node]
            next_host[node] += 1
            if cand not in cidr or cand == cidr.broadcast_address:
                next_host[node] -= 1  # stays exhausted: later pods fail here at once
                exhausted.setdefault((id(ctx.doc), node), [ctx, 0, cidr, node])[1] += 1
                break
            if cand not in used:
                ip = cand
        if ip is None:
            continue
        used.add(ip)
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        results[i] = Pod(ns, meta["name"], labels, node, ip, ctrs,
                         labels_of(meta.get("annotations")), sa, owner, ctx.origin)
    for ctx, count, cidr, node in exhausted.values():
        ctx.err(("spec", "nodeName"), f"node {node} has no free address left in its pod CIDR {cidr}: "
                f"{count} pod(s) of this object get no IP (as pods stay in ContainerCreating on a full node)")
    pods = [results[i] for i in sorted(results)]
    return pods


def service_ip_for(key: str, cidr: ipaddress.IPv4Network, used: set) -> ipaddress.IPv4Address:
    size = cidr.num_addresses - 2
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    for probe in range(size):
        cand = cidr.network_address + 1 + (h + probe) % size
        if cand not in used and int(cand) - int(cidr.network_address) not in (1, 10):
            return cand
    raise ValueError(f"service CIDR {cidr} is full")


