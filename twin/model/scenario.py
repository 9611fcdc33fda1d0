"""Scenarios: typed steps parsed by one strict loader.

A scenario file (YAML) names manifests and values (paths relative to the
scenario file) and a list of steps; each step is a one-key mapping:

```yaml
scenario: seed-deathstar-l3l4
description: ...
manifests: [../examples/seed/http-sw-app.yaml]
values: ../examples/seed/values.yaml       # optional
settings: {probe_timeout: 1s}              # optional
steps:
  - probe: {name: xwing-lands, from: default/xwing, to: svc:default/deathstar,
            port: 80, kind: http, method: POST, path: /v1/request-landing,
            expect: FORWARDED, expect_body: Ship landed}
  - apply: ../examples/seed/sw_l3_l4_policy.yaml
  - wait: 1s
  - delete: CiliumNetworkPolicy/default/rule1
```

Probe kinds: ``ping`` (ICMP echo), ``http`` (TCP connect and an HTTP
request), ``tcp`` (connect only), ``udp`` (one datagram, answered by an echo
server).  ``to`` is ``NS/POD``, ``svc:NS/NAME`` (one probe per backend until
socket load-balancing lands), ``external`` (the external host on the node
LAN) or an IPv4 address.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twin.model.load.values import parse_duration
from twin.model import limits
from twin.model.findings import Finding, InputError, error
from twin.model.schema import check, fmt_path
from twin.model.yamlsrc import Source, parse_documents

PROBE_KINDS = {"ping": "ICMP", "http": "TCP", "tcp": "TCP", "udp": "UDP"}
#: every step kind, in the order the README lists them; ``twin.model.run.dispatch``
#: calls a handler's ``on_<kind>`` for each
STEP_KINDS = ("probe", "apply", "delete", "wait", "note", "requests", "loop", "await", "hold", "check",
              "kill", "restart", "syscalls", "label", "arping", "fault", "annotate", "throughput")
#: ``fault`` kinds (L2 announcements and lease loss); see :class:`Fault`
FAULT_KINDS = ("partition", "heal", "agent-kill", "node-crash", "nic-down", "responder-missing")
#: the external host on the node LAN (``from: external`` in requests/loop: through the service's LB IP)
EXTERNAL = "external"
SERVICE_PREFIX = "svc:"


def pod_key(ref: str) -> str:
    """``NS/NAME`` as given, or a bare ``NAME`` in ``default`` → ``default/NAME``."""
    return ref if "/" in ref else f"default/{ref}"


def service_key(dst: str) -> str | None:
    """``svc:NS/NAME`` (or ``svc:NAME`` in ``default``) → ``NS/NAME``; None for any other target."""
    if not dst.startswith(SERVICE_PREFIX):
        return None
    return pod_key(dst[len(SERVICE_PREFIX):])


def source_key(ref: str) -> str:
    """A traffic source: ``external`` (the external host) as is, else :func:`pod_key`."""
    return ref if ref == EXTERNAL else pod_key(ref)
VERDICTS = ("FORWARDED", "DROPPED")

PROBE_SCHEMA = {
    "name": "str", "from": "str", "to": "str", "port": "int", "kind": "str",
    "method": "str", "path": "str", "expect": "str", "expect_status": "int", "expect_body": "str",
    "count": "int",
}
TRAFFIC_SCHEMA = {"name": "str", "from": "str", "to": "str", "port": "int", "kind": "str",
                  "count": "int", "interval": "str", "duration": "str", "path": "str", "method": "str"}
THROUGHPUT_SCHEMA = {"name": "str", "from": "str", "to": "str", "port": "int", "duration": "str",
                     "parallel": "int", "direction": "str", "interval": "str", "background": "bool"}
#: iperf3's default port; the server runs in the ``to`` pod
THROUGHPUT_PORT = 5201
THROUGHPUT_DIRECTIONS = ("reverse", "forward")
HOLD_SCHEMA = {"name": "str", "from": "str", "to": "str", "port": "int", "backend": "str"}
SCENARIO_SCHEMA = {
    "scenario": "str", "description": "str", "manifests": ["str"], "values": "str",
    "settings": {"probe_timeout": "str", "policy_propagation": "str", "outage_tolerance": "str",
                 "chi2_alpha": "any", "request_timeout": "str",
                 "external": {"arp_accept": "bool", "garp": "str", "base_reachable_time": "str"},
                 "api_backup_path": "bool", "repeats": "int", "rate_tolerance": "any"},
    "steps": [{"probe": PROBE_SCHEMA, "apply": "str", "delete": "str", "wait": "str", "note": "str",
               "requests": TRAFFIC_SCHEMA, "loop": TRAFFIC_SCHEMA, "hold": HOLD_SCHEMA,
               "check": {"hold": "str", "expect": "str"}, "kill": {"pod": "str"}, "restart": {"pod": "str"},
               "syscalls": {"name": "str", "from": "str", "to": "str", "port": "int"},
               "await": {"loop": "str", "throughput": "str"},
               "annotate": {"object": "str", "set": {"*": "str"}, "remove": ["str"]},
               "throughput": THROUGHPUT_SCHEMA,
               "label": {"object": "str", "set": {"*": "str"}, "remove": ["str"]},
               "arping": {"name": "str", "ip": "str", "service": "str", "count": "int", "expect": "str"},
               "fault": {"kind": "str", "node": "str", "holder_of": "str"}}],
}


@dataclass(frozen=True)
class Traffic:
    """Requests through a service frontend (socket LB picks the backend).

    ``requests`` runs ``count`` requests ``interval`` apart and waits for them;
    ``loop`` runs in the background for ``duration`` while later steps go on
    (``await`` waits for it to finish).
    """

    name: str
    src: str
    dst: str
    port: int = 80
    kind: str = "http"
    count: int = 0
    interval_s: float = 0.1
    duration_s: float = 0.0
    path: str = "/"
    background: bool = False
    method: str = "GET"


@dataclass(frozen=True)
class Throughput:
    """A bulk TCP transfer measured with ``iperf3`` (the seed's ``netperf -t TCP_MAERTS``).

    The server runs in the ``dst`` pod, the client in the ``src`` pod.  With
    ``direction: reverse`` (the default, ``iperf3 -R``, TCP_MAERTS) the
    server pod sends, so ``dst``'s egress limit applies; with ``forward`` the
    client pod sends.  ``parallel`` streams (``-P``) share the sender's
    limit.  Goodput is measured at the receiver over ``duration``, with one
    sample every ``interval``.  ``background`` runs it while later steps go
    on (``await: {throughput: NAME}`` waits for it)."""

    name: str
    src: str  # ns/pod: the iperf3 client
    dst: str  # ns/pod: the iperf3 server
    port: int = THROUGHPUT_PORT
    duration_s: float = 5.0
    parallel: int = 1
    direction: str = "reverse"
    interval_s: float = 1.0
    background: bool = False

    @property
    def sender(self) -> str:
        """The pod whose egress carries the data."""
        return self.dst if self.direction == "reverse" else self.src

    @property
    def receiver(self) -> str:
        return self.src if self.direction == "reverse" else self.dst


@dataclass(frozen=True)
class Hold:
    """A long-lived TCP connection (HTTP keep-alive) through a service, kept
    open on the named backend until a ``check`` step uses it again."""

    name: str
    src: str
    dst: str
    port: int
    backend: str


@dataclass(frozen=True)
class Probe:
    name: str
    src: str  # ns/pod
    dst: str  # ns/pod | svc:ns/name | external | IPv4
    kind: str = "http"
    port: int = 80
    method: str = "GET"
    path: str = "/"
    expect: str | None = None
    expect_status: int | None = None
    expect_body: str | None = None
    count: int = 1

    @property
    def protocol(self) -> str:
        return PROBE_KINDS[self.kind]

    @property
    def http(self) -> tuple[str, str] | None:
        return (self.method, self.path) if self.kind == "http" else None


@dataclass(frozen=True)
class Label:
    """Set/remove labels of a Service (``Service/NS/NAME``) or a Node (``Node/NAME``)
    at the API server (``kubectl label``); the desired cluster changes as with ``apply``.
    An ``annotate`` step is the same change of a Pod's annotations (``Pod/NS/NAME``;
    ``kubectl annotate --overwrite``, or the seed's edited ``kubectl apply``)."""

    kind: str  # Service | Node | Pod (annotate)
    key: str  # ns/name for a Service, name for a Node
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arping:
    """``arping`` from the external host: who answers ARP for ``ip`` (or for the first
    LB IP of ``service``).  ``expect``: ``holder`` (exactly the node holding the
    service's lease answers), ``none`` (nobody answers) or a node name."""

    name: str
    ip: str = ""
    service: str = ""  # ns/name
    count: int = 3
    expect: str | None = None


@dataclass(frozen=True)
class Fault:
    """A fault injected at a node (``node``) or at the node holding a service's lease
    at that moment (``holder_of: NS/NAME``):

    * ``partition``: the node is cut off from the API server (both paths); LAN traffic still flows
    * ``heal``: undo a partition of that node
    * ``agent-kill``: the node's agent is SIGKILLed; programs and maps stay (as in Cilium)
    * ``node-crash``: the agent is killed and the node stops answering on the LAN
    * ``nic-down``: the node's LAN interface goes down; the API is still reached over
      the backup path when ``settings.api_backup_path`` is true (cilium#35507)
    * ``responder-missing``: from now on the node's agent does not program the ARP
      responder for leases it takes (cilium#48626, an injected bug)
    """

    kind: str
    node: str = ""
    holder_of: str = ""  # ns/name


@dataclass(frozen=True)
class ExternalHost:
    """The external host's ARP behaviour (its kernel's sysctls)."""

    #: net.ipv4.conf.<if>.arp_accept: create entries from gratuitous ARP
    arp_accept: bool = True
    #: ``honour`` or ``ignore`` gratuitous ARP altogether (an ARP filter drops it)
    garp: str = "honour"
    #: net.ipv4.neigh.<if>.base_reachable_time_ms (REACHABLE lasts a random 0.5-1.5x of it)
    base_reachable_time_s: float = 30.0


@dataclass(frozen=True)
class Step:
    index: int
    kind: str  # probe | apply | delete | wait | note | requests | loop | await | hold | check | kill | restart | syscalls
    probe: Probe | None = None
    traffic: Traffic | None = None
    hold: Hold | None = None
    pod: str = ""  # kill/restart
    name: str = ""  # check: hold name; await: loop name; syscalls: observation name
    expect: str = ""  # check: alive | closed
    path: str = ""  # apply: file (relative to the scenario)
    target: str = ""  # delete: Kind/ns/name
    seconds: float = 0.0
    text: str = ""
    line: int | None = None
    label: Label | None = None
    arping: Arping | None = None
    fault: Fault | None = None
    throughput: Throughput | None = None


@dataclass(frozen=True)
class Settings:
    probe_timeout_s: float = 1.0
    policy_propagation_s: float = 0.5
    #: how far outside the twin's predicted interval a measured outage window may fall
    outage_tolerance_s: float = 0.25
    #: significance level of the chi-square test on backend shares
    chi2_alpha: float = 0.01
    #: timeout of one request of a requests/loop step
    request_timeout_s: float = 1.0
    external: ExternalHost = ExternalHost()
    #: give each node a second path to the API server (for ``nic-down``)
    api_backup_path: bool = False
    #: how many times ``make l2-repeat`` runs this scenario on the real side
    repeats: int = 10
    #: how far (relative) outside the twin's predicted goodput interval a measured
    #: goodput may fall before the harness reports a disagreement
    rate_tolerance: float = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    description: str
    manifests: tuple[str, ...]
    values: str | None
    steps: tuple[Step, ...]
    settings: Settings = Settings()


def _drop_nulls(data):
    """An explicit ``null`` means the same as leaving the field out (as in Kubernetes)."""
    if isinstance(data, dict):
        return {k: _drop_nulls(v) for k, v in data.items() if v is not None}
    return data


def _count_ok(err, path: tuple, count) -> None:
    if not 1 <= count <= limits.MAX_REQUESTS:
        err(path, f"must be 1-{limits.MAX_REQUESTS} (limit MAX_REQUESTS), got {count}")


def _port_ok(err, path: tuple, port) -> None:
    if not 1 <= port <= 65535:
        err(path, f"must be 1-65535, got {port}")


def parse_scenario(src: Source) -> Scenario:
    docs, findings = parse_documents(src)
    if findings:
        raise InputError(findings)
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise InputError([error("Scenario", "", "a scenario file holds exactly one YAML mapping", src.name)])
    doc = docs[0]
    data: dict[str, Any] = doc.data
    obj = f"Scenario {data.get('scenario', '<unnamed>')}"
    errs: list[Finding] = []

    def err(path: tuple, msg: str) -> None:
        errs.append(error(obj, fmt_path(path), msg, src.name, doc.line(path)))

    for path, msg in check(data, SCENARIO_SCHEMA):
        err(path, msg)
    for req in ("scenario", "manifests", "steps"):
        if not data.get(req):
            err((req,), "is required")
    if errs:
        raise InputError(errs)
    settings = Settings()
    s = _drop_nulls(data.get("settings") or {})
    durations = {}
    for fld, default in (("probe_timeout", "1s"), ("policy_propagation", "500ms"), ("outage_tolerance", "250ms"),
                         ("request_timeout", "1s")):
        try:
            durations[fld] = parse_duration(s.get(fld, default))
        except ValueError as exc:
            err(("settings", fld), str(exc))
            durations[fld] = parse_duration(default)
    alpha = s.get("chi2_alpha", 0.01)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        err(("settings", "chi2_alpha"), f"must be a number between 0 and 1 (exclusive), got {alpha!r}")
        alpha = 0.01
    ext = s.get("external") or {}
    garp = ext.get("garp", "honour")
    if garp not in ("honour", "ignore"):
        err(("settings", "external", "garp"), f"must be honour or ignore, got {garp!r}")
        garp = "honour"
    try:
        reach = parse_duration(ext.get("base_reachable_time", "30s"))
        if not reach > 0:
            raise ValueError(f"must be more than 0, got {ext.get('base_reachable_time')!r}")
    except ValueError as exc:
        err(("settings", "external", "base_reachable_time"), str(exc))
        reach = 30.0
    repeats = s.get("repeats", 10)
    if not 1 <= repeats <= 1000:
        err(("settings", "repeats"), f"must be 1-1000, got {repeats}")
        repeats = 10
    rtol = s.get("rate_tolerance", 0.05)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        err(("settings", "rate_tolerance"), f"must be a number from 0 to 1 (exclusive), got {rtol!r}")
        rtol = 0.05
    settings = Settings(durations["probe_timeout"], durations["policy_propagation"], durations["outage_tolerance"],
                        float(alpha), durations["request_timeout"],
                        ExternalHost(bool(ext.get("arp_accept", True)), garp, reach),
                        bool(s.get("api_backup_path", False)), repeats, float(rtol))
    steps = []
    names = set()
    for i, raw in enumerate(data["steps"]):
        raw = _drop_nulls(raw)
        path = ("steps", i)
        keys = [k for k in raw if raw[k] is not None]
        if len(keys) != 1:
            err(path, f"a step has exactly one of {', '.join(SCENARIO_SCHEMA['steps'][0])}; got {sorted(raw)}")
            continue
        kind = keys[0]
        line = doc.line(path)
        if kind == "probe":
            p = raw["probe"]
            pp = path + ("probe",)
            for req in ("name", "from", "to"):
                if not p.get(req):
                    err(pp + (req,), "is required")
            pkind = p.get("kind", "http")
            if pkind not in PROBE_KINDS:
                err(pp + ("kind",), f"must be one of {sorted(PROBE_KINDS)}, got {pkind!r}")
                continue
            if p.get("expect") is not None and p["expect"] not in VERDICTS:
                err(pp + ("expect",), f"must be FORWARDED or DROPPED, got {p['expect']!r}")
            port = p.get("port", 0 if pkind == "ping" else 80)
            if pkind != "ping" and not 1 <= port <= 65535:
                err(pp + ("port",), f"must be 1-65535, got {port}")
            _count_ok(err, pp + ("count",), p.get("count", 1))
            if p.get("name") in names:
                err(pp + ("name",), f"duplicate probe name {p.get('name')!r}")
            names.add(p.get("name"))
            if pkind != "http" and (p.get("method") or p.get("path") or p.get("expect_status") or p.get("expect_body")):
                err(pp, "method, path, expect_status and expect_body need kind: http")
            src_ = str(p.get("from", ""))
            steps.append(Step(i, "probe", Probe(
                str(p.get("name")), pod_key(src_), str(p.get("to", "")), pkind,
                port if pkind != "ping" else 0, p.get("method", "GET"), p.get("path", "/"), p.get("expect"),
                p.get("expect_status"), p.get("expect_body"), p.get("count", 1)), line=line))
        elif kind in ("requests", "loop"):
            t = raw[kind]
            tp = path + (kind,)
            for req in ("name", "from", "to"):
                if not t.get(req):
                    err(tp + (req,), "is required")
            if not str(t.get("to", "")).startswith(SERVICE_PREFIX):
                err(tp + ("to",), f"must be svc:NS/NAME (traffic through a service frontend), got {t.get('to')!r}")
            if t.get("kind", "http") not in ("http", "udp"):
                err(tp + ("kind",), f"must be http or udp, got {t.get('kind')!r}")
            if t.get("name") in names:
                err(tp + ("name",), f"duplicate name {t.get('name')!r}")
            names.add(t.get("name"))
            try:
                interval = parse_duration(t.get("interval", "100ms"))
                duration = parse_duration(t["duration"]) if t.get("duration") else 0.0
            except ValueError as exc:
                err(tp, str(exc))
                continue
            if kind == "requests" and t.get("count") is None:
                err(tp + ("count",), "is required (how many requests)")
            elif kind == "requests":
                _count_ok(err, tp + ("count",), t["count"])
            if kind == "loop" and not duration:
                err(tp + ("duration",), "is required (how long the loop runs)")
            if kind == "loop" and duration and not interval > 0:
                err(tp + ("interval",), "must be more than 0 in a loop")
            elif kind == "loop" and duration / interval > limits.MAX_REQUESTS:
                err(tp, f"{duration:g}s every {interval:g}s is more than {limits.MAX_REQUESTS} requests "
                    "(limit MAX_REQUESTS)")
            _port_ok(err, tp + ("port",), t.get("port", 80))
            src_ = str(t.get("from", ""))
            steps.append(Step(i, kind, traffic=Traffic(
                str(t.get("name")), source_key(src_), str(t.get("to")), t.get("port", 80),
                t.get("kind", "http"), t.get("count", 0), interval, duration, t.get("path", "/"), kind == "loop",
                t.get("method", "GET")), line=line))
        elif kind == "hold":
            h = raw["hold"]
            for req in ("name", "from", "to", "backend"):
                if not h.get(req):
                    err(path + ("hold", req), "is required")
            _port_ok(err, path + ("hold", "port"), h.get("port", 80))
            names.add(h.get("name"))
            src_ = str(h.get("from", ""))
            steps.append(Step(i, "hold", hold=Hold(str(h.get("name")), pod_key(src_),
                                                   str(h.get("to")), h.get("port", 80), pod_key(str(h.get("backend")))), line=line))
        elif kind == "check":
            c = raw["check"]
            if c.get("expect", "alive") not in ("alive", "closed"):
                err(path + ("check", "expect"), f"must be alive or closed, got {c.get('expect')!r}")
            steps.append(Step(i, "check", name=str(c.get("hold")), expect=c.get("expect", "alive"), line=line))
        elif kind == "await":
            aw = raw["await"]
            if bool(aw.get("loop")) == bool(aw.get("throughput")):
                err(path + ("await",), "needs exactly one of loop or throughput")
                continue
            steps.append(Step(i, "await", name=str(aw.get("loop") or aw.get("throughput")), line=line))
        elif kind in ("kill", "restart"):
            if not raw[kind].get("pod"):
                err(path + (kind, "pod"), "is required")
                continue
            pod = str(raw[kind].get("pod", ""))
            steps.append(Step(i, kind, pod=pod_key(pod), line=line))
        elif kind == "syscalls":
            sc = raw["syscalls"]
            for req in ("name", "from", "to"):
                if not sc.get(req):
                    err(path + ("syscalls", req), "is required")
            _port_ok(err, path + ("syscalls", "port"), sc.get("port", 80))
            src_ = str(sc.get("from", ""))
            names.add(sc.get("name"))
            steps.append(Step(i, "syscalls", name=str(sc.get("name")), traffic=Traffic(
                str(sc.get("name")), pod_key(src_), str(sc.get("to")), sc.get("port", 80)), line=line))
        elif kind == "apply":
            steps.append(Step(i, "apply", path=str(raw["apply"]), line=line))
        elif kind == "delete":
            parts = str(raw["delete"]).split("/")
            if len(parts) != 3 or parts[0] != "CiliumNetworkPolicy":
                err(path + ("delete",), f"must be CiliumNetworkPolicy/NAMESPACE/NAME, got {raw['delete']!r}")
                continue
            steps.append(Step(i, "delete", target=str(raw["delete"]), line=line))
        elif kind == "label":
            lb = raw["label"]
            lp = path + ("label",)
            parts = str(lb.get("object", "")).split("/")
            if parts[0] == "Service" and len(parts) in (2, 3):
                lkey = pod_key("/".join(parts[1:]))
            elif parts[0] == "Node" and len(parts) == 2 and parts[1]:
                lkey = parts[1]
            else:
                err(lp + ("object",), f"must be Service/NS/NAME or Node/NAME, got {lb.get('object')!r}")
                continue
            if not lb.get("set") and not lb.get("remove"):
                err(lp, "needs set or remove")
                continue
            steps.append(Step(i, "label", label=Label(parts[0], lkey, tuple(sorted((str(k), str(v)) for k, v in
                                                                                    (lb.get("set") or {}).items())),
                                                      tuple(str(k) for k in lb.get("remove") or ())), line=line))
        elif kind == "annotate":
            an = raw["annotate"]
            anp = path + ("annotate",)
            parts = str(an.get("object", "")).split("/")
            if parts[0] != "Pod" or len(parts) not in (2, 3) or not parts[-1]:
                err(anp + ("object",), f"must be Pod/NS/NAME (or Pod/NAME in default), got {an.get('object')!r}")
                continue
            if not an.get("set") and not an.get("remove"):
                err(anp, "needs set or remove")
                continue
            steps.append(Step(i, "annotate", label=Label("Pod", pod_key("/".join(parts[1:])), tuple(sorted(
                (str(k), str(v)) for k, v in (an.get("set") or {}).items())),
                tuple(str(k) for k in an.get("remove") or ())), line=line))
        elif kind == "throughput":
            t = raw["throughput"]
            tp = path + ("throughput",)
            for req in ("name", "from", "to"):
                if not t.get(req):
                    err(tp + (req,), "is required")
            if t.get("name") in names:
                err(tp + ("name",), f"duplicate name {t.get('name')!r}")
            names.add(t.get("name"))
            for end in ("from", "to"):
                ref = str(t.get(end, ""))
                if ref.startswith(SERVICE_PREFIX) or ref == EXTERNAL:
                    err(tp + (end,), f"must be a pod (NS/NAME or NAME in default), got {ref!r}")
            direction = t.get("direction", "reverse")
            if direction not in THROUGHPUT_DIRECTIONS:
                err(tp + ("direction",), f"must be reverse (the server pod sends, iperf3 -R) or forward, got {direction!r}")
            try:
                duration = parse_duration(t.get("duration", "5s"))
                interval = parse_duration(t.get("interval", "1s"))
            except ValueError as exc:
                err(tp, str(exc))
                continue
            if not 1 <= duration <= limits.MAX_THROUGHPUT_S:
                err(tp + ("duration",), f"must be 1s-{limits.MAX_THROUGHPUT_S:g}s (limit MAX_THROUGHPUT_S), got {duration:g}s")
            if not 0.1 <= interval <= duration:
                err(tp + ("interval",), f"must be 100ms up to the duration, got {interval:g}s")
            if not 1 <= t.get("parallel", 1) <= limits.MAX_PARALLEL_STREAMS:
                err(tp + ("parallel",), f"must be 1-{limits.MAX_PARALLEL_STREAMS} (limit MAX_PARALLEL_STREAMS), "
                    f"got {t.get('parallel')}")
            _port_ok(err, tp + ("port",), t.get("port", THROUGHPUT_PORT))
            steps.append(Step(i, "throughput", name=str(t.get("name")), throughput=Throughput(
                str(t.get("name")), pod_key(str(t.get("from", ""))), pod_key(str(t.get("to", ""))),
                t.get("port", THROUGHPUT_PORT), duration, t.get("parallel", 1), direction, interval,
                bool(t.get("background", False))), line=line))
        elif kind == "arping":
            a = raw["arping"]
            ap = path + ("arping",)
            if not a.get("name"):
                err(ap + ("name",), "is required")
            if bool(a.get("ip")) == bool(a.get("service")):
                err(ap, "needs exactly one of ip or service")
                continue
            if a.get("ip"):
                try:
                    ipaddress.IPv4Address(a["ip"])
                except ValueError:
                    err(ap + ("ip",), f"not an IPv4 address: {a['ip']!r}")
                    continue
            if a.get("name") in names:
                err(ap + ("name",), f"duplicate name {a.get('name')!r}")
            names.add(a.get("name"))
            cnt = a.get("count", 3)
            if not 1 <= cnt <= 100:
                err(ap + ("count",), f"must be 1-100, got {cnt}")
            steps.append(Step(i, "arping", name=str(a.get("name")), arping=Arping(
                str(a.get("name")), str(a.get("ip", "")), pod_key(str(a["service"])) if a.get("service") else "",
                cnt, a.get("expect")), line=line))
        elif kind == "fault":
            f = raw["fault"]
            fp = path + ("fault",)
            if f.get("kind") not in FAULT_KINDS:
                err(fp + ("kind",), f"must be one of {', '.join(FAULT_KINDS)}, got {f.get('kind')!r}")
                continue
            if bool(f.get("node")) == bool(f.get("holder_of")):
                err(fp, "needs exactly one of node or holder_of")
                continue
            steps.append(Step(i, "fault", fault=Fault(str(f["kind"]), str(f.get("node", "")),
                                                      pod_key(str(f["holder_of"])) if f.get("holder_of") else ""),
                              line=line))
        elif kind == "wait":
            try:
                steps.append(Step(i, "wait", seconds=parse_duration(str(raw["wait"])), line=line))
            except ValueError as exc:
                err(path + ("wait",), str(exc))
        else:
            steps.append(Step(i, "note", text=str(raw["note"]), line=line))
    holds = {s.hold.name for s in steps if s.kind == "hold"}
    loops = {s.traffic.name for s in steps if s.kind == "loop"}
    loops |= {s.throughput.name for s in steps if s.kind == "throughput" and s.throughput.background}
    for s_ in steps:
        if s_.kind == "check" and s_.name not in holds:
            err(("steps", s_.index, "check", "hold"), f"no hold step named {s_.name!r}")
        if s_.kind == "await" and s_.name not in loops:
            err(("steps", s_.index, "await"), f"no loop or background throughput step named {s_.name!r}")
    if errs:
        raise InputError(errs)
    return Scenario(data["scenario"], src.name, data.get("description", ""), tuple(data["manifests"]),
                    data.get("values"), tuple(steps), settings)


def kill_loops(scenario: Scenario) -> list[tuple[str, Traffic | None]]:
    """Each ``kill`` step's pod with the ``loop`` running at that point (started
    before it and not yet awaited; the latest if several), or None."""
    running: dict[str, Traffic] = {}
    out: list[tuple[str, Traffic | None]] = []
    for s in scenario.steps:
        if s.kind == "loop" and s.traffic is not None:
            running[s.traffic.name] = s.traffic
        elif s.kind == "await":
            running.pop(s.name, None)
        elif s.kind == "kill":
            out.append((s.pod, list(running.values())[-1] if running else None))
    return out
