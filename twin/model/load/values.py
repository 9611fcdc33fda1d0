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
    "l2announcements": {"enabled": "bool", "leaseDuration": "any", "leaseRenewDeadline": "any", "leaseRetryPeriod": "any"},
    "externalIPs": {"enabled": "bool"},
    "socketLB": {"enabled": "bool", "hostNamespaceOnly": "bool", "terminatePodConnections": "bool"},
    "k8sClientRateLimit": {"qps": "any", "burst": "int"},
    "allowLocalhost": "str",
}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _lease_timing(ctx: Ctx, fld: str, raw, default: float) -> float:
    """One ``l2announcements`` timing, read as Cilium reads it (viper's ``GetDuration``:
    a Go duration string; a bare number is nanoseconds)."""
    path = ("l2announcements", fld)
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        ctx.err(path, f"must be a Go duration such as 3s or 200ms, got {type(raw).__name__} {_short(raw)}")
        return default
    if not isinstance(raw, str) or raw.strip().lstrip("+-").replace(".", "", 1).isdigit():
        try:
            num = float(raw)
        except OverflowError:
            num = float("inf")
        if not 0 <= num * 1e-9 <= limits.MAX_DURATION_S:  # also NaN and inf
            ctx.err(path, f"must be a Go duration such as 3s or 200ms (at most {limits.MAX_DURATION_S:g}s, "
                    f"MAX_DURATION_S), got {_short(raw)}")
            return default
        ctx.warn(path, f"{_short(raw)} has no unit: Cilium reads a bare number as nanoseconds ({num:g}ns); "
                 "write a unit, e.g. 3s")
        return num * 1e-9
    text = raw.strip()
    if text.startswith("-"):
        ctx.err(path, f"{_short(text)} is negative: Go parses it, but a negative lease timing makes the elector "
                "spin without waiting; the twin refuses it")
        return default
    try:
        return parse_duration(text.lstrip("+"))
    except ValueError as exc:
        ctx.err(path, str(exc))
        return default


#: client-go's rest.Config defaults, used when qps or burst is 0 (Cilium's defaults too)
DEFAULT_QPS, DEFAULT_BURST = 5.0, 10


def _rate_limit(ctx: Ctx, rate: dict) -> tuple[float, int]:
    """``k8sClientRateLimit``: Cilium hands qps (a float) and burst to client-go, which
    uses its defaults (5, 10) for 0 and runs without a rate limiter for qps < 0."""
    qps, burst = rate.get("qps", DEFAULT_QPS), rate.get("burst", DEFAULT_BURST)
    if isinstance(qps, bool) or not isinstance(qps, (int, float)) or qps != qps or qps in (float("inf"), float("-inf")):
        ctx.err(("k8sClientRateLimit", "qps"), f"must be a number of requests per second, got {_short(qps)}")
        qps = DEFAULT_QPS
    elif qps < 0:
        ctx.err(("k8sClientRateLimit", "qps"), f"{_short(qps)} is negative: client-go would run the agent's API client "
                "without any rate limit, which the twin does not model; use a positive number")
        qps = DEFAULT_QPS
    elif qps == 0:
        ctx.warn(("k8sClientRateLimit", "qps"), f"0 means client-go's default: the agent's API client runs at "
                 f"{DEFAULT_QPS:g} requests per second")
        qps = DEFAULT_QPS
    elif qps > limits.MAX_CLIENT_QPS:
        ctx.err(("k8sClientRateLimit", "qps"), f"{_short(qps)} is more than the limit of {limits.MAX_CLIENT_QPS} "
                "(MAX_CLIENT_QPS)")
        qps = DEFAULT_QPS
    if not isinstance(burst, int) or isinstance(burst, bool):
        burst = DEFAULT_BURST  # the schema check reported it
    elif burst < 0:
        ctx.err(("k8sClientRateLimit", "burst"), f"must be 0 or more, got {burst}")
        burst = DEFAULT_BURST
    elif burst == 0:
        ctx.warn(("k8sClientRateLimit", "burst"), f"0 means client-go's default burst of {DEFAULT_BURST}")
        burst = DEFAULT_BURST
    elif burst > limits.MAX_CLIENT_QPS:
        ctx.err(("k8sClientRateLimit", "burst"), f"{_short(burst)} is more than the limit of {limits.MAX_CLIENT_QPS} "
                "(MAX_CLIENT_QPS)")
        burst = DEFAULT_BURST
    return float(qps), int(burst)


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
        timings[attr] = _lease_timing(ctx, fld, raw, default)
    qps, burst = _rate_limit(ctx, section("k8sClientRateLimit"))
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
