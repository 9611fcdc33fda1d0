"""Checks across objects, once pods exist: named ports nobody defines.

Cilium and Kubernetes accept these without a word and then match nothing,
so each is a warning naming the field and its line:

- a CiliumNetworkPolicy ``toPorts`` port name that no container in the
  cluster defines (Cilium resolves named ports per endpoint; an unknown name
  resolves to no port, so the rule allows nothing on it)
- a Service ``targetPort`` name that no selected pod defines (the endpoint
  controller lists no endpoint for that port: the port has no backends)
"""
from __future__ import annotations

from typing import Iterator

from twin.model.load.context import PendingObject
from twin.model.objects import Pod, Service

_SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")


def _policy_port_names(data: dict) -> Iterator[tuple[tuple, str, str]]:
    """(path, name, protocol) of every named port in a policy document."""
    rules = []
    if isinstance(data.get("spec"), dict):
        rules.append((("spec",), data["spec"]))
    for i, r in enumerate(data.get("specs") or []):
        if isinstance(r, dict):
            rules.append((("specs", i), r))
    for rpath, rule in rules:
        for sec in _SECTIONS:
            for i, item in enumerate(rule.get(sec) or []):
                for j, tp in enumerate((item or {}).get("toPorts") or []):
                    for k, pp in enumerate((tp or {}).get("ports") or []):
                        port = (pp or {}).get("port")
                        if isinstance(port, str) and port and not port.isdigit():
                            yield (rpath + (sec, i, "toPorts", j, "ports", k, "port"), port,
                                   str(pp.get("protocol", "ANY")))


def _defines(pod: Pod, name: str, protocol: str) -> bool:
    return any(cp.name == name and protocol in ("ANY", cp.protocol) for c in pod.containers for cp in c.ports)


def check_policy_named_ports(rec: PendingObject, pods: list[Pod]) -> None:
    for path, name, proto in _policy_port_names(rec.data):
        if not any(_defines(p, name, proto) for p in pods):
            rec.ctx.warn(path, f"no container in the cluster defines a port named {name!r} ({proto}): Cilium "
                         "resolves it to no port, so this rule allows nothing on it")


def check_service_named_ports(svc: Service, rec: PendingObject, pods: list[Pod]) -> None:
    if not svc.selector:
        return
    sel = dict(svc.selector)
    selected = [p for p in pods if p.namespace == svc.namespace and all(dict(p.labels).get(k) == v for k, v in sel.items())]
    if not selected:
        return  # "selects no pod" is reported by the semantics
    for i, sp in enumerate(svc.ports):
        if isinstance(sp.target_port, str) and not any(_defines(p, sp.target_port, sp.protocol) for p in selected):
            rec.ctx.warn(("spec", "ports", i, "targetPort"),
                         f"no selected pod defines a {sp.protocol} port named {sp.target_port!r}: the endpoint "
                         "controller lists no endpoint for it, so this port has no backends")
