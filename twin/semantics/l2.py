"""L2 announcements: which service IPs are announced, by which candidate nodes,
on which interfaces; and the lease-timing rewrites Cilium applies."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from twin.model.findings import Finding, warning
from twin.model.load.goregex import GoRegexError, go_compile
from twin.model.objects import Cluster, L2AnnouncementPolicy, L2Settings, Node, Service, Values
from twin.model.scenario_check import L2State
from twin.semantics.election import ElectionParams, api_requests_per_second
from twin.semantics.identity import selector_matches_labels
from twin.semantics.lbipam import Allocation, _service_labels, allocate
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


#: the loadBalancerClass Cilium's L2 announcer serves (besides none)
L2_CLASS = "io.cilium/l2-announcer"


def lease_name(svc: Service) -> str:
    return f"cilium-l2announce-{svc.namespace}-{svc.name}"


def selector_text(sel) -> str:
    """A label selector as kubectl writes it: ``color=blue,tier in (a,b),!x``."""
    if sel is None or sel.is_empty:
        return "everything"
    parts = [f"{k}={v}" for k, v in sel.match_labels]
    for r in sel.match_expressions:
        parts.append({"In": f"{r.key} in ({','.join(r.values)})", "NotIn": f"{r.key} notin ({','.join(r.values)})",
                      "Exists": r.key, "DoesNotExist": f"!{r.key}"}.get(r.operator, f"{r.key} {r.operator}"))
    return ",".join(parts)


@lru_cache(maxsize=256)
def _regex(rx: str):
    """Go's regexp for ``rx`` (None when it does not compile: the loader reported it as an error)."""
    try:
        return go_compile(rx)
    except GoRegexError:
        return None


def interface_matches(rx: str, ifname: str) -> bool:
    """Go's ``regexp.MatchString``: the pattern found anywhere in the name."""
    r = _regex(rx)
    return r is not None and r.search(ifname) is not None


def policy_nodes(pol: L2AnnouncementPolicy, cluster: Cluster) -> list[Node]:
    """The nodes a policy's ``nodeSelector`` selects (every node without one)."""
    return [n for n in cluster.nodes
            if pol.node_selector is None or selector_matches_labels(pol.node_selector, dict(n.labels))]


def policy_interfaces(pol: L2AnnouncementPolicy, node: Node) -> tuple[str, ...]:
    """The node's interfaces the policy's ``interfaces`` regexes select (all without any)."""
    if not pol.interfaces:
        return node.interfaces
    return tuple(i for i in node.interfaces if any(interface_matches(rx, i) for rx in pol.interfaces))


def selects_service(pol: L2AnnouncementPolicy, svc: Service) -> bool:
    return pol.service_selector is None or selector_matches_labels(pol.service_selector, _service_labels(svc))


def announcements(cluster: Cluster, alloc: Allocation) -> dict[str, Announcement]:
    out = {}
    for svc in cluster.services:
        lb_ips = alloc.ips.get(svc.key, ())
        selecting = [p for p in cluster.l2_policies if selects_service(p, svc)]
        ips: list = []
        nodes: dict[str, tuple] = {}
        for pol in selecting:
            if pol.external_ips and cluster.values.external_ips:
                ips += [ip for ip in svc.external_ips if ip not in ips]
            if pol.load_balancer_ips:
                ips += [ip for ip in lb_ips if ip not in ips]
            for node in policy_nodes(pol, cluster):
                ifaces = policy_interfaces(pol, node)
                if ifaces:
                    nodes[node.name] = tuple(dict.fromkeys(nodes.get(node.name, ()) + ifaces))
        eligible = dict(nodes)
        if svc.external_traffic_policy == "Local":
            local = {p.node for p in selected_pods(cluster, svc)}
            nodes = {n: i for n, i in nodes.items() if n in local}
        reason = ""
        if not cluster.values.l2.enabled:
            reason = "l2announcements.enabled is false"
        elif svc.load_balancer_class not in ("", L2_CLASS):
            reason = (f"loadBalancerClass {svc.load_balancer_class!r} is not {L2_CLASS!r}: the L2 announcer "
                      "leaves the service to that class's controller")
        elif not selecting:
            reason = "no CiliumL2AnnouncementPolicy selects the service"
            if cluster.l2_policies:
                reason += " (" + "; ".join(f"{p.name} selects {selector_text(p.service_selector)}"
                                           for p in cluster.l2_policies) + ")"
        elif not ips:
            why = ""
            if svc.type == "LoadBalancer" and svc.key in alloc.reasons:
                why = f" (LB-IPAM: {alloc.reasons[svc.key]})"
            reason = "no external or LoadBalancer IP to announce" + why
        elif not eligible:
            reason = "no candidate node (nodeSelector/interfaces)"
        elif not nodes:
            reason = ("externalTrafficPolicy is Local and no backend runs on a candidate node "
                      f"(candidates: {', '.join(eligible)})")
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


def election_params(values: Values) -> ElectionParams:
    """The elector's parameters as Cilium runs them: the lease timings after Cilium's
    rewrites and the API client's rate limit.  Every elector (twin and agents) is
    built from this, so a rewritten timing is used everywhere."""
    eff, _ = effective_lease_timings(values.l2)
    return ElectionParams(eff.lease_duration_s, eff.renew_deadline_s, eff.retry_period_s,
                          float(values.client_qps), int(values.client_burst))


def responder_entries(announcement: Announcement, node: str) -> set[tuple[str, str]]:
    """What ``node``'s ARP responder answers for when it holds the announcement's lease:
    (IPv4, interface name) for every announced IP on every interface the policies
    select on that node (empty when the node is not a candidate)."""
    if not announcement.announced:
        return set()
    return {(str(ip), ifname) for ip in announcement.ips for ifname in announcement.interfaces.get(node, ())}


def l2_summary(cluster: Cluster) -> dict:
    """The cluster-wide L2 settings as Cilium runs them (``twin show``'s ``l2``)."""
    eff, notes = effective_lease_timings(cluster.values.l2)
    v = cluster.values
    return {
        "enabled": v.l2.enabled,
        "external_ips_enabled": v.external_ips,
        "timings": {
            "leaseDuration": eff.lease_duration_s, "renewDeadline": eff.renew_deadline_s,
            "retryPeriod": eff.retry_period_s, "qps": v.client_qps, "burst": v.client_burst,
            "configured": {"leaseDuration": v.l2.lease_duration_s, "renewDeadline": v.l2.renew_deadline_s,
                           "retryPeriod": v.l2.retry_period_s},
            "rewrites": [n for _, n in notes],
        },
    }


def l2_findings(cluster: Cluster, alloc: Allocation, anns: dict[str, Announcement]) -> list[Finding]:
    """What Cilium accepts about L2 announcements and then silently ignores or rewrites."""
    c = cluster
    out = lease_findings(c)
    for pol in c.l2_policies:
        obj, f = f"CiliumL2AnnouncementPolicy {pol.name}", pol.origin.file
        nodes = policy_nodes(pol, c)
        if pol.node_selector is not None and not nodes:
            out.append(warning(obj, "spec.nodeSelector", "selects no node", f, pol.line("spec.nodeSelector")))
        selected = [s for s in c.services if selects_service(pol, s)]
        if pol.service_selector is not None and not selected:
            out.append(warning(obj, "spec.serviceSelector", "selects no service: nothing is announced by this policy",
                               f, pol.line("spec.serviceSelector")))
        for i, rx in enumerate(pol.interfaces):
            if nodes and _regex(rx) is not None and not any(interface_matches(rx, n) for node in nodes
                                                            for n in node.interfaces):
                have = "; ".join(f"{node.name}: {', '.join(node.interfaces)}" for node in nodes)
                out.append(warning(obj, f"spec.interfaces[{i}]", f"{rx!r} matches no interface of the nodes the "
                                   f"policy selects ({have})", f, pol.line(f"spec.interfaces[{i}]")))
        if c.values.l2.enabled and pol.external_ips and not c.values.external_ips:
            with_ext = [s.key for s in selected if s.external_ips]
            if with_ext:
                out.append(warning(obj, "spec.externalIPs", "externalIPs.enabled is false in the values: Cilium "
                                   f"ignores the externalIPs of {', '.join(with_ext)} and does not announce them",
                                   f, pol.line("spec.externalIPs")))
    if c.l2_policies and not c.values.l2.enabled:
        out.append(warning("values", "l2announcements.enabled",
                           "CiliumL2AnnouncementPolicy objects exist but L2 announcements are disabled: nothing is announced",
                           c.values.origin.file, c.values.line("l2announcements.enabled")))
    out += rate_limit_findings(c, anns)
    for svc in c.services:
        ann = anns.get(svc.key)
        if ann is not None and ann.reason.startswith("externalTrafficPolicy is Local"):
            out.append(warning(f"Service {svc.key}", "spec.externalTrafficPolicy", f"{ann.reason}: Cilium does "
                               "not announce the service, its IPs get no ARP answer", svc.origin.file, svc.origin.line))
    return out


def scenario_l2_state(cluster: Cluster) -> dict[str, L2State]:
    """Per service: its LB IPs and whether it is announced (and why not), for the
    scenario checks (``check_scenario(..., l2_state=scenario_l2_state)``)."""
    alloc = allocate(cluster)
    anns = announcements(cluster, alloc)
    return {key: L2State(tuple(str(ip) for ip in alloc.ips.get(key, ())), a.announced, a.reason, a.lease,
                       alloc.reasons.get(key, ""))
            for key, a in anns.items()}


def rate_limit_findings(cluster: Cluster, anns: dict[str, Announcement]) -> list[Finding]:
    """A warning when an agent's Lease traffic is so far above its API client's qps that
    renewals miss their deadline (cilium#26586): Cilium accepts any qps and its
    requests then wait for tokens.

    Per node, the steady-state demand if it held every lease it is a candidate for
    (``api_requests_per_second``: a Get and an Update per retry period each).  Under
    a token bucket of rate qps the renew loop's period stretches by demand/qps
    (the burst only helps for a moment); once the stretched period ``retry ·
    demand / qps`` exceeds the renew deadline, a renewal cannot finish in time and
    the lease is lost.  Throttling short of that only slows renewals: not reported.
    The twin's electors run the token bucket itself; this is the estimate behind
    the warning, not the prediction."""
    if not cluster.values.l2.enabled:
        return []
    p = election_params(cluster.values)
    per_node: dict[str, int] = {}
    for a in anns.values():
        if a.announced:
            for n in a.candidate_nodes:
                per_node[n] = per_node.get(n, 0) + 1
    out = []
    for node, n in sorted(per_node.items()):
        demand = api_requests_per_second(n, 0, p)
        stretched = p.retry_period_s * demand / p.qps
        if stretched <= p.renew_deadline_s:
            continue
        out.append(warning("values", "k8sClientRateLimit.qps",
                           f"node {node}'s agent is a candidate for {n} lease(s); holding them it needs about "
                           f"{demand:.1f} Lease requests/s against qps {p.qps:g} (burst {p.burst}), which stretches "
                           f"its {p.retry_period_s:g}s renew loop to about {stretched:.2g}s, beyond the "
                           f"{p.renew_deadline_s:g}s renew deadline: renewals are throttled until they miss it and "
                           "leases are lost (cilium#26586)",
                           cluster.values.origin.file, cluster.values.line("k8sClientRateLimit.qps")))
    return out
