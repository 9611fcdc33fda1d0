"""LB-IPAM: LoadBalancer IP allocation from CiliumLoadBalancerIPPools.

* Pools are considered in manifest order; a pool overlapping an earlier one
  is marked conflicting and allocates nothing (Cilium marks the newer pool).
* The first and last address of a CIDR block are skipped unless
  ``allowFirstLastIPs: "Yes"`` (/31 and /32 blocks use every address).
* LoadBalancer services are served in manifest order; each takes the lowest
  free address of the first matching pool; a requested ``loadBalancerIP``
  (or ``io.cilium/lb-ipam-ips`` annotation) is honoured if a matching pool
  holds it and it is free.
* A service no pool matches gets no IP; nor does one whose matching pools are
  all used up.  Cilium says why in the service's ``cilium.io/IPAMRequestSatisfied``
  condition (status False); :attr:`Allocation.reasons` holds its reason:
  ``no_pool`` (no enabled pool matches, or none holds a requested address),
  ``out_of_ips`` (every matching pool is exhausted), ``already_allocated``
  (a requested address is taken).
* A pool whose ``serviceSelector`` selects no service allocates nothing (a finding).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from twin.model.findings import Finding, warning
from twin.model.objects import Cluster, IPBlock, LBIPPool, Service
from twin.semantics.identity import selector_matches_labels

IPS_ANNOTATION = "io.cilium/lb-ipam-ips"
#: the Service condition in which Cilium's LB-IPAM says whether (and why not) it allocated
CONDITION = "cilium.io/IPAMRequestSatisfied"


@dataclass(frozen=True)
class Allocation:
    ips: dict  # service key -> tuple of IPv4Address
    reasons: dict  # service key -> condition reason when no IP ("no_pool", "out_of_ips", "already_allocated")
    conflicting: tuple[str, ...]  # pool names
    findings: tuple[Finding, ...] = ()
    #: per pool, as ``kubectl get ippools`` shows it: name, disabled, conflicting (and with
    #: which pools), total and available addresses
    pools: tuple[dict, ...] = ()


def block_addresses(block: IPBlock, allow_first_last: bool) -> list[ipaddress.IPv4Address]:
    if block.cidr is not None:
        addrs = list(block.cidr) if block.cidr.prefixlen < 31 else list(block.cidr)
        if block.cidr.prefixlen < 31 and not allow_first_last:
            addrs = addrs[1:-1]
        return addrs
    assert block.start is not None and block.stop is not None
    return [ipaddress.IPv4Address(i) for i in range(int(block.start), int(block.stop) + 1)]


def _ranges(pool: LBIPPool) -> list[tuple[int, int]]:
    out = []
    for b in pool.blocks:
        if b.cidr is not None:
            out.append((int(b.cidr.network_address), int(b.cidr.broadcast_address)))
        else:
            out.append((int(b.start), int(b.stop)))
    return out


def _service_labels(svc: Service) -> dict:
    labels = dict(svc.labels)
    labels["io.kubernetes.service.namespace"] = svc.namespace
    labels["io.kubernetes.service.name"] = svc.name
    return labels


def allocate(cluster: Cluster) -> Allocation:
    findings: list[Finding] = []
    active: list[LBIPPool] = []
    conflicting = []
    clashes: dict[str, list[str]] = {}
    for pool in cluster.pools:
        if pool.disabled:
            continue
        clash = [p.name for p in active if any(a <= d and c <= b for a, b in _ranges(p) for c, d in _ranges(pool))]
        if clash:
            conflicting.append(pool.name)
            clashes[pool.name] = clash
            findings.append(warning(f"CiliumLoadBalancerIPPool {pool.name}", "spec.blocks",
                                    f"overlaps pool {', '.join(clash)}: Cilium marks this pool conflicting and allocates nothing from it",
                                    pool.origin.file, pool.line("spec.blocks")))
            continue
        active.append(pool)
    free = {p.name: [a for b in p.blocks for a in block_addresses(b, p.allow_first_last)] for p in active}
    pool_addresses = {name: set(addrs) for name, addrs in free.items()}
    lb_services = [s for s in cluster.services
                   if s.type == "LoadBalancer" and s.load_balancer_class in ("", "io.cilium/l2-announcer")]
    for pool in active:
        if pool.service_selector is not None and not any(
                selector_matches_labels(pool.service_selector, _service_labels(s)) for s in lb_services):
            findings.append(warning(f"CiliumLoadBalancerIPPool {pool.name}", "spec.serviceSelector",
                                    "selects no LoadBalancer service: this pool allocates nothing",
                                    pool.origin.file, pool.line("spec.serviceSelector")))
    ips: dict = {}
    reasons: dict = {}
    for svc in cluster.services:
        if svc.type != "LoadBalancer" or svc.load_balancer_class not in ("", "io.cilium/l2-announcer"):
            continue
        labels = _service_labels(svc)
        pools = [p for p in active if p.service_selector is None or selector_matches_labels(p.service_selector, labels)]
        obj = f"Service {svc.key}"
        if not pools:
            reasons[svc.key] = "no_pool"
            findings.append(warning(obj, "spec.type", "LoadBalancer service matches no enabled IP pool: it gets no "
                                    f"external IP ({CONDITION} False, reason no_pool)", svc.origin.file, svc.origin.line))
            continue
        wanted = []
        ann = dict(svc.annotations).get(IPS_ANNOTATION)
        if ann:
            wanted = [ipaddress.IPv4Address(x.strip()) for x in ann.split(",") if x.strip()]
        elif svc.load_balancer_ip:
            wanted = [svc.load_balancer_ip]
        got = []
        fld = f"metadata.annotations[{IPS_ANNOTATION}]" if ann else "spec.loadBalancerIP"
        if wanted:
            for ip in wanted:
                for p in pools:
                    if ip in free[p.name]:
                        free[p.name].remove(ip)
                        got.append(ip)
                        break
                else:
                    holders = [p.name for p in pools if ip in pool_addresses[p.name]]
                    why = "already_allocated" if holders else "no_pool"
                    reasons.setdefault(svc.key, why)
                    where = (f"is already allocated in pool {', '.join(holders)}" if holders
                             else f"is in no matching pool ({', '.join(p.name for p in pools)})")
                    findings.append(warning(obj, fld, f"requested {ip} {where}: not allocated ({CONDITION} False, "
                                            f"reason {why})", svc.origin.file, svc.origin.line))
            if got:
                reasons.pop(svc.key, None)
        else:
            for p in pools:
                if free[p.name]:
                    got.append(free[p.name].pop(0))
                    break
            else:
                reasons[svc.key] = "out_of_ips"
                findings.append(warning(obj, "spec.type", f"every matching pool ({', '.join(p.name for p in pools)}) "
                                        f"is exhausted: no external IP ({CONDITION} False, reason out_of_ips: all "
                                        "enabled pools that match this service ran out of allocatable IPs)",
                                        svc.origin.file, svc.origin.line))
        if got:
            ips[svc.key] = tuple(got)
    status = tuple({"name": p.name, "disabled": p.disabled, "conflicting": p.name in clashes,
                    "conflicts_with": clashes.get(p.name, []),
                    "ips_total": sum(len(block_addresses(b, p.allow_first_last)) for b in p.blocks),
                    "ips_available": len(free[p.name]) if p.name in free else 0}
                   for p in cluster.pools)
    return Allocation(ips, reasons, tuple(conflicting), tuple(findings), status)
