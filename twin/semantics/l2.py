"""L2 announcements: which service IPs are announced, by which candidate nodes,
on which interfaces; and the lease-timing rewrites Cilium applies."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from twin.model.findings import Finding, warning
from twin.model.objects import Cluster, L2Settings, Service
from twin.semantics.identity import selector_matches_labels
from twin.semantics.lbipam import Allocation, _service_labels
from twin.semantics.services import selected_pods


@dataclass(frozen=True)
class Announcement:
    service: str
    announced: bool
    ips: tuple[ipaddress.IPv4Address, ...]
    candidate_nodes: tuple[str, ...]
    interfaces: dict  # node -> tuple of interface names
    lease: str  # cilium-l2announce-<ns>-<svc>
    reason: str = ""


def lease_name(svc: Service) -> str:
    return f"cilium-l2announce-{svc.namespace}-{svc.name}"


def announcements(cluster: Cluster, alloc: Allocation) -> dict[str, Announcement]:
    out = {}
    for svc in cluster.services:
        lb_ips = alloc.ips.get(svc.key, ())
        selecting = [p for p in cluster.l2_policies
                     if p.service_selector is None or selector_matches_labels(p.service_selector, _service_labels(svc))]
        ips: list = []
        nodes: dict[str, tuple] = {}
        for pol in selecting:
            if pol.external_ips and cluster.values.external_ips:
                ips += [ip for ip in svc.external_ips if ip not in ips]
            if pol.load_balancer_ips:
                ips += [ip for ip in lb_ips if ip not in ips]
            for node in cluster.nodes:
                if pol.node_selector is not None and not selector_matches_labels(pol.node_selector, dict(node.labels)):
                    continue
                ifaces = tuple(i for i in node.interfaces if any(re.search(rx, i) for rx in pol.interfaces)) \
                    if pol.interfaces else node.interfaces
                if ifaces:
                    nodes[node.name] = tuple(dict.fromkeys(nodes.get(node.name, ()) + ifaces))
        if svc.external_traffic_policy == "Local":
            local = {p.node for p in selected_pods(cluster, svc)}
            nodes = {n: i for n, i in nodes.items() if n in local}
        reason = ""
        if not cluster.values.l2.enabled:
            reason = "l2announcements.enabled is false"
        elif not selecting:
            reason = "no CiliumL2AnnouncementPolicy selects the service"
        elif not ips:
            reason = "no external or LoadBalancer IP to announce"
        elif not nodes:
            reason = "no candidate node (nodeSelector/interfaces)"
        ordered = tuple(n.name for n in cluster.nodes if n.name in nodes)
        out[svc.key] = Announcement(svc.key, not reason, tuple(ips), ordered,
                                    {n: nodes[n] for n in ordered}, lease_name(svc), reason)
    return out


def effective_lease_timings(l2: L2Settings) -> tuple[L2Settings, list[tuple[str, str]]]:
    """Cilium rewrites invalid timings instead of rejecting them (pkg/l2announcer).

    leaseDuration < 1s → 1s; renewDeadline ≥ leaseDuration → LD/2;
    renewDeadline ≤ 1.2·retryPeriod → retryPeriod = RD/2.

    Returns the effective timings and, per rewrite, (the values field it
    changes, what Cilium does).
    """
    ld, rd, rp = l2.lease_duration_s, l2.renew_deadline_s, l2.retry_period_s
    notes = []
    if ld < 1.0:
        notes.append(("leaseDuration", f"leaseDuration {ld:g}s is below 1s: Cilium uses 1s"))
        ld = 1.0
    if ld <= rd:
        notes.append(("leaseRenewDeadline",
                      f"leaseRenewDeadline {rd:g}s is not below leaseDuration {ld:g}s: Cilium uses {ld / 2:g}s"))
        rd = ld / 2
    if rd <= 1.2 * rp:
        notes.append(("leaseRetryPeriod", f"leaseRenewDeadline {rd:g}s is not above 1.2 × leaseRetryPeriod {rp:g}s: "
                                          f"Cilium uses retryPeriod {rd / 2:g}s"))
        rp = rd / 2
    return L2Settings(l2.enabled, ld, rd, rp), notes


def lease_findings(cluster: Cluster) -> list[Finding]:
    """One warning per rewritten timing, naming the values file and the field's line."""
    if not cluster.values.l2.enabled:
        return []
    _, notes = effective_lease_timings(cluster.values.l2)
    out = []
    for field, n in notes:
        fld = f"l2announcements.{field}"
        out.append(warning("values", fld, n, cluster.values.origin.file, cluster.values.line(fld)))
    return out
