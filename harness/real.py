"""The real backend: the scenario on real namespaces, real eBPF and real tools.

``RealCluster`` (``harness/realcluster.py``) builds the Mininet topology
from the model and starts one node agent per node (``datapath/agent``);
the agents own their node's programs and maps and reconcile them from the
desired state the harness publishes.  Policy apply/delete is a publish.

A probe runs the real tool (ping, curl, a TCP connect, a UDP datagram) in
the source pod's namespace.  Its verdict comes from what the tool saw
(answered or refused = forwarded; timed out = dropped) and the BPF flow
events of that flow give the drop reason, direction and node; where the two
disagree, the record says so in ``evidence`` and the diff shows it.

``RealBackend`` is the :class:`~twin.model.run.Backend` the harness runs: it
builds a ``RealCluster`` and walks the scenario's steps with the one step
dispatch (``twin.model.run.dispatch``), returning typed observations.

L2 runs (:func:`twin.model.run.needs_l2`): the cluster comes with the control
plane, the agents' electors and the external host's ARP watch; ``arping``
runs arping on the external host, ``fault`` acts on the topology or a node's
agent, and at the end the API server's audit log becomes
:class:`~twin.model.observations.LeaseTransition` records, the ARP watch's
gratuitous ARPs :class:`~twin.model.observations.ArpObservation` records, and
the consistency monitor's findings :class:`~twin.model.observations.L2Check`
records — all on the run clock (monotonic − t0).
"""
from __future__ import annotations

import os
import shutil
import time
from collections import Counter

from twin.model.enums import Direction, DropReason, Protocol
from twin.model.observations import (ArpObservation, Event, FaultRecord, FlowRecord, KillRecord, LeaseTransition,
                                     Observations, Rate, RateInterval, ThroughputRecord)
from twin.model.run import RunInputs, dispatch, needs_bandwidth, needs_l2, needs_services
from twin.model.scenario import Probe, Step
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
    from datapath.headers import ensure_kernel_headers
    tree, why = ensure_kernel_headers()
    if tree is None:
        return why
    for tool in ("ping", "curl", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"the tool {tool!r} is missing (`make setup` installs it)"
    return None


from harness.realcluster import L2Monitor, L2Options, RealCluster  # noqa: E402  (moved; the agents program the maps)


# -- L2 records from what the real side saw (pure) --------------------------------------------

def lease_transitions(writes: list[dict], t0: float) -> list[LeaseTransition]:
    """The API server's audit lines of Lease writes → holder changes, numbered per lease
    from 0 (the first acquisition), ``t`` on the run clock.  Renewals (the same holder
    writing again) are not transitions; a write that clears the holder (a release) is
    not one either, but the next acquisition after it is."""
    last: dict[str, str] = {}
    count: Counter = Counter()
    out = []
    for e in sorted(writes, key=lambda e: e["t"]):
        lease, holder = e["lease"], e.get("holder") or ""
        prev = last.get(lease, "")
        last[lease] = holder
        if not holder or holder == prev:
            continue
        out.append(LeaseTransition(lease, count[lease], round(e["t"] - t0, 6), holder, prev or None,
                                   int(e.get("transitions") or 0)))
        count[lease] += 1
    return out


def garp_observations(events: list[dict], t0: float, mac_to_node: dict[str, str], ips) -> list[ArpObservation]:
    """The external host's ARP watch → one ``garp`` record per gratuitous ARP (sender IP =
    target IP) for an announced IP, the sender's MAC resolved to its node, numbered per IP."""
    wanted = {str(ip) for ip in ips}
    macs = {m.lower(): n for m, n in mac_to_node.items()}
    count: Counter = Counter()
    out = []
    for e in sorted(events, key=lambda e: e["t"]):
        if e.get("sip") != e.get("tip") or e.get("sip") not in wanted:
            continue
        mac = str(e.get("sha", "")).lower()
        out.append(ArpObservation("garp", "garp", round(e["t"] - t0, 6), e["sip"], (macs.get(mac, mac),), (mac,),
                                  index=count[e["sip"]]))
        count[e["sip"]] += 1
    return out


def arping_observation(name: str, step: int, ip: str, t: float, replies: list[tuple[float, str]],
                       mac_to_node: dict[str, str]) -> ArpObservation:
    """An arping step's replies (arrival order) with each MAC resolved to its node."""
    macs = {m.lower(): n for m, n in mac_to_node.items()}
    got = [str(mac).lower() for _, mac in sorted(replies, key=lambda r: r[0])]
    return ArpObservation(name, "arping", round(t, 6), ip, tuple(macs.get(m, m) for m in got), tuple(got), step)


#: the real electors' event names → the twin's names for the same moments, so both event logs read alike
L2_EVENT_NAMES = {"acquired": "lease-acquired", "lost": "lease-lost", "renewed": "lease-renewed",
                  "throttled": "lease-throttled", "attempt-failed": "lease-attempt-failed",
                  "started": "elector-started", "garp": "garp-sent", "programmed": "responder-programmed"}


def l2_event(t: float, node: str, event) -> dict:
    """An elector event (a dict with ``event``/``kind``, or text) as an event-log line: named as the
    twin names it where there is a twin counterpart (:data:`L2_EVENT_NAMES`), else ``l2-<name>``."""
    fields = dict(event) if isinstance(event, dict) else {"what": str(event)}
    fields.pop("t", None)
    fields.pop("node", None)
    name = str(fields.pop("event", None) or fields.pop("kind", None) or "event")
    return {"t": round(t, 6), "event": L2_EVENT_NAMES.get(name, f"l2-{name}"), "node": node, **fields}


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


def throughput_record(step: Step, start: dict, res) -> ThroughputRecord:
    """An iperf3 measurement (:class:`harness.iperf.IperfResult`) of a ``throughput`` step as the
    shared record; ``start`` holds what was known when it started (``t``, ``limit_bps``,
    ``same_node``, ``mechanism``, the annotation's ``raw`` value and its ``limit_note``)."""
    tp = step.throughput
    lim = start.get("limit_bps")
    basis = (f"iperf3 {'-R ' if tp.direction == 'reverse' else ''}receiver goodput (sum_received) over "
             f"{res.seconds:.3f} s; sender {tp.sender} "
             + (f"limited to {lim} bit/s on the wire" if lim else "unlimited")
             + (" (same node: not limited)" if lim and start.get("same_node") else ""))
    evidence = [" ".join(res.argv), f"server {res.server_ip}:{res.port} in {tp.dst}",
                f"mechanism {start.get('mechanism')}", f"wall {res.wall_s} s"]
    if start.get("raw") is not None:
        evidence.append(f"annotation {start['raw']!r}" + (f": {start['limit_note']}" if start.get("limit_note") else ""))
    return ThroughputRecord(
        name=tp.name, step=step.index, t=start["t"], sender=tp.sender, receiver=tp.receiver,
        direction=tp.direction, parallel=tp.parallel, duration_s=tp.duration_s, same_node=bool(start["same_node"]),
        limit_bps=lim, goodput=Rate(round(res.goodput_bps, 1)),
        streams=tuple(Rate(round(b, 1)) for b in res.streams_bps),
        intervals=tuple(RateInterval(t0, t1, Rate(round(b, 1))) for t0, t1, b in res.intervals),
        retransmits=res.retransmits, mechanism=str(start.get("mechanism") or "none"), basis=basis,
        evidence=tuple(evidence), cpu_s=res.cpu_s)


class RealBackend:
    """The real datapath as a :class:`~twin.model.run.Backend`: a topology of
    namespaces, one BPF datapath (and socket LB) per node, real tools in the pods."""

    name = "real"

    def unavailable_reason(self) -> str | None:
        return real_unavailable_reason()

    def run(self, inputs: RunInputs, seed: int) -> Observations:
        from harness.kubelet import RealPipeline
        from harness.services_real import RealTraffic
        obs = Observations(self.name)
        log: list[dict] = []  # shared with the pipeline's prober threads (they append dicts)
        wall0 = time.perf_counter()
        st = inputs.scenario.settings
        l2 = L2Options(st.api_backup_path, st.external) if needs_l2(inputs.scenario, inputs.cluster) else None
        with RealCluster(inputs.cluster, l2=l2, bandwidth=needs_bandwidth(inputs)) as rc:
            log.append({"t": 0.0, "event": "built", "seconds": round(time.perf_counter() - wall0, 3)})
            t0 = time.monotonic()
            pipeline = RealPipeline(rc, t0, log, seed=seed) if needs_services(inputs.scenario) else None
            traffic = RealTraffic(rc, t0, inputs.scenario.settings)
            monitor = L2Monitor(rc).start() if l2 is not None else None
            steps = _RealSteps(inputs, rc, traffic, obs, log, t0, monitor)
            try:
                for step in inputs.scenario.steps:
                    log.append({"t": steps.now(), "event": "step", "step": step.index, "kind": step.kind})
                    if monitor is not None:
                        monitor.poll()
                    dispatch(steps, step)
                for name in list(traffic.loops):  # loops the scenario never awaited
                    traffic.await_loop(name)
                for name in list(steps.throughputs):  # background throughputs never awaited
                    steps.await_throughput(name)
                if monitor is not None:
                    monitor.poll()
                obs.bandwidth = rc.bandwidth_state()  # before teardown: what the agents programmed at the end
            finally:
                steps.close()
                traffic.close()
                if pipeline:
                    pipeline.close()
                if monitor is not None:
                    monitor.close()
            if l2 is not None:
                self._l2_records(inputs, rc, monitor, obs, log, t0)
        obs.events = [Event(round(e["t"], 6), e["event"], {k: v for k, v in e.items() if k not in ("t", "event")})
                      for e in list(log)]
        obs.requests, obs.holds, obs.syscalls = traffic.rows, traffic.hold_results, traffic.syscall_results
        obs.throughput = sorted(obs.throughput, key=lambda r: (r.step, r.name))
        obs.wall_seconds = round(time.perf_counter() - wall0, 3)
        return obs

    @staticmethod
    def _l2_records(inputs: RunInputs, rc: RealCluster, monitor: L2Monitor, obs: Observations, log: list[dict],
                    t0: float) -> None:
        """Lease transitions (audit log), gratuitous ARPs (ARP watch), consistency findings
        (monitor) and the electors' events, before the cluster is torn down."""
        from twin.semantics.l2 import announcements
        from twin.semantics.lbipam import allocate
        obs.leases = lease_transitions(rc.lease_writes(), t0)
        ips = set()
        for cluster in [inputs.cluster, *inputs.desired.values()]:
            for a in announcements(cluster, allocate(cluster)).values():
                ips |= {str(ip) for ip in a.ips}
        obs.arp += garp_observations(rc.topo.arp_events(), t0, rc.topo.mac_to_node(), ips)
        obs.l2_checks = monitor.checks(t0)
        log += [l2_event(t - t0, node, ev) for t, node, ev in list(rc.l2_events)]
        log += [{"t": round(time.monotonic() - t0, 6), "event": "l2-monitor-error", "error": e} for e in monitor.errors]


class _RealSteps:
    """The step handlers of one real run (blocking); :func:`twin.model.run.dispatch` calls them."""

    def __init__(self, inputs: RunInputs, rc: RealCluster, traffic, obs: Observations, log: list[dict], t0: float,
                 monitor: L2Monitor | None = None):
        self.inputs, self.rc, self.traffic, self.obs, self.log, self.t0 = inputs, rc, traffic, obs, log, t0
        self.monitor = monitor
        self.view = ClusterView(inputs.cluster)
        from harness.iperf import PortBook
        self.ports = PortBook()
        #: background throughput steps running: name -> (step, IperfRun, record fields known at start)
        self.throughputs: dict[str, tuple] = {}

    def close(self) -> None:
        """Stop every iperf3 still running (an error or Ctrl-C left it behind)."""
        for name, (_, run, _) in list(self.throughputs.items()):
            run.close()
            self.ports.give(run.server_pod, run.port)
        self.throughputs.clear()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def _change(self, step: Step) -> None:
        desired = self.inputs.after(step)
        prog = self.rc.program(desired)
        self.view = ClusterView(desired)
        for node, secs in prog.seconds.items():
            self.log.append({"t": self.now(), "event": "maps-reconciled", "node": node, "seconds": secs,
                             **prog.changes[node]})

    def _server(self, step: Step, t: float) -> None:
        self.obs.kills.append(KillRecord(round(t - self.t0, 6), step.kind, step.pod, step.index))
        self.log.append({"t": round(t - self.t0, 6), "event": step.kind, "pod": step.pod})

    def on_probe(self, step: Step) -> None:
        for target in resolve_targets(self.view, step.probe):
            self.obs.flows.append(observe_probe(self.rc, self.view, step.probe, target, step.index, self.t0,
                                                self.inputs.scenario.settings.probe_timeout_s))

    def on_apply(self, step: Step) -> None:
        self._change(step)

    def on_delete(self, step: Step) -> None:
        self._change(step)

    def on_wait(self, step: Step) -> None:
        time.sleep(step.seconds)

    def on_note(self, step: Step) -> None:
        pass

    def on_requests(self, step: Step) -> None:
        self.traffic.requests(step.traffic)

    def on_loop(self, step: Step) -> None:
        self.traffic.start_loop(step.traffic)

    def on_await(self, step: Step) -> None:
        if step.name in self.throughputs:
            self.await_throughput(step.name)
        else:
            self.traffic.await_loop(step.name)

    def on_hold(self, step: Step) -> None:
        self.traffic.hold(step.hold, step.index)

    def on_check(self, step: Step) -> None:
        self.traffic.check(step.name, step.index)

    def on_syscalls(self, step: Step) -> None:
        self.traffic.syscalls(step.traffic)

    def on_label(self, step: Step) -> None:
        self._change(step)

    def on_annotate(self, step: Step) -> None:
        self._change(step)

    def on_throughput(self, step: Step) -> None:
        """iperf3 between the two pods (:mod:`harness.iperf`); blocking, or in the background
        until an ``await: {throughput: NAME}`` (or the end of the run)."""
        from harness.iperf import IperfRun
        from twin.semantics.bandwidth import egress_limit
        tp = step.throughput
        cluster = self.rc.cluster  # the desired cluster as last published (after annotate steps)
        server, client, sender = cluster.pod(tp.dst), cluster.pod(tp.src), cluster.pod(tp.sender)
        lim = egress_limit(sender, cluster.values)
        start = {"t": self.now(), "limit_bps": lim.rate_bps if lim is not None else None,
                 "limit_note": lim.note if lim is not None else "", "raw": lim.raw if lim is not None else None,
                 "same_node": server.node == client.node, "mechanism": self.rc.node_mechanism(sender.node)}
        port = self.ports.take(tp.dst, tp.port)
        try:
            run = IperfRun(self.rc.topo, tp.dst, str(server.ip), tp.src, port, tp.duration_s, tp.interval_s,
                           tp.parallel, tp.direction == "reverse").start()
        except BaseException:
            self.ports.give(tp.dst, port)
            raise
        self.log.append({"t": start["t"], "event": "throughput-started", "name": tp.name, "sender": tp.sender,
                         "receiver": tp.receiver, "port": port, "limit_bps": start["limit_bps"],
                         "background": tp.background})
        self.throughputs[tp.name] = (step, run, start)
        if not tp.background:
            self.await_throughput(tp.name)

    def await_throughput(self, name: str) -> None:
        """Wait for a running throughput step and record it."""
        step, run, start = self.throughputs[name]
        try:
            res = run.wait()
        finally:
            self.throughputs.pop(name, None)
            self.ports.give(run.server_pod, run.port)
        rec = throughput_record(step, start, res)
        self.obs.throughput.append(rec)
        self.log.append({"t": self.now(), "event": "throughput-done", "name": name,
                         "goodput_bps": round(res.goodput_bps), "retransmits": res.retransmits})

    def _need_l2(self, step: Step) -> None:
        if self.rc.l2 is None:
            from harness.errors import HarnessError
            raise HarnessError(f"step {step.index} ({step.kind}) needs L2 announcements "
                               "(l2announcements.enabled in the values)")

    def _lease_of(self, service: str) -> str:
        from twin.semantics.l2 import lease_name
        return lease_name(self.rc.cluster.service(service))

    def on_arping(self, step: Step) -> None:
        """arping from the external host; replies' MACs resolved to nodes (whether they are the
        expected ones is checked by the runner against the lease holder at that time)."""
        from harness.services_real import first_lb_ip
        self._need_l2(step)
        a = step.arping
        ip = a.ip or first_lb_ip(self.rc.cluster, a.service)
        t = self.now()
        replies = self.rc.topo.external_arping(ip, a.count, float(a.count) + 1.0)
        rec = arping_observation(a.name, step.index, ip, t, replies, self.rc.topo.mac_to_node())
        self.obs.arp.append(rec)
        self.log.append({"t": t, "event": "arping", "name": a.name, "ip": ip, "nodes": list(rec.nodes)})

    def on_fault(self, step: Step) -> None:
        """Partition/heal/nic-down through the topology, agent-kill and responder-missing through
        the node's agent, node-crash both (the agent is killed and the node leaves the LAN)."""
        from harness.errors import HarnessError
        self._need_l2(step)
        f = step.fault
        lease = self._lease_of(f.holder_of) if f.holder_of else None
        node = f.node or self.rc.holder_now(lease)
        if not node:
            raise HarnessError(f"step {step.index}: fault {f.kind} on the holder of {f.holder_of}: "
                               f"nobody holds {lease} at {self.now()} s")
        if node not in self.rc.agents:
            raise HarnessError(f"step {step.index}: fault {f.kind}: no node {node!r}")
        topo, agent = self.rc.topo, self.rc.agents[node]
        if f.kind == "partition":
            t = topo.partition(node)
        elif f.kind == "heal":
            t = topo.heal(node)
        elif f.kind == "nic-down":
            t = topo.nic_down(node)
        elif f.kind == "node-crash":
            t = agent.kill_agent()
            topo.node_crash(node)
        elif f.kind == "agent-kill":
            t = agent.kill_agent()
        elif f.kind == "responder-missing":
            t = agent.inject_responder_fault()
        else:
            raise HarnessError(f"step {step.index}: unknown fault kind {f.kind!r}")
        rec = FaultRecord(round(t - self.t0, 6), f.kind, node, step.index, lease)
        self.obs.faults.append(rec)
        self.log.append({"t": rec.t, "event": "fault", "kind": f.kind, "node": node, "lease": lease})

    def on_kill(self, step: Step) -> None:
        self._server(step, self.rc.topo.kill_server(step.pod))

    def on_restart(self, step: Step) -> None:
        self._server(step, self.rc.topo.start_server(step.pod))
