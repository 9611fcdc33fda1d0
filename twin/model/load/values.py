"""Helm values and Go durations."""
from __future__ import annotations

import re

from twin.model import limits, schema
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
    if len(text) > 64 or not DURATION.match(text):
        raise ValueError(f"not a Go duration: {text[:64]!r} (examples: 15s, 200ms, 1m30s)")
    seconds = sum(float(n) * _UNIT[u] for n, u in DURATION_PART.findall(text))
    if not seconds <= limits.MAX_DURATION_S:  # also catches inf from 400 digits
        raise ValueError(f"duration {text!r} is longer than the limit of {limits.MAX_DURATION_S:g}s "
                         "(one week, MAX_DURATION_S)")
    return seconds


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
    def section(key: str) -> dict:
        """A section of the values; one of the wrong type was reported above and reads as empty."""
        sec = data.get(key)
        return sec if isinstance(sec, dict) else {}

    def flag(sec: dict, key: str, default: bool) -> bool:
        val = sec.get(key, default)
        return val if isinstance(val, bool) else default

    kpr = data.get("kubeProxyReplacement", True)
    kpr_on = kpr in (True, "true", "strict", "True")
    if kpr not in (True, False, "true", "false", "strict", "partial", "disabled", "True", "False"):
        ctx.err(("kubeProxyReplacement",), f"must be true or false, got {kpr!r}")
    l2 = section("l2announcements")
    timings = {}
    for fld, attr, default in (("leaseDuration", "lease_duration_s", 15.0), ("leaseRenewDeadline", "renew_deadline_s", 5.0),
                               ("leaseRetryPeriod", "retry_period_s", 2.0)):
        raw = l2.get(fld)
        if raw is None:
            timings[attr] = default
            continue
        try:
            timings[attr] = parse_duration(raw) if isinstance(raw, str) else default
        except ValueError as exc:
            ctx.err(("l2announcements", fld), str(exc))
            timings[attr] = default
    rate = section("k8sClientRateLimit")
    qps, burst = rate.get("qps", 5), rate.get("burst", 10)
    if not isinstance(qps, int) or isinstance(qps, bool) or qps < 1:
        if "qps" in rate:
            ctx.err(("k8sClientRateLimit", "qps"), f"must be a positive integer, got {qps!r}")
        qps = 5
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        if "burst" in rate:
            ctx.err(("k8sClientRateLimit", "burst"), f"must be a positive integer, got {burst!r}")
        burst = 10
    lines = tuple(sorted((schema.fmt_path(p), ln) for p, ln in doc.lines.items()
                         if ln is not None and all(isinstance(x, str) for x in p)))
    return Values(
        kube_proxy_replacement=kpr_on,
        bandwidth_manager=flag(section("bandwidthManager"), "enabled", False),
        external_ips=flag(section("externalIPs"), "enabled", False),
        l2=L2Settings(flag(l2, "enabled", False), **timings),
        socket_lb=flag(section("socketLB"), "enabled", kpr_on),
        terminate_pod_connections=flag(section("socketLB"), "terminatePodConnections", True),
        allow_localhost=str(data.get("allowLocalhost", "auto")),
        client_qps=float(qps), client_burst=int(burst),
        origin=ctx.origin,
        lines=lines,
    )
