"""Pods: containers, their ports and readiness probes."""
from __future__ import annotations

from twin.model.load.context import Ctx
from twin.model.objects import Container, ContainerPort, ProbeSpec


def containers(ctx: Ctx, spec: dict) -> tuple[Container, ...]:
    out = []
    if not spec.get("containers"):
        ctx.err(("spec", "containers"), "at least one container is required")
    for i, c in enumerate(spec.get("containers") or []):
        ports = []
        for j, p in enumerate(c.get("ports") or []):
            port = p.get("containerPort")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                ctx.err(("spec", "containers", i, "ports", j, "containerPort"), f"must be 1-65535, got {port!r}")
                continue
            proto = p.get("protocol", "TCP")
            if proto not in ("TCP", "UDP", "SCTP"):
                ctx.err(("spec", "containers", i, "ports", j, "protocol"), f"must be TCP, UDP or SCTP, got {proto!r}")
            ports.append(ContainerPort(port, p.get("name", ""), proto))
        if not c.get("name"):
            ctx.err(("spec", "containers", i, "name"), "is required")
        if not c.get("image"):
            ctx.err(("spec", "containers", i, "image"), "is required")
        out.append(Container(c.get("name", ""), c.get("image", ""), tuple(c.get("command") or ()),
                             tuple(str(a) for a in (c.get("args") or ())), tuple(ports),
                             readiness(ctx, c.get("readinessProbe"), ("spec", "containers", i, "readinessProbe"),
                                       frozenset(p.name for p in ports if p.name))))
    return tuple(out)


def readiness(ctx: Ctx, rp: dict | None, path: tuple, names: frozenset = frozenset()) -> ProbeSpec | None:
    """``names``: the container's named ports (a probe may name one)."""
    if rp is None:
        return None
    kinds = [k for k in ("httpGet", "tcpSocket") if rp.get(k) is not None]
    if len(kinds) != 1:
        ctx.err(path, "a readiness probe needs exactly one of httpGet, tcpSocket")
        return None
    kind = kinds[0]
    port = rp[kind].get("port")
    if port is None:
        ctx.err(path + (kind, "port"), "is required")
        return None
    if isinstance(port, int) and not 1 <= port <= 65535:
        ctx.err(path + (kind, "port"), f"must be 1-65535 or a port name, got {port!r}")
        return None
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, str) and port not in names:
        have = ", ".join(sorted(names)) or "none"
        ctx.err(path + (kind, "port"), f"names no port of this container ({port!r}; named ports: {have}): "
                "kubelet would fail the probe forever and the pod would never become Ready")
        return None
    nums = {}
    for fld, default, minimum in (("periodSeconds", 10, 1), ("timeoutSeconds", 1, 1), ("failureThreshold", 3, 1),
                                  ("successThreshold", 1, 1), ("initialDelaySeconds", 0, 0)):
        v = rp.get(fld, default)
        if v < minimum:
            ctx.err(path + (fld,), f"must be >= {minimum}, got {v}")
            v = default
        nums[fld] = v
    return ProbeSpec(kind, port, rp[kind].get("path", "/") if kind == "httpGet" else "/",
                     float(nums["periodSeconds"]), float(nums["timeoutSeconds"]), nums["failureThreshold"],
                     nums["successThreshold"], float(nums["initialDelaySeconds"]))
