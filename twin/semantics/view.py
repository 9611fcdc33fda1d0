"""One pure view of a cluster: what `twin show` prints and what runners share.

Also collects the semantic findings: inputs Cilium accepts but silently
ignores or rewrites (unparseable bandwidth, invalid lease timings, conflicting
pools, selectors that select nothing, services without IPs).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from twin.model.findings import Finding, warning
from twin.model.objects import Cluster, LabelSelector
from twin.semantics import bandwidth, l2, lbipam
from twin.semantics.flows import FlowEvaluator
from twin.semantics.identity import Identities
from twin.semantics.policy import PolicyEngine
from twin.semantics.services import backends, selected_pods


class ClusterView:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.ids = Identities(cluster)
        self.engine = PolicyEngine(cluster, self.ids)
        self.flows = FlowEvaluator(cluster, self.engine)

    @cached_property
    def allocation(self) -> lbipam.Allocation:
        return lbipam.allocate(self.cluster)

    @cached_property
    def announcements(self) -> dict[str, l2.Announcement]:
        return l2.announcements(self.cluster, self.allocation)

    def egress_bandwidth(self, pod) -> tuple[int | None, str]:
        """(enforced wire rate in bit/s or None, note): :func:`twin.semantics.bandwidth.egress_limit`.
        The rate is what Cilium enforces (``bytes_per_s * 8``); a value that Cilium
        does not enforce (unparseable, 0, negative, manager disabled) is None with the reason."""
        lim = bandwidth.egress_limit(pod, self.cluster.values)
        if lim is None:
            return None, ""
        return lim.rate_bps, lim.note

    @cached_property
    def findings(self) -> tuple[Finding, ...]:
        c = self.cluster
        out: list[Finding] = list(self.allocation.findings)
        for pod in c.pods:
            obj, fld = f"Pod {pod.key}", f"metadata.annotations[{bandwidth.EGRESS_ANNOTATION}]"
            if pod.annotation(bandwidth.INGRESS_ANNOTATION) is not None:
                out.append(warning(obj, f"metadata.annotations[{bandwidth.INGRESS_ANNOTATION}]",
                                   "Cilium's bandwidth manager enforces egress only: ignored", pod.origin.file, pod.origin.line))
            lim = bandwidth.egress_limit(pod, c.values)
            if lim is not None and lim.note:
                out.append(warning(obj, fld, f"{lim.raw!r}: {lim.note}" if lim.raw not in lim.note else lim.note,
                                   pod.origin.file, pod.origin.line))
        for pol in c.policies:
            for spec in pol.specs:
                sel = spec.endpoint_selector or LabelSelector()
                if not any(self.engine._selects(pol, spec, i) for i in self.ids.pod_identities):
                    out.append(warning(f"CiliumNetworkPolicy {pol.key}", f"{spec.path}.endpointSelector",
                                       "selects no pod in namespace " + pol.namespace, pol.origin.file, pol.origin.line))
                for section, attr, key in (("ingress", "ingress", "fromEndpoints"), ("egress", "egress", "toEndpoints"),
                                           ("ingressDeny", "ingress_deny", "fromEndpoints"), ("egressDeny", "egress_deny", "toEndpoints")):
                    for rule in getattr(spec, attr):
                        for j, s in enumerate(rule.endpoints or ()):
                            if not any(self.engine._peer_selector_matches(pol, s, i) for i in self.ids.pod_identities):
                                out.append(warning(f"CiliumNetworkPolicy {pol.key}", f"{spec.path}.{section}[{rule.index}].{key}[{j}]",
                                                   "selects no pod (the rule matches nothing until such a pod exists)",
                                                   pol.origin.file, pol.origin.line))
        for svc in c.services:
            if svc.selector and not selected_pods(c, svc):
                out.append(warning(f"Service {svc.key}", "spec.selector", "selects no pod: the service has no backends",
                                   svc.origin.file, svc.origin.line))
        out += l2.l2_findings(c, self.allocation, self.announcements)
        return tuple(out)

    def all_findings(self) -> tuple[Finding, ...]:
        return tuple(self.cluster.findings) + self.findings

    def show(self) -> dict:
        c = self.cluster
        pods = []
        for p in c.pods:
            bps, _ = self.egress_bandwidth(p)
            pods.append({"namespace": p.namespace, "name": p.name, "node": p.node, "ip": str(p.ip),
                         "identity": self.ids.pod_identity(p), "labels": dict(p.labels),
                         "egress_bandwidth_bps": bps})
        services = []
        for s in c.services:
            ann = self.announcements[s.key]
            services.append({
                "namespace": s.namespace, "name": s.name, "type": s.type,
                "cluster_ip": str(s.cluster_ip) if s.cluster_ip else None,
                "lb_ips": [str(i) for i in self.allocation.ips.get(s.key, ())],
                "external_ips": [str(i) for i in s.external_ips],
                "ports": [{"port": sp.port, "target_port": sp.target_port, "protocol": sp.protocol, "name": sp.name}
                          for sp in s.ports],
                "backends": sorted({f"{b.pod.namespace}/{b.pod.name} {b.address}" for sp in s.ports
                                    for b in backends(c, s, sp)}),
                "l2": {"announced": ann.announced, "candidate_nodes": list(ann.candidate_nodes),
                       "interfaces": {n: list(i) for n, i in ann.interfaces.items()},
                       "lease": ann.lease, "reason": ann.reason},
            })
        return {
            "nodes": [{"name": n.name, "ip": str(n.ip), "pod_cidr": str(n.pod_cidr), "interfaces": list(n.interfaces),
                       "labels": dict(n.labels)} for n in c.nodes],
            "pods": pods,
            "services": services,
            "l2": l2.l2_summary(c),
            "pools": [dict(p) for p in self.allocation.pools],
            "identities": {str(k): dict(v.labels) for k, v in sorted(self.ids.infos.items()) if k >= 256},
            "findings": [f.as_dict() for f in self.all_findings()],
        }
