"""The real backend: the scenario on real namespaces, real eBPF and real tools.

``RealCluster`` is the control plane of a real run: it builds the Mininet
topology from the model, loads one BPF object per node, attaches it to the
node's lxc devices, and programs the maps from the semantics (ipcache,
endpoints, policy).  Policy apply/delete reconciles the maps in place.

A probe runs the real tool (ping, curl, a TCP connect, a UDP datagram) in
the source pod's namespace.  Its verdict comes from what the tool saw
(answered or refused = forwarded; timed out = dropped) and the BPF flow
events of that flow give the drop reason, direction and node; where the two
disagree, the record says so in ``evidence`` and the diff shows it.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

from twin.model.enums import Direction, DropReason, Protocol
from twin.model.findings import TwinError
from twin.model.objects import Cluster
from twin.model.observations import FlowRecord
from twin.model.scenario import Probe
from twin.semantics.probe import ProbeTarget, resolve_targets
from twin.semantics.view import ClusterView

PROTO_NUM = {"TCP": int(Protocol.TCP), "UDP": int(Protocol.UDP), "ICMP": int(Protocol.ICMP)}


def real_unavailable_reason() -> str | None:
    """Why the real datapath cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc and BPF programs); run as root after `make setup`"
    for mod, pkg in (("bcc", "python3-bpfcc"), ("mininet", "mininet"), ("pyroute2", "python3-pyroute2")):
        try:
            __import__(mod)
        except ImportError:
            return f"Python module {mod!r} is missing (Debian package {pkg}; `make setup` installs it)"
    from datapath.headers import ensure_kernel_headers, find_kernel_headers
    tree, why = find_kernel_headers()
    if tree is None:
        return why
    ensure_kernel_headers()
    for tool in ("ping", "curl", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"the tool {tool!r} is missing (`make setup` installs it)"
    return None


from harness.realcluster import RealCluster  # noqa: E402  (moved; the agents program the maps)


def _run_tool(topo, probe: Probe, target: ProbeTarget, timeout: float) -> dict:
    from harness import tools
    ip = str(target.dst_ip)
    if probe.kind == "ping":
        return tools.ping(topo, probe.src, ip, timeout)
    if probe.kind == "http":
        return tools.http(topo, probe.src, ip, target.port, probe.method, probe.path, timeout)
    if probe.kind == "tcp":
        return tools.tcp_connect(topo, probe.src, ip, target.port, timeout)
    return tools.udp_echo(topo, probe.src, ip, target.port, timeout)


def observe_probe(rc: RealCluster, view: ClusterView, probe: Probe, target: ProbeTarget, step: int,
                  t0: float, timeout: float) -> FlowRecord:
    src = view.cluster.pod(probe.src)
    rc.drain_events()
    start = time.monotonic() - t0
    res = _run_tool(rc.topo, probe, target, timeout)
    proto = PROTO_NUM[probe.protocol]
    mine = []
    for node, e in rc.events(100):
        if e.src_ip != src.ip or e.dst_ip != target.dst_ip or e.protocol != proto or e.is_reply:
            continue
        if proto != int(Protocol.ICMP) and e.dst_port != target.port:
            continue
        mine.append((node, e))
    drops = [(n, e) for n, e in mine if e.verdict.value == "DROPPED"]
    evidence = [f"{res.get('tool', probe.kind)}: {res['outcome']}" + (f" HTTP {res['status']}" if res.get("status") else "")]
    evidence += [f"bpf@{n}: {e.direction.name.lower()} {e.verdict.value}" + (f" reason {e.drop_reason}" if e.drop_reason else "")
                 for n, e in mine]
    if res["outcome"] in ("answered", "refused"):
        verdict = "FORWARDED"
    elif res["outcome"] == "timeout":
        verdict = "DROPPED"
        if not drops:
            evidence.append("no BPF drop event for this flow: lost elsewhere")
    else:
        verdict = "ERROR"
    reason_code = int(drops[0][1].drop_reason) if drops and verdict == "DROPPED" else 0
    try:
        reason_text = DropReason(reason_code).text if reason_code else None
    except ValueError:
        reason_text = f"code {reason_code}"
    node = drops[0][0] if drops else src.node
    direction = drops[0][1].direction.name.lower() if drops and verdict == "DROPPED" else None
    first = mine[0][1] if mine else None
    body = res.get("body")
    texts = view.engine.rule_texts()

    def why(e) -> str:
        if e.rule_ref == 0:  # the map's allow-all (unenforced) entry, or a miss (default deny)
            return "direction not enforced (default allow)" if e.verdict.value == "FORWARDED" else "default deny"
        return texts[e.rule_ref] if e.rule_ref < len(texts) else f"rule {e.rule_ref}"
    explanation = "; ".join(f"bpf@{n} {e.direction.name.lower()}: {e.verdict.value} [{why(e)}]" for n, e in mine) \
        or "no BPF flow event"
    return FlowRecord(
        probe=probe.name, step=step, time=round(start, 6), src=probe.src, dst=target.dst, dst_ip=str(target.dst_ip),
        protocol=probe.protocol, port=target.port, verdict=verdict, drop_reason=reason_text,
        drop_reason_code=reason_code, layer="L3/L4", http_status=res.get("status"),
        http_method=probe.method if probe.kind == "http" else None, http_path=probe.path if probe.kind == "http" else None,
        body=body.splitlines()[0] if body else None,
        src_identity=first.ep_identity if first and first.direction == Direction.EGRESS else view.ids.pod_identity(src),
        dst_identity=(first.peer_identity if first and first.direction == Direction.EGRESS
                      else view.ids.identity_of_ip(target.dst_ip, src.node)),
        node=node, direction=direction, explanation=explanation, service=target.service,
        latency_s=round(res.get("seconds", 0.0), 6), evidence=tuple(evidence),
    )


def run_real(inputs) -> dict:
    """Run a scenario on the real datapath; returns observations like the twin's."""
    scenario, cluster = inputs.scenario, inputs.cluster
    flows: list[FlowRecord] = []
    events: list[dict] = []
    wall0 = time.perf_counter()
    from harness.services_real import RealPipeline, RealTraffic
    needs_services = any(s.kind in ("requests", "loop", "hold", "kill", "restart", "syscalls") for s in scenario.steps)
    kills: list[dict] = []
    with RealCluster(cluster) as rc:
        events.append({"t": 0.0, "event": "built", "seconds": round(time.perf_counter() - wall0, 3)})
        t0 = time.monotonic()
        pipeline = RealPipeline(rc, t0, events) if needs_services else None
        traffic = RealTraffic(rc, t0, scenario.settings)
        try:
            _run_steps(inputs, rc, traffic, flows, events, kills, t0)
        finally:
            traffic.close()
            if pipeline:
                pipeline.close()
    events.sort(key=lambda e: e["t"])
    return {"flows": [f.as_dict() for f in flows], "events": events, "traffic": traffic.rows,
            "holds": traffic.hold_results, "syscalls": traffic.syscall_results, "kills": kills,
            "wall_seconds": round(time.perf_counter() - wall0, 3)}


def _run_steps(inputs, rc: RealCluster, traffic, flows: list, events: list, kills: list, t0: float) -> None:
    scenario, cluster = inputs.scenario, inputs.cluster
    current = cluster
    view = ClusterView(current)
    for step in scenario.steps:
        now = round(time.monotonic() - t0, 6)
        events.append({"t": now, "event": "step", "step": step.index, "kind": step.kind})
        if step.kind in ("apply", "delete"):
            if step.kind == "apply":
                for pol in inputs.applies[step.index]:
                    current = current.with_policy(pol)
            else:
                _, ns, name = step.target.split("/")
                current = current.without_policy(f"{ns}/{name}")
            prog = rc.program(current)
            view = ClusterView(current)
            for node, secs in prog.seconds.items():
                events.append({"t": round(time.monotonic() - t0, 6), "event": "maps-reconciled", "node": node,
                               "seconds": secs, **prog.changes[node]})
        elif step.kind == "wait":
            time.sleep(step.seconds)
        elif step.kind == "probe":
            for target in resolve_targets(view, step.probe):
                flows.append(observe_probe(rc, view, step.probe, target, step.index, t0,
                                           scenario.settings.probe_timeout_s))
        elif step.kind == "requests":
            traffic.requests(step.traffic)
        elif step.kind == "loop":
            traffic.start_loop(step.traffic)
        elif step.kind == "await":
            traffic.await_loop(step.name)
        elif step.kind == "hold":
            traffic.hold(step.hold)
        elif step.kind == "check":
            traffic.check(step.name)
        elif step.kind == "syscalls":
            traffic.syscalls(step.traffic)
        elif step.kind in ("kill", "restart"):
            t = rc.topo.kill_server(step.pod) if step.kind == "kill" else rc.topo.start_server(step.pod)
            kills.append({"t": round(t - t0, 6), "action": step.kind, "pod": step.pod})
            events.append({"t": round(t - t0, 6), "event": step.kind, "pod": step.pod})
    for name in list(traffic.loops):
        traffic.await_loop(name)
