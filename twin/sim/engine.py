"""SimPy core: an API server, one agent per node, and probes.

* ``ApiServer`` holds the desired cluster; apply/delete take ``api_s`` and
  then notify every agent.
* ``NodeAgent`` (one per node) owns that node's *view* of the cluster: it
  picks up a change after an agent delay (watch + regeneration).  Until then
  its node enforces the old policy, like a real agent.
* A probe's egress verdict is taken with the source node's view and its
  ingress verdict with the destination node's view, by the same semantics
  the datapath is compiled from.  A dropped probe costs the tool's timeout;
  an answered one costs round trips and server time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import simpy

from twin.model.enums import Verdict
from twin.model.objects import Cluster, NetworkPolicy
from twin.model.observations import FlowRecord
from twin.model.scenario import Probe, Scenario, Step
from twin.semantics.probe import predict, resolve_targets
from twin.semantics.endpoints import PipelineTiming, readiness_probe
from twin.semantics.lb import lb_table
from twin.sim.services import Prober, Servers, ServiceTraffic, _u
from twin.semantics.view import ClusterView
from twin.sim.timing import Timing


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    timing: Timing = Timing()


@dataclass
class SimResult:
    flows: list[FlowRecord] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # time-ordered log
    traffic: list[dict] = field(default_factory=list)  # one row per request through a service
    holds: list[dict] = field(default_factory=list)  # check results of long-lived connections
    syscalls: list[dict] = field(default_factory=list)
    kills: list[dict] = field(default_factory=list)  # kill/restart times
    predictions: list[dict] = field(default_factory=list)
    end_time: float = 0.0


class _Views:
    """ClusterView per cluster version, shared by agents that see the same version."""

    def __init__(self):
        self._by_version: dict[int, ClusterView] = {}
        self._lb: dict[int, object] = {}

    def get(self, version: int, cluster: Cluster) -> ClusterView:
        v = self._by_version.get(version)
        if v is None:
            v = self._by_version[version] = ClusterView(cluster)
        return v

    def lb(self, version: int, cluster: Cluster, states: dict):
        t = self._lb.get(version)
        if t is None:
            t = self._lb[version] = lb_table(cluster, states, self.get(version, cluster).allocation)
        return t


class ApiServer:
    """Desired state: the cluster (policies) and the endpoint states of pods."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, log: list, timing: Timing):
        self.env, self.log, self.timing = env, log, timing
        self.cluster, self.version = cluster, 0
        self.states: dict[str, str] = {}  # pod key -> ready | not-ready (absent = ready)
        self.agents: list[NodeAgent] = []

    def change(self, what: str, new: Cluster | None = None, states: dict | None = None, delay: float | None = None):
        yield self.env.timeout(self.timing.api_s if delay is None else delay)
        self.version += 1
        if new is not None:
            self.cluster = new
        if states is not None:
            self.states = dict(states)
        self.log.append({"t": round(self.env.now, 6), "event": "api", "what": what, "version": self.version})
        for a in self.agents:
            a.notify(self.version, self.cluster, dict(self.states))


class NodeAgent:
    def __init__(self, env: simpy.Environment, node: str, cluster: Cluster, views: _Views, log: list,
                 timing: Timing, rng: random.Random):
        self.env, self.node, self.views, self.log, self.timing, self.rng = env, node, views, log, timing, rng
        self.version, self.cluster, self.states = 0, cluster, {}
        self.pending = 0
        self.inbox = simpy.Store(env)
        env.process(self._run())

    def notify(self, version: int, cluster: Cluster, states: dict) -> None:
        self.pending += 1
        self.inbox.put((version, cluster, states))

    def _run(self):
        while True:
            version, cluster, states = yield self.inbox.get()
            yield self.env.timeout(self.timing.agent_delay(self.rng))
            self.pending -= 1
            if version > self.version:
                self.version, self.cluster, self.states = version, cluster, states
                self.log.append({"t": round(self.env.now, 6), "event": "agent-regenerated", "node": self.node,
                                 "version": version})

    @property
    def view(self) -> ClusterView:
        return self.views.get(self.version, self.cluster)

    @property
    def lb(self):
        return self.views.lb(self.version, self.cluster, self.states)


class Simulation:
    def __init__(self, scenario: Scenario, cluster: Cluster, applies: dict[int, list[NetworkPolicy]], config: SimConfig):
        self.scenario, self.applies, self.config = scenario, applies, config
        self.env = simpy.Environment()
        self.rng = random.Random(config.seed)
        self.result = SimResult()
        self.views = _Views()
        self.api = ApiServer(self.env, cluster, self.result.events, config.timing)
        self.agents = {n.name: NodeAgent(self.env, n.name, cluster, self.views, self.result.events,
                                         config.timing, self.rng) for n in cluster.nodes}
        self.api.agents = list(self.agents.values())
        self.pipeline = PipelineTiming()
        self.servers = Servers()
        self.killed_since: dict[str, set] = {}
        self.traffic = ServiceTraffic(self)
        self.probers = {}
        if any(s.kind in ("requests", "loop", "hold", "kill", "restart", "syscalls") for s in scenario.steps):
            backends = {b.pod for fe in lb_table(cluster).services for b in fe.backends}
            for key in sorted(backends):
                pod = cluster.pod(key)
                if readiness_probe(pod) is not None:
                    self.probers[key] = Prober(self, pod, self.pipeline, random.Random(f"{config.seed}:{key}"))

    def log(self, event: str, **kw) -> None:
        self.result.events.append({"t": round(self.env.now, 6), "event": event, **kw})

    def pipeline_change(self, pod: str, state: str):
        """Stages 2-4 of the endpoint pipeline after the prober changed its mind."""
        self.log("pod-" + state, pod=pod)
        yield self.env.timeout(_u(self.rng, self.pipeline.status_s))
        self.log("status-updated", pod=pod, state=state)
        states = dict(self.api.states)
        states[pod] = state
        yield from self.api.change(f"endpoints {pod} {state}", states=states,
                                   delay=_u(self.rng, self.pipeline.endpoints_s))

    def run(self) -> SimResult:
        done = self.env.process(self._steps())
        self.env.run(until=done)
        self.result.end_time = self.env.now
        return self.result

    def _steps(self):
        for step in self.scenario.steps:
            self.result.events.append({"t": self.env.now, "event": "step", "step": step.index, "kind": step.kind})
            if step.kind == "apply":
                c = self.api.cluster
                for pol in self.applies[step.index]:
                    c = c.with_policy(pol)
                yield from self.api.change(f"apply {step.path}", c)
            elif step.kind == "delete":
                _, ns, name = step.target.split("/")
                yield from self.api.change(f"delete {step.target}", self.api.cluster.without_policy(f"{ns}/{name}"))
            elif step.kind == "wait":
                yield self.env.timeout(step.seconds)
            elif step.kind == "probe":
                yield from self._probe(step)
            elif step.kind == "requests":
                yield from self.traffic.run_requests(step.traffic)
            elif step.kind == "loop":
                self.traffic.start_loop(step.traffic)
            elif step.kind == "await":
                yield self.traffic.loops[step.name]
            elif step.kind == "hold":
                yield from self.traffic.hold(step.hold)
            elif step.kind == "check":
                self.result.holds.append(self.traffic.check(step.name))
            elif step.kind == "syscalls":
                self.result.syscalls.append(self.traffic.syscalls(step.traffic))
            elif step.kind in ("kill", "restart"):
                if step.kind == "kill":
                    self.servers.dead.add(step.pod)
                    for h, info in self.traffic.holds.items():
                        if info.get("backend") == step.pod:
                            self.killed_since.setdefault(h, set()).add(step.pod)
                else:
                    self.servers.dead.discard(step.pod)
                self.result.kills.append({"t": round(self.env.now, 6), "action": step.kind, "pod": step.pod})
                self.log(step.kind, pod=step.pod)
        for name, proc in self.traffic.loops.items():
            if proc.is_alive:
                yield proc
        while any(a.pending for a in self.agents.values()):  # let in-flight updates land
            yield self.env.timeout(0.001)

    def _probe(self, step: Step):
        probe = step.probe
        assert probe is not None
        api_view = self.views.get(self.api.version, self.api.cluster)
        targets = resolve_targets(api_view, probe)
        src = api_view.cluster.pod(probe.src)
        t = self.config.timing
        for target in targets:
            start = self.env.now
            # egress is decided on the source node, ingress on the destination node
            src_view = self.agents[src.node].view
            dst_node = target.pod.node if target.pod else src.node
            dst_view = self.agents[dst_node].view
            pred = predict(src_view, probe, target, dst_view)
            same = target.pod is not None and target.pod.node == src.node
            if pred.verdict == Verdict.FORWARDED.value:
                cost = t.rtt(same) * (3 if probe.kind == "http" else 1) + (t.server_s if pred.http_status else 0)
            elif pred.http_status:  # L7 denial: the proxy answers 403
                cost = t.rtt(same) * 3
            else:
                cost = self.scenario.settings.probe_timeout_s
            yield self.env.timeout(cost)
            self.result.flows.append(FlowRecord(
                probe=probe.name, step=step.index, time=round(start, 6), src=probe.src, dst=target.dst,
                dst_ip=str(target.dst_ip), protocol=probe.protocol, port=target.port, verdict=pred.verdict,
                drop_reason=pred.drop_reason, drop_reason_code=pred.drop_reason_code, layer=pred.layer,
                http_status=pred.http_status, http_method=probe.method if probe.kind == "http" else None,
                http_path=probe.path if probe.kind == "http" else None,
                body=(pred.body or "").splitlines()[0] if pred.body else None,
                src_identity=pred.src_identity, dst_identity=pred.dst_identity, node=pred.node,
                direction=pred.direction, explanation=pred.explanation, service=target.service,
                latency_s=round(cost, 6),
            ))


def simulate(scenario: Scenario, cluster: Cluster, applies: dict[int, list[NetworkPolicy]],
             config: SimConfig = SimConfig()) -> SimResult:
    """Run a scenario in virtual time.  ``applies`` maps an apply step's index to its policies."""
    return Simulation(scenario, cluster, applies, config).run()
