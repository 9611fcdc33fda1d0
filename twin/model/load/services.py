"""Services: ports, cluster IPs, external and load-balancer addresses."""
from __future__ import annotations

import ipaddress

from twin.model.load.context import Pending
from twin.model.load.placement import service_ip_for
from twin.model.objects import Service, ServicePort, labels_of


#: Service fields Kubernetes and Cilium act on that the twin accepts but does not model:
#: (field, the value that changes behaviour, what Cilium would do)
UNMODELLED = (
    ("sessionAffinity", "ClientIP", "Cilium pins each client to one backend"),
    ("internalTrafficPolicy", "Local", "Cilium sends pod traffic only to backends on the client's node"),
    ("publishNotReadyAddresses", True, "not-ready pods stay backends"),
)


def _warn_unmodelled(ctx, spec: dict) -> None:
    for fld, value, what in UNMODELLED:
        if spec.get(fld) == value:
            ctx.warn(("spec", fld), f"{value!r} is not modelled by the twin ({what}); the twin predicts as if it were unset")
    if spec.get("loadBalancerSourceRanges"):
        ctx.warn(("spec", "loadBalancerSourceRanges"), "is not modelled by the twin (Cilium drops other sources at "
                 "the LoadBalancer IP); the twin predicts as if it were unset")


def build_services(pending: Pending, cidr: ipaddress.IPv4Network) -> list[Service]:
    out, used, seen = [], set(), set()
    # honour requested clusterIPs first
    for rec in pending.services:
        ip = rec.spec.get("clusterIP")
        if ip and ip != "None":
            try:
                used.add(ipaddress.IPv4Address(ip))
            except ValueError:
                pass
    for rec in pending.services:
        ctx, ns, meta, spec = rec.ctx, rec.namespace, rec.meta, rec.spec
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
            cip = service_ip_for(key, cidr, used)
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
        _warn_unmodelled(ctx, spec)
        etp = spec.get("externalTrafficPolicy", "Cluster")
        if etp not in ("Cluster", "Local"):
            ctx.err(("spec", "externalTrafficPolicy"), f"must be Cluster or Local, got {etp!r}")
        out.append(Service(ns, meta["name"], stype, cip, tuple(ports), labels_of(spec.get("selector")),
                           labels_of(meta.get("labels")), labels_of(meta.get("annotations")), tuple(ext), lbip,
                           spec.get("loadBalancerClass", ""), etp, ctx.origin))
    return out
