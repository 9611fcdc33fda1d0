"""L2 announcement policies and LB-IPAM pools."""
from __future__ import annotations

import ipaddress

from twin.model import limits, schema
from twin.model.load.context import Ctx
from twin.model.load.goregex import GoRegexError, go_compile
from twin.model.load.selectors import parse_selector
from twin.model.objects import IPBlock, L2AnnouncementPolicy, LBIPPool


def field_lines(ctx: Ctx) -> tuple[tuple[str, int], ...]:
    """(field path, line) for every field of the document (``spec.interfaces[0]``)."""
    return tuple(sorted((schema.fmt_path(p), ln) for p, ln in ctx.doc.lines.items() if ln is not None and p))


def build_l2(ctx: Ctx, data: dict) -> L2AnnouncementPolicy:
    spec = data.get("spec") or {}
    ifaces = tuple(str(x) for x in spec.get("interfaces") or ())
    for i, rx in enumerate(ifaces):
        try:
            go_compile(rx)
        except GoRegexError as exc:
            ctx.err(("spec", "interfaces", i), f"{rx[:80]!r} is not a valid Go regexp (Cilium compiles it with "
                    f"Go's regexp package): {exc}")
    ss = parse_selector(ctx, spec["serviceSelector"], ("spec", "serviceSelector")) if spec.get("serviceSelector") is not None else None
    ns_ = parse_selector(ctx, spec["nodeSelector"], ("spec", "nodeSelector")) if spec.get("nodeSelector") is not None else None
    if not spec.get("externalIPs") and not spec.get("loadBalancerIPs"):
        ctx.warn(("spec",), "neither externalIPs nor loadBalancerIPs is true: this policy announces nothing")
    return L2AnnouncementPolicy(data["metadata"]["name"], ss, ns_, ifaces, bool(spec.get("externalIPs")),
                                bool(spec.get("loadBalancerIPs")), ctx.origin, field_lines(ctx))


def build_pool(ctx: Ctx, data: dict) -> LBIPPool | None:
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
                net = ipaddress.IPv4Network(b["cidr"])
                if net.num_addresses > limits.MAX_POOL_ADDRESSES:
                    ctx.err(p + ("cidr",), f"{net} holds {net.num_addresses} addresses, more than the limit of "
                            f"{limits.MAX_POOL_ADDRESSES} per block (MAX_POOL_ADDRESSES)")
                    continue
                blocks.append(IPBlock(cidr=net))
            elif b.get("start"):
                start = ipaddress.IPv4Address(b["start"])
                stop = ipaddress.IPv4Address(b.get("stop") or b["start"])
                if stop < start:
                    ctx.err(p + ("stop",), f"{stop} is before start {start}")
                    continue
                if int(stop) - int(start) + 1 > limits.MAX_POOL_ADDRESSES:
                    ctx.err(p, f"{start}-{stop} holds more than the limit of {limits.MAX_POOL_ADDRESSES} addresses "
                            "per block (MAX_POOL_ADDRESSES)")
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
    return LBIPPool(data["metadata"]["name"], tuple(blocks), afl == "Yes", sel, bool(spec.get("disabled")), ctx.origin,
                    field_lines(ctx))
