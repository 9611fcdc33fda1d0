"""Helm values and Go durations."""
from __future__ import annotations

import re

from twin.model import schema
from twin.model.load.context import Ctx
from twin.model.objects import L2Settings, Values
from twin.model.yamlsrc import Document

DURATION = re.compile(r"^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go ``time.ParseDuration`` subset, in seconds.  Raises ValueError."""
    text = str(text).strip()
    if text == "0":
        return 0.0
    if not DURATION.match(text):
        raise ValueError(f"not a Go duration: {text!r} (examples: 15s, 200ms, 1m30s)")
    return sum(float(n) * _UNIT[u] for n, u in DURATION_PART.findall(text))


VALUES_SCHEMA = {
    "kubeProxyReplacement": "any",
    "bandwidthManager": {"enabled": "bool", "bbr": "bool"},
    "l2announcements": {"enabled": "bool", "leaseDuration": "str", "leaseRenewDeadline": "str", "leaseRetryPeriod": "str"},
    "externalIPs": {"enabled": "bool"},
    "socketLB": {"enabled": "bool", "hostNamespaceOnly": "bool", "terminatePodConnections": "bool"},
    "k8sClientRateLimit": {"qps": "int", "burst": "int"},
    "allowLocalhost": "str",
}


def build_values(doc: Document | None, findings: list) -> Values:
    if doc is None:
        return Values()
    data = doc.data or {}
    ctx = Ctx(doc, "values", "values", findings)
    if not isinstance(data, dict):
        ctx.err((), "a values file must be a mapping")
        return Values()
    for k in data:
        if k not in VALUES_SCHEMA:
            ctx.warn((k,), "not modelled by the twin; Helm passes it to the chart, the twin ignores it")
    known = {k: v for k, v in data.items() if k in VALUES_SCHEMA}
    for path, msg in schema.check(known, VALUES_SCHEMA):
        ctx.err(path, msg)
    kpr = data.get("kubeProxyReplacement", True)
    kpr_on = kpr in (True, "true", "strict", "True")
    if kpr not in (True, False, "true", "false", "strict", "partial", "disabled", "True", "False"):
        ctx.err(("kubeProxyReplacement",), f"must be true or false, got {kpr!r}")
    l2 = data.get("l2announcements") or {}
    timings = {}
    for fld, attr, default in (("leaseDuration", "lease_duration_s", 15.0), ("leaseRenewDeadline", "renew_deadline_s", 5.0),
                               ("leaseRetryPeriod", "retry_period_s", 2.0)):
        raw = l2.get(fld)
        if raw is None:
            timings[attr] = default
            continue
        try:
            timings[attr] = parse_duration(str(raw))
        except ValueError as exc:
            ctx.err(("l2announcements", fld), str(exc))
            timings[attr] = default
    return Values(
        kube_proxy_replacement=kpr_on,
        bandwidth_manager=bool((data.get("bandwidthManager") or {}).get("enabled", False)),
        external_ips=bool((data.get("externalIPs") or {}).get("enabled", False)),
        l2=L2Settings(bool(l2.get("enabled", False)), **timings),
        socket_lb=bool((data.get("socketLB") or {}).get("enabled", kpr_on)),
        terminate_pod_connections=bool((data.get("socketLB") or {}).get("terminatePodConnections", True)),
        allow_localhost=str(data.get("allowLocalhost", "auto")),
    )
