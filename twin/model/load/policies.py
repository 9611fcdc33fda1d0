"""CiliumNetworkPolicy: rules, peers, ports and L7 rules."""
from __future__ import annotations

import re

from twin.model import schema
from twin.model.load.context import Ctx
from twin.model.load.selectors import parse_selector
from twin.model.objects import HTTPRule, NetworkPolicy, PeerRule, PolicySpec, PortProtocol, PortRule

PROTOCOLS = {"TCP", "UDP", "SCTP", "ANY"}
ENTITIES = {"world", "host", "remote-node", "cluster", "all", "health", "init", "unmanaged",
            "kube-apiserver", "ingress"}


def _port_rules(ctx: Ctx, rules: list, path: tuple, deny: bool) -> tuple[PortRule, ...]:
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


def _peer_rules(ctx: Ctx, items: list | None, path: tuple, peer_key: str, ent_key: str, deny: bool) -> tuple[PeerRule, ...]:
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


def _policy_spec(ctx: Ctx, rule: dict, path: tuple, index: int) -> PolicySpec | None:
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


def build_policy(ctx: Ctx, ns: str, data: dict) -> NetworkPolicy | None:
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
