"""Socket load-balancing semantics: service frontends → backends, and backend choice.

* Frontends are every service's ClusterIP, externalIPs and LoadBalancer IPs,
  per service port.  Backends are the selected pods with a resolved target
  port, in the order of the cluster's pods (stable).
* Endpoint states come from the endpoint pipeline: ``ready`` pods are active
  backends, ``terminating`` ones stay listed but are never chosen, others
  (not ready, deleted) are absent.
* Selection (``choose``): uniform random among active backends, decided once
  per connect() (or per sendmsg() of an unconnected UDP socket).  The
  datapath draws from ``bpf_get_prandom_u32``; the twin from a seeded RNG;
  they agree in distribution (compared with a chi-square test), not per
  connection.
* A frontend with zero active backends rejects connect() with
  EHOSTUNREACH ("No route to host"), as Cilium's socket LB does.
"""
from __future__ import annotations

import random
from typing import Mapping

from twin.model.enums import Protocol
from twin.model.objects import Cluster
from twin.semantics.lbipam import Allocation, allocate
from twin.semantics.services import backends
from twin.semantics.tables import LBBackend, LBService, LBTable

NO_BACKEND_ERRNO = "EHOSTUNREACH"


def lb_table(cluster: Cluster, endpoint_states: Mapping[str, str] | None = None,
             allocation: Allocation | None = None) -> LBTable:
    """The desired LB state.  ``endpoint_states`` maps pod key → ready|not-ready|terminating
    (absent = ready)."""
    states = endpoint_states or {}
    alloc = allocation or allocate(cluster)
    out = []
    for svc in cluster.services:
        fronts = ([(svc.cluster_ip, "ClusterIP")] if svc.cluster_ip else []) + \
                 [(ip, "ExternalIP") for ip in svc.external_ips] + \
                 [(ip, "LoadBalancer") for ip in alloc.ips.get(svc.key, ())]
        for sp in svc.ports:
            bes = []
            for b in backends(cluster, svc, sp):
                st = states.get(b.pod.key, "ready")
                if st == "ready":
                    bes.append(LBBackend(b.pod.ip, b.port, Protocol[sp.protocol], b.pod.key, "active"))
                elif st == "terminating":
                    bes.append(LBBackend(b.pod.ip, b.port, Protocol[sp.protocol], b.pod.key, "terminating"))
            for ip, kind in fronts:
                out.append(LBService(svc.key, ip, sp.port, Protocol[sp.protocol], kind, tuple(bes)))
    return LBTable(tuple(out))


def frontend(table: LBTable, ip, port: int, protocol: Protocol) -> LBService | None:
    for s in table.services:
        if s.frontend_ip == ip and s.port == port and s.protocol == protocol:
            return s
    return None


def choose(svc: LBService, rng: random.Random) -> LBBackend | None:
    """Backend for a new connection: uniform among active backends; None when there is none."""
    active = svc.active
    if not active:
        return None
    return active[rng.randrange(len(active))]
