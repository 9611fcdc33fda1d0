"""Build a :class:`Cluster` from parsed manifest documents and a values document.

Pure: callers read files and pass :class:`Source` texts.  Validation is strict
and complete: every error found is reported (file, object, field path, value,
line), and a cluster is only returned when there are none.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from twin.model import schema, topology
from twin.model.findings import Finding, InputError, error, warning
from twin.model.objects import (
    Cluster, Container, ContainerPort, HTTPRule, IPBlock, L2AnnouncementPolicy, L2Settings,
    LabelSelector, LBIPPool, NetworkPolicy, Node, Origin, PeerRule, Pod, PolicySpec,
    PortProtocol, PortRule, ProbeSpec, Requirement, Service, ServicePort, Values, labels_of,
)
from twin.model.yamlsrc import Document, Source, parse_documents

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}
PROTOCOLS = {"TCP", "UDP", "SCTP", "ANY"}
ENTITIES = {"world", "host", "remote-node", "cluster", "all", "health", "init", "unmanaged",
            "kube-apiserver", "ingress"}
DURATION = re.compile(r"^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go ``time.ParseDuration`` subset, in seconds.  Raises ValueError."""
    text = str(text).strip()
    if text == "0":
        return 0.0
    if not DURATION.match(text):
        raise ValueError(f"not a Go duration: {text!r} (examples: 15s, 200ms, 1m30s)")
    return sum(float(n) * _UNIT[u] for n, u in DURATION_PART.findall(text))


@dataclass
class _Ctx:
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


@dataclass
class _Pending:
    """Objects collected before nodes, scheduling and addresses are known."""

    nodes: list = field(default_factory=list)  # (ctx, data)
    namespaces: list = field(default_factory=list)
    pods: list = field(default_factory=list)  # (ctx, meta, spec, owner)
    services: list = field(default_factory=list)
    policies: list = field(default_factory=list)
    l2: list = field(default_factory=list)
    pools: list = field(default_factory=list)


# ---------------------------------------------------------------- selectors

def parse_selector(ctx: _Ctx, data: Any, path: tuple) -> LabelSelector:
    if not isinstance(data, dict):
        return LabelSelector()
    reqs = []
    for i, expr in enumerate(data.get("matchExpressions") or []):
        p = path + ("matchExpressions", i)
        op = expr.get("operator")
        values = tuple(str(v) for v in (expr.get("values") or []))
        if not expr.get("key"):
            ctx.err(p + ("key",), "is required")
            continue
        if op not in OPERATORS:
            ctx.err(p + ("operator",), f"must be one of {sorted(OPERATORS)}, got {op!r}")
            continue
        if op in ("In", "NotIn") and not values:
            ctx.err(p + ("values",), f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            ctx.err(p + ("values",), f"must be empty for operator {op}, got {list(values)}")
        reqs.append(Requirement(str(expr["key"]), op, values))
    return LabelSelector(labels_of(data.get("matchLabels")), tuple(reqs))


# ---------------------------------------------------------------- documents

def _collect(doc: Document, pending: _Pending, findings: list) -> None:
    data = doc.data
    if not isinstance(data, dict):
        findings.append(error("<document>", "", f"a manifest must be a mapping, got {type(data).__name__}", doc.file, doc.line(())))
        return
    api, kind = data.get("apiVersion"), data.get("kind")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    name = meta.get("name", "<unnamed>")
    ns = meta.get("namespace")
    # Name namespaced objects as the later checks do (default namespace filled in),
    # so every finding about one object carries the same object name.
    shown_ns = ns or ("default" if any(k == kind for _, k in schema.KINDS)
                      and kind not in ("Namespace", "Node", "CiliumL2AnnouncementPolicy", "CiliumLoadBalancerIPPool") else None)
    obj = f"{kind} {shown_ns}/{name}" if shown_ns else f"{kind} {name}"
    if not kind:
        obj = f"document {doc.index} of {doc.file}"
    ctx = _Ctx(doc, str(kind), obj, findings)
    if kind == "List" and api == "v1":
        for i, item in enumerate(data.get("items") or []):
            sub = Document(item, doc.file, doc.index, {k[2:]: v for k, v in doc.lines.items() if k[:2] == ("items", i)})
            _collect(sub, pending, findings)
        return
    if not kind or not api:
        ctx.err((), "not a Kubernetes object: apiVersion and kind are required (a Helm values file goes to --values)")
        return
    sch = schema.KINDS.get((api, kind))
    if sch is None:
        known = sorted({k for _, k in schema.KINDS})
        if kind in known:
            apis = sorted(a for a, k in schema.KINDS if k == kind)
            ctx.err(("apiVersion",), f"{kind} is served as {apis}, got {api!r}")
        else:
            ctx.err(("kind",), f"unsupported kind {kind!r} (supported: {', '.join(known)})")
        return
    before = len(findings)
    for path, msg in schema.check(data, sch):
        ctx.err(path, msg)
    if not meta.get("name"):
        ctx.err(("metadata", "name"), "is required")
    elif kind != "Node" and not DNS1123.match(str(name)):
        ctx.err(("metadata", "name"), f"must be a DNS-1123 name, got {name!r}")
    if len(findings) > before:
        return
    cluster_scoped = kind in ("Namespace", "Node", "CiliumL2AnnouncementPolicy", "CiliumLoadBalancerIPPool")
    if cluster_scoped and ns:
        ctx.warn(("metadata", "namespace"), f"{kind} is cluster-scoped; the namespace {ns!r} is ignored")
    if not cluster_scoped and not ns:
        ns = "default"
        ctx.obj = f"{kind} default/{name}"
    target = {
        "Namespace": pending.namespaces, "Node": pending.nodes, "Service": pending.services,
        "CiliumNetworkPolicy": pending.policies, "CiliumL2AnnouncementPolicy": pending.l2,
        "CiliumLoadBalancerIPPool": pending.pools,
    }
    if kind == "Pod":
        pending.pods.append((ctx, ns, meta, data.get("spec") or {}, data.get("status") or {}, ""))
    elif kind == "Deployment":
        _expand_deployment(ctx, ns, meta, data.get("spec") or {}, pending)
    else:
        target[kind].append((ctx, ns, data))


_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _alnum(seed: str, n: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:n])


def _expand_deployment(ctx: _Ctx, ns: str, meta: dict, spec: dict, pending: _Pending) -> None:
    """Replicas become pods named ``<name>-<template-hash10>-<suffix5>``.

    The hash is of the pod template, the suffix of the name and replica
    index, so names are stable for the same input (like the pod-template-hash
    label, unlike Kubernetes' random suffix).
    """
    replicas = spec.get("replicas", 1)
    if replicas is None:
        replicas = 1
    if replicas < 0:
        ctx.err(("spec", "replicas"), f"must be >= 0, got {replicas}")
        return
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    tlabels = tmeta.get("labels") or {}
    selector = parse_selector(ctx, spec.get("selector"), ("spec", "selector"))
    if spec.get("selector") is None:
        ctx.err(("spec", "selector"), "is required")
        return
    if not selector_matches(selector, labels_of(tlabels)):
        ctx.err(("spec", "template", "metadata", "labels"),
                f"selector {spec.get('selector')} does not match template labels {tlabels}")
        return
    thash = _alnum(json.dumps(template, sort_keys=True, default=str), 10)
    for i in range(replicas):
        pname = f"{meta['name']}-{thash}-{_alnum(meta['name'] + str(i), 5)}"
        pmeta = {"name": pname, "namespace": ns,
                 "labels": {**tlabels, "pod-template-hash": thash},
                 "annotations": tmeta.get("annotations") or {}}
        pctx = _Ctx(ctx.doc, "Pod", f"Pod {ns}/{pname} (from Deployment {ns}/{meta['name']})", ctx.findings)
        pending.pods.append((pctx, ns, pmeta, template.get("spec") or {}, {}, f"Deployment/{meta['name']}"))


def selector_matches(sel: LabelSelector, labels: tuple) -> bool:
    """Kubernetes label-selector semantics over plain labels."""
    return sel.matches(dict(labels))


# ---------------------------------------------------------------- nodes

def _build_nodes(pending: _Pending) -> list[Node]:
    nodes: list[Node] = []
    if not pending.nodes:
        for i, (name, labels, cp) in enumerate(topology.SEED_NODES):
            taints = ((topology.CONTROL_PLANE_LABEL, "NoSchedule"),) if cp else ()
            nodes.append(Node(name, labels_of(labels), topology.node_ip(i), topology.pod_cidr(i),
                              (topology.UPLINK,), taints))
        return nodes
    for i, (ctx, _, data) in enumerate(pending.nodes):
        meta, spec, status = data["metadata"], data.get("spec") or {}, data.get("status") or {}
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
        taints = []
        for j, t in enumerate(spec.get("taints") or []):
            if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                ctx.err(("spec", "taints", j, "effect"), f"must be NoSchedule, PreferNoSchedule or NoExecute, got {t.get('effect')!r}")
            taints.append((str(t.get("key")), str(t.get("effect"))))
        ifaces = (meta.get("annotations") or {}).get("twin.dev/interfaces")
        interfaces = tuple(x.strip() for x in ifaces.split(",")) if ifaces else (topology.UPLINK,)
        nodes.append(Node(meta["name"], labels_of(labels), ip, cidr, interfaces, tuple(taints), ctx.origin))
    return nodes


# ---------------------------------------------------------------- pods

def _containers(ctx: _Ctx, spec: dict) -> tuple[Container, ...]:
    out = []
    if not spec.get("containers"):
        ctx.err(("spec", "containers"), "at least one container is required")
    for i, c in enumerate(spec.get("containers") or []):
        ports = []
        for j, p in enumerate(c.get("ports") or []):
            port = p.get("containerPort")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                ctx.err(("spec", "containers", i, "ports", j, "containerPort"), f"must be 1-65535, got {port!r}")
                continue
            proto = p.get("protocol", "TCP")
            if proto not in ("TCP", "UDP", "SCTP"):
                ctx.err(("spec", "containers", i, "ports", j, "protocol"), f"must be TCP, UDP or SCTP, got {proto!r}")
            ports.append(ContainerPort(port, p.get("name", ""), proto))
        if not c.get("name"):
            ctx.err(("spec", "containers", i, "name"), "is required")
        if not c.get("image"):
            ctx.err(("spec", "containers", i, "image"), "is required")
        out.append(Container(c.get("name", ""), c.get("image", ""), tuple(c.get("command") or ()),
                             tuple(str(a) for a in (c.get("args") or ())), tuple(ports),
                             _readiness(ctx, c.get("readinessProbe"), ("spec", "containers", i, "readinessProbe"))))
    return tuple(out)


def _readiness(ctx: _Ctx, rp: dict | None, path: tuple) -> ProbeSpec | None:
    if rp is None:
        return None
    kinds = [k for k in ("httpGet", "tcpSocket") if rp.get(k) is not None]
    if len(kinds) != 1:
        ctx.err(path, "a readiness probe needs exactly one of httpGet, tcpSocket")
        return None
    kind = kinds[0]
    port = rp[kind].get("port")
    if port is None:
        ctx.err(path + (kind, "port"), "is required")
        return None
    if isinstance(port, int) and not 1 <= port <= 65535:
        ctx.err(path + (kind, "port"), f"must be 1-65535 or a port name, got {port!r}")
        return None
    nums = {}
    for fld, default, minimum in (("periodSeconds", 10, 1), ("timeoutSeconds", 1, 1), ("failureThreshold", 3, 1),
                                  ("successThreshold", 1, 1), ("initialDelaySeconds", 0, 0)):
        v = rp.get(fld, default)
        if v < minimum:
            ctx.err(path + (fld,), f"must be >= {minimum}, got {v}")
            v = default
        nums[fld] = v
    return ProbeSpec(kind, port, rp[kind].get("path", "/") if kind == "httpGet" else "/",
                     float(nums["periodSeconds"]), float(nums["timeoutSeconds"]), nums["failureThreshold"],
                     nums["successThreshold"], float(nums["initialDelaySeconds"]))


def _tolerates(spec: dict, taint: tuple[str, str]) -> bool:
    for t in spec.get("tolerations") or []:
        if not isinstance(t, dict):
            continue
        if t.get("operator") == "Exists" and not t.get("key"):
            return True
        if t.get("key") == taint[0] and (not t.get("effect") or t.get("effect") == taint[1]):
            return True
    return False


def _anti_affinity(spec: dict) -> list[LabelSelector]:
    """Required pod anti-affinity terms on kubernetes.io/hostname (the seed's netperf)."""
    aff = spec.get("affinity") or {}
    terms = ((aff.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")) or []
    out = []
    for t in terms:
        if isinstance(t, dict) and t.get("topologyKey") == "kubernetes.io/hostname":
            ls = t.get("labelSelector") or {}
            reqs = tuple(Requirement(e["key"], e["operator"], tuple(e.get("values") or ()))
                         for e in ls.get("matchExpressions") or [] if isinstance(e, dict))
            out.append(LabelSelector(labels_of(ls.get("matchLabels")), reqs))
    return out


def _schedule(ctx: _Ctx, ns: str, spec: dict, nodes: list[Node], placed: list) -> str | None:
    """Deterministic scheduler for pods without ``nodeName``.

    Feasible nodes: no NoSchedule/NoExecute taint the pod does not tolerate,
    ``nodeSelector`` matches, required pod anti-affinity on hostname holds.
    Among them, the node with the fewest pods; ties go to manifest order.
    """
    node_sel = spec.get("nodeSelector") or {}
    anti = _anti_affinity(spec)
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


def _build_pods(pending: _Pending, nodes: list[Node]) -> list[Pod]:
    by_name = {n.name: n for n in nodes}
    placed: list = []  # (ns, node, labels)
    next_host = {n.name: topology.FIRST_POD_HOST for n in nodes}
    used: set = set()
    pods = []
    seen = set()
    order = sorted(range(len(pending.pods)), key=lambda i: 0 if (pending.pods[i][3].get("nodeName")) else 1)
    results: dict[int, Pod] = {}
    for i in order:
        ctx, ns, meta, spec, status, owner = pending.pods[i]
        key = (ns, meta["name"])
        if key in seen:
            ctx.err(("metadata", "name"), f"duplicate Pod {ns}/{meta['name']}")
            continue
        seen.add(key)
        containers = _containers(ctx, spec)
        labels = labels_of(meta.get("labels"))
        node = spec.get("nodeName")
        if node and node not in by_name:
            ctx.err(("spec", "nodeName"), f"no such node {node!r} (nodes: {', '.join(by_name)})")
            continue
        if not node:
            node = _schedule(ctx, ns, spec, nodes, placed)
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
                ctx.err(("spec", "nodeName"), f"node {node} has no free address left in {cidr}")
                break
            if cand not in used:
                ip = cand
        if ip is None:
            continue
        used.add(ip)
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        results[i] = Pod(ns, meta["name"], labels, node, ip, containers,
                         labels_of(meta.get("annotations")), sa, owner, ctx.origin)
    pods = [results[i] for i in sorted(results)]
    return pods


# ---------------------------------------------------------------- services

def _service_ip_for(key: str, cidr: ipaddress.IPv4Network, used: set) -> ipaddress.IPv4Address:
    size = cidr.num_addresses - 2
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    for probe in range(size):
        cand = cidr.network_address + 1 + (h + probe) % size
        if cand not in used and int(cand) - int(cidr.network_address) not in (1, 10):
            return cand
    raise ValueError(f"service CIDR {cidr} is full")


def _build_services(pending: _Pending, cidr: ipaddress.IPv4Network) -> list[Service]:
    out, used, seen = [], set(), set()
    # honour requested clusterIPs first
    for ctx, ns, data in pending.services:
        ip = (data.get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            try:
                used.add(ipaddress.IPv4Address(ip))
            except ValueError:
                pass
    for ctx, ns, data in pending.services:
        meta, spec = data["metadata"], data.get("spec") or {}
        key = f"{ns}/{meta['name']}"
        if key in seen:
            ctx.err(("metadata", "name"), f"duplicate Service {key}")
            continue
        seen.add(key)
        stype = spec.get("type", "ClusterIP")
        if stype not in ("ClusterIP", "LoadBalancer", "NodePort", "ExternalName"):
            ctx.err(("spec", "type"), f"must be ClusterIP, NodePort, LoadBalancer or ExternalName, got {stype!r}")
            continue
        if stype == "ExternalName":
            ctx.err(("spec", "type"), "ExternalName services are not modelled by this twin")
            continue
        ports = []
        names = set()
        for i, p in enumerate(spec.get("ports") or []):
            path = ("spec", "ports", i)
            port = p.get("port")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                ctx.err(path + ("port",), f"must be 1-65535, got {port!r}")
                continue
            tp = p.get("targetPort", port)
            if isinstance(tp, int) and not 1 <= tp <= 65535:
                ctx.err(path + ("targetPort",), f"must be 1-65535 or a port name, got {tp!r}")
                continue
            if isinstance(tp, str) and tp.isdigit():
                tp = int(tp)
            proto = p.get("protocol", "TCP")
            if proto not in ("TCP", "UDP", "SCTP"):
                ctx.err(path + ("protocol",), f"must be TCP, UDP or SCTP, got {proto!r}")
                continue
            if len(spec.get("ports")) > 1 and not p.get("name"):
                ctx.err(path + ("name",), "is required when a Service has more than one port")
            if p.get("name") in names:
                ctx.err(path + ("name",), f"duplicate port name {p.get('name')!r}")
            names.add(p.get("name"))
            ports.append(ServicePort(port, tp, proto, p.get("name", "")))
        if not ports:
            ctx.err(("spec", "ports"), "at least one port is required")
            continue
        cip_raw = spec.get("clusterIP")
        if cip_raw == "None":
            cip = None
        elif cip_raw:
            try:
                cip = ipaddress.IPv4Address(cip_raw)
            except ValueError:
                ctx.err(("spec", "clusterIP"), f"not an IPv4 address: {cip_raw!r}")
                continue
            if cip not in cidr:
                ctx.err(("spec", "clusterIP"), f"{cip} is outside the service CIDR {cidr}")
                continue
        else:
            cip = _service_ip_for(key, cidr, used)
            used.add(cip)
        ext = []
        for i, e in enumerate(spec.get("externalIPs") or []):
            try:
                ext.append(ipaddress.IPv4Address(e))
            except ValueError:
                ctx.err(("spec", "externalIPs", i), f"not an IPv4 address: {e!r}")
        lbip = None
        if spec.get("loadBalancerIP"):
            try:
                lbip = ipaddress.IPv4Address(spec["loadBalancerIP"])
            except ValueError:
                ctx.err(("spec", "loadBalancerIP"), f"not an IPv4 address: {spec['loadBalancerIP']!r}")
        etp = spec.get("externalTrafficPolicy", "Cluster")
        if etp not in ("Cluster", "Local"):
            ctx.err(("spec", "externalTrafficPolicy"), f"must be Cluster or Local, got {etp!r}")
        out.append(Service(ns, meta["name"], stype, cip, tuple(ports), labels_of(spec.get("selector")),
                           labels_of(meta.get("labels")), labels_of(meta.get("annotations")), tuple(ext), lbip,
                           spec.get("loadBalancerClass", ""), etp, ctx.origin))
    return out


# ---------------------------------------------------------------- policies

def _port_rules(ctx: _Ctx, rules: list, path: tuple, deny: bool) -> tuple[PortRule, ...]:
    out = []
    for i, pr in enumerate(rules):
        p = path + (i,)
        ports = []
        for j, pp in enumerate(pr.get("ports") or []):
            pq = p + ("ports", j)
            raw = pp.get("port", 0)
            proto = str(pp.get("protocol", "ANY"))
            if proto not in PROTOCOLS:
                hint = " (upper case: the CRD schema is case-sensitive)" if proto.upper() in PROTOCOLS else ""
                ctx.err(pq + ("protocol",), f"must be one of TCP, UDP, SCTP, ANY, got {pp.get('protocol')!r}{hint}")
                continue
            if isinstance(raw, str) and raw.isdigit():
                raw = int(raw)
            if isinstance(raw, int):
                if not 0 <= raw <= 65535:
                    ctx.err(pq + ("port",), f"must be a port number 0-65535 or a port name, got {pp.get('port')!r}")
                    continue
            elif not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", raw or "") or len(raw) > 15:
                ctx.err(pq + ("port",), f"must be a port number 0-65535 or a port name (IANA_SVC_NAME), got {pp.get('port')!r}")
                continue
            end = pp.get("endPort")
            if end is not None:
                if isinstance(raw, str):
                    ctx.err(pq + ("endPort",), "cannot be used with a named port")
                    continue
                if not 0 < end <= 65535 or end < raw:
                    ctx.err(pq + ("endPort",), f"must be between port ({raw}) and 65535, got {end}")
                    continue
            ports.append(PortProtocol(raw, end, proto))
        http = None
        rules_block = pr.get("rules")
        if rules_block and rules_block.get("http") is not None:
            if deny:
                ctx.err(p + ("rules",), "L7 rules are not allowed in deny policies")
                continue
            http_rules = []
            for j, h in enumerate(rules_block["http"]):
                for fld in ("method", "path"):
                    if h.get(fld):
                        try:
                            re.compile(h[fld])
                        except re.error as exc:
                            ctx.err(p + ("rules", "http", j, fld), f"not a valid regex {h[fld]!r}: {exc}")
                http_rules.append(HTTPRule(h.get("method", ""), h.get("path", ""), h.get("host", ""), tuple(h.get("headers") or ())))
            for j, pp in enumerate(ports):
                if pp.protocol not in ("TCP", "ANY"):
                    ctx.err(p + ("ports", j, "protocol"), f"L7 rules can only apply to TCP, got {pp.protocol}")
            if not ports:
                ctx.err(p + ("ports",), "L7 rules need at least one port")
            http = tuple(http_rules)
        out.append(PortRule(tuple(ports), http))
    return tuple(out)


def _peer_rules(ctx: _Ctx, items: list | None, path: tuple, peer_key: str, ent_key: str, deny: bool) -> tuple[PeerRule, ...]:
    out = []
    for i, item in enumerate(items or []):
        p = path + (i,)
        endpoints = None
        if item.get(peer_key) is not None:
            endpoints = tuple(parse_selector(ctx, s, p + (peer_key, j)) for j, s in enumerate(item[peer_key]))
        entities = None
        if item.get(ent_key) is not None:
            for j, e in enumerate(item[ent_key]):
                if e not in ENTITIES:
                    ctx.err(p + (ent_key, j), f"unknown entity {e!r} (known: {', '.join(sorted(ENTITIES))})")
            entities = tuple(item[ent_key])
        to_ports = None
        if item.get("toPorts") is not None:
            to_ports = _port_rules(ctx, item["toPorts"], p + ("toPorts",), deny)
        out.append(PeerRule(i, endpoints, entities, to_ports))
    return tuple(out)


def _policy_spec(ctx: _Ctx, rule: dict, path: tuple, index: int) -> PolicySpec | None:
    if rule.get("endpointSelector") is not None and rule.get("nodeSelector") is not None:
        ctx.err(path, "a rule cannot have both endpointSelector and nodeSelector")
        return None
    if rule.get("nodeSelector") is not None:
        ctx.err(path + ("nodeSelector",), "host policies (nodeSelector) are only valid in CiliumClusterwideNetworkPolicy")
        return None
    if rule.get("endpointSelector") is None:
        ctx.err(path + ("endpointSelector",), "is required (or nodeSelector in a clusterwide policy)")
        return None
    sections = ("ingress", "ingressDeny", "egress", "egressDeny")
    if not any(rule.get(s) for s in sections):
        present = [s for s in sections if s in rule]
        why = f" ({', '.join(present)} present but empty)" if present else ""
        ctx.err(path, f"rule must have at least one of ingress, ingressDeny, egress, egressDeny{why}")
        return None
    edd = rule.get("enableDefaultDeny") or {}
    return PolicySpec(
        parse_selector(ctx, rule["endpointSelector"], path + ("endpointSelector",)),
        _peer_rules(ctx, rule.get("ingress"), path + ("ingress",), "fromEndpoints", "fromEntities", False),
        _peer_rules(ctx, rule.get("egress"), path + ("egress",), "toEndpoints", "toEntities", False),
        _peer_rules(ctx, rule.get("ingressDeny"), path + ("ingressDeny",), "fromEndpoints", "fromEntities", True),
        _peer_rules(ctx, rule.get("egressDeny"), path + ("egressDeny",), "toEndpoints", "toEntities", True),
        str(rule.get("description", "")), edd.get("ingress"), edd.get("egress"), index, schema.fmt_path(path),
    )


def build_policy(ctx: _Ctx, ns: str, data: dict) -> NetworkPolicy | None:
    specs = []
    if data.get("spec") is None and not data.get("specs"):
        ctx.err(("spec",), "a CiliumNetworkPolicy needs spec or specs")
        return None
    if data.get("spec") is not None:
        s = _policy_spec(ctx, data["spec"], ("spec",), 0)
        if s:
            specs.append(s)
    for i, rule in enumerate(data.get("specs") or []):
        s = _policy_spec(ctx, rule, ("specs", i), i)
        if s:
            specs.append(s)
    return NetworkPolicy(ns, data["metadata"]["name"], tuple(specs), ctx.origin)


# ---------------------------------------------------------------- L2 and pools

def _build_l2(ctx: _Ctx, data: dict) -> L2AnnouncementPolicy:
    spec = data.get("spec") or {}
    ifaces = tuple(spec.get("interfaces") or ())
    for i, rx in enumerate(ifaces):
        try:
            re.compile(rx)
        except re.error as exc:
            ctx.err(("spec", "interfaces", i), f"not a valid regex {rx!r}: {exc}")
    ss = parse_selector(ctx, spec["serviceSelector"], ("spec", "serviceSelector")) if spec.get("serviceSelector") is not None else None
    ns_ = parse_selector(ctx, spec["nodeSelector"], ("spec", "nodeSelector")) if spec.get("nodeSelector") is not None else None
    if not spec.get("externalIPs") and not spec.get("loadBalancerIPs"):
        ctx.warn(("spec",), "neither externalIPs nor loadBalancerIPs is true: this policy announces nothing")
    return L2AnnouncementPolicy(data["metadata"]["name"], ss, ns_, ifaces, bool(spec.get("externalIPs")),
                                bool(spec.get("loadBalancerIPs")), ctx.origin)


def _build_pool(ctx: _Ctx, data: dict) -> LBIPPool | None:
    spec = data.get("spec") or {}
    key = "blocks"
    if spec.get("cidrs") is not None:
        ctx.warn(("spec", "cidrs"), "is deprecated; Cilium reads it as spec.blocks")
        key = "cidrs"
        if spec.get("blocks") is not None:
            ctx.err(("spec",), "use either blocks or cidrs, not both")
            return None
    blocks = []
    for i, b in enumerate(spec.get(key) or []):
        p = ("spec", key, i)
        try:
            if b.get("cidr"):
                if b.get("start") or b.get("stop"):
                    ctx.err(p, "a block has either cidr or start/stop")
                    continue
                blocks.append(IPBlock(cidr=ipaddress.IPv4Network(b["cidr"])))
            elif b.get("start"):
                start = ipaddress.IPv4Address(b["start"])
                stop = ipaddress.IPv4Address(b.get("stop") or b["start"])
                if stop < start:
                    ctx.err(p + ("stop",), f"{stop} is before start {start}")
                    continue
                blocks.append(IPBlock(start=start, stop=stop))
            else:
                ctx.err(p, "a block needs cidr or start")
        except ValueError as exc:
            ctx.err(p, f"bad address: {exc}")
    if not blocks:
        ctx.err(("spec", "blocks"), "at least one block is required")
        return None
    afl = spec.get("allowFirstLastIPs", "No")
    if afl not in ("Yes", "No"):
        ctx.err(("spec", "allowFirstLastIPs"), f"must be \"Yes\" or \"No\", got {afl!r}")
    sel = parse_selector(ctx, spec["serviceSelector"], ("spec", "serviceSelector")) if spec.get("serviceSelector") is not None else None
    return LBIPPool(data["metadata"]["name"], tuple(blocks), afl == "Yes", sel, bool(spec.get("disabled")), ctx.origin)


# ---------------------------------------------------------------- values

VALUES_SCHEMA = {
    "kubeProxyReplacement": "any",
    "bandwidthManager": {"enabled": "bool", "bbr": "bool"},
    "l2announcements": {"enabled": "bool", "leaseDuration": "str", "leaseRenewDeadline": "str", "leaseRetryPeriod": "str"},
    "externalIPs": {"enabled": "bool"},
    "socketLB": {"enabled": "bool", "hostNamespaceOnly": "bool", "terminatePodConnections": "bool"},
    "k8sClientRateLimit": {"qps": "int", "burst": "int"},
    "allowLocalhost": "str",
}


def build_values(doc: Document | None, findings: list) -> Values:
    if doc is None:
        return Values()
    data = doc.data or {}
    ctx = _Ctx(doc, "values", "values", findings)
    if not isinstance(data, dict):
        ctx.err((), "a values file must be a mapping")
        return Values()
    for k in data:
        if k not in VALUES_SCHEMA:
            ctx.warn((k,), "not modelled by the twin; Helm passes it to the chart, the twin ignores it")
    known = {k: v for k, v in data.items() if k in VALUES_SCHEMA}
    for path, msg in schema.check(known, VALUES_SCHEMA):
        ctx.err(path, msg)
    kpr = data.get("kubeProxyReplacement", True)
    kpr_on = kpr in (True, "true", "strict", "True")
    if kpr not in (True, False, "true", "false", "strict", "partial", "disabled", "True", "False"):
        ctx.err(("kubeProxyReplacement",), f"must be true or false, got {kpr!r}")
    l2 = data.get("l2announcements") or {}
    timings = {}
    for fld, attr, default in (("leaseDuration", "lease_duration_s", 15.0), ("leaseRenewDeadline", "renew_deadline_s", 5.0),
                               ("leaseRetryPeriod", "retry_period_s", 2.0)):
        raw = l2.get(fld)
        if raw is None:
            timings[attr] = default
            continue
        try:
            timings[attr] = parse_duration(str(raw))
        except ValueError as exc:
            ctx.err(("l2announcements", fld), str(exc))
            timings[attr] = default
    return Values(
        kube_proxy_replacement=kpr_on,
        bandwidth_manager=bool((data.get("bandwidthManager") or {}).get("enabled", False)),
        external_ips=bool((data.get("externalIPs") or {}).get("enabled", False)),
        l2=L2Settings(bool(l2.get("enabled", False)), **timings),
        socket_lb=bool((data.get("socketLB") or {}).get("enabled", kpr_on)),
        terminate_pod_connections=bool((data.get("socketLB") or {}).get("terminatePodConnections", True)),
        allow_localhost=str(data.get("allowLocalhost", "auto")),
    )


# ---------------------------------------------------------------- entry points

def load_documents(sources: Iterable[Source]) -> tuple[list[Document], list[Finding]]:
    docs, findings = [], []
    for src in sources:
        d, f = parse_documents(src)
        docs.extend(d)
        findings.extend(f)
    return docs, findings


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
    pending = _Pending()
    for doc in docs:
        _collect(doc, pending, findings)
    vals = build_values(vdoc, findings)
    nodes = _build_nodes(pending)
    namespaces = ["default", "kube-system"]
    for ctx, _, data in pending.namespaces:
        if data["metadata"]["name"] not in namespaces:
            namespaces.append(data["metadata"]["name"])
    pods = _build_pods(pending, nodes)
    services = _build_services(pending, topology.SERVICE_CIDR)
    policies, seen = [], {}
    for ctx, ns, data in pending.policies:
        pol = build_policy(ctx, ns, data)
        if pol is None:
            continue
        if pol.key in seen:
            ctx.warn(("metadata", "name"), f"CiliumNetworkPolicy {pol.key} appears again; like kubectl apply, the later one replaces the earlier")
            policies[seen[pol.key]] = pol
            continue
        seen[pol.key] = len(policies)
        policies.append(pol)
    l2 = [_build_l2(ctx, data) for ctx, _, data in pending.l2]
    pools = [p for p in (_build_pool(ctx, data) for ctx, _, data in pending.pools) if p]
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
    pending = _Pending()
    for doc in docs:
        _collect(doc, pending, findings)
    others = pending.pods or pending.services or pending.nodes or pending.l2 or pending.pools or pending.namespaces
    if others:
        findings.append(error("<apply>", "", "only CiliumNetworkPolicy objects can be applied in a step", src.name))
    pols = [p for p in (build_policy(ctx, ns, data) for ctx, ns, data in pending.policies) if p]
    errors = [f for f in findings if f.severity.value == "error"]
    if errors:
        raise InputError(errors)
    return pols
