"""Document dispatch: each parsed document goes to the list of its kind; a
Deployment becomes its replica pods; a ``v1/List`` is unpacked."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable

from twin.model import limits, schema
from twin.model.findings import Finding, error
from twin.model.load.context import Ctx, Pending, PendingObject, PendingPod
from twin.model.load.selectors import parse_selector, selector_matches
from twin.model.objects import labels_of
from twin.model.yamlsrc import Document, Source, parse_documents

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CLUSTER_SCOPED = ("Namespace", "Node", "CiliumL2AnnouncementPolicy", "CiliumLoadBalancerIPPool")


def load_documents(sources: Iterable[Source]) -> tuple[list[Document], list[Finding]]:
    docs, findings = [], []
    for src in sources:
        d, f = parse_documents(src)
        docs.extend(d)
        findings.extend(f)
    return docs, findings


def drop_nulls(data):
    """Mappings without their ``null`` values, recursively (list items are kept)."""
    if isinstance(data, dict):
        return {k: drop_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [drop_nulls(v) for v in data]
    return data


def collect(doc: Document, pending: Pending, findings: list) -> None:
    data = doc.data
    if not isinstance(data, dict):
        findings.append(error("<document>", "", f"a manifest must be a mapping, got {type(data).__name__}", doc.file, doc.line(())))
        return
    api, kind = data.get("apiVersion"), data.get("kind")
    for fld, val in (("apiVersion", api), ("kind", kind)):
        if val is not None and not isinstance(val, str):
            findings.append(error(f"document {doc.index} of {doc.file}", fld,
                                  f"must be a string, got {type(val).__name__}", doc.file, doc.line((fld,))))
            return
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    name = meta.get("name", "<unnamed>")
    ns = meta.get("namespace")
    # Name namespaced objects as the later checks do (default namespace filled in),
    # so every finding about one object carries the same object name.
    shown_ns = ns or ("default" if any(k == kind for _, k in schema.KINDS)
                      and kind not in CLUSTER_SCOPED else None)
    obj = f"{kind} {shown_ns}/{name}" if shown_ns else f"{kind} {name}"
    if not kind:
        obj = f"document {doc.index} of {doc.file}"
    ctx = Ctx(doc, str(kind), obj, findings)
    if kind == "List" and api == "v1":
        items = data.get("items") or []
        if not isinstance(items, list):
            ctx.err(("items",), f"must be a list, got {type(items).__name__}")
            return
        for i, item in enumerate(items):
            sub = Document(item, doc.file, doc.index, {k[2:]: v for k, v in doc.lines.items() if k[:2] == ("items", i)})
            collect(sub, pending, findings)
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
    data = drop_nulls(data)  # as the API server does: an explicit null is a field left out
    meta = data["metadata"]
    cluster_scoped = kind in CLUSTER_SCOPED
    if cluster_scoped and ns:
        ctx.warn(("metadata", "namespace"), f"{kind} is cluster-scoped; the namespace {ns!r} is ignored")
    if not cluster_scoped and not ns:
        ns = "default"  # ctx.obj already names it so
    if kind == "Pod":
        if len(pending.pods) >= limits.MAX_PODS:
            ctx.err((), f"the cluster would have more than {limits.MAX_PODS} pods (limit MAX_PODS)")
            return
        pending.pods.append(PendingPod(ctx, ns, meta, data.get("spec") or {}, data.get("status") or {}))
    elif kind == "Deployment":
        _expand_deployment(ctx, ns, meta, data.get("spec") or {}, pending)
    else:
        pending.by_kind(kind).append(PendingObject(ctx, ns, data))


_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _alnum(seed: str, n: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:n])


def _expand_deployment(ctx: Ctx, ns: str, meta: dict, spec: dict, pending: Pending) -> None:
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
    if replicas > limits.MAX_REPLICAS:
        ctx.err(("spec", "replicas"), f"{replicas} is more than the limit of {limits.MAX_REPLICAS} replicas (MAX_REPLICAS)")
        return
    if len(pending.pods) + replicas > limits.MAX_PODS:
        ctx.err(("spec", "replicas"), f"the cluster would have more than {limits.MAX_PODS} pods (limit MAX_PODS)")
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
        pctx = Ctx(ctx.doc, "Pod", f"Pod {ns}/{pname} (from Deployment {ns}/{meta['name']})", ctx.findings)
        pending.pods.append(PendingPod(pctx, ns, pmeta, template.get("spec") or {}, {}, f"Deployment/{meta['name']}"))
