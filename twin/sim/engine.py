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
    end_time: float = 0.0


class _Views:
    """ClusterView per cluster version, shared by agents that see the same version."""

    def __init__(self):
        self._by_version: dict[int, ClusterView] = {}

    def get(self, version: int, cluster: Cluster) -> ClusterView:
        v = self._by_version.get(version)
        if v is None:
            v = self._by_version[version] = ClusterView(cluster)
        return v


class ApiServer:
    def __init__(self, env: simpy.Environment, cluster: Cluster, log: list, timing: Timing):
        self.env, self.log, self.timing = env, log, timing
        self.cluster, self.version = cluster, 0
        self.agents: list[NodeAgent] = []

    def change(self, what: str, new: Cluster):
        yield self.env.timeout(self.timing.api_s)
        self.version += 1
        self.cluster = new
        self.log.append({"t": self.env.now, "event": "api", "what": what, "version": self.version})
        for a in self.agents:
            a.notify(self.version, new)


class NodeAgent:
    def __init__(self, env: simpy.Environment, node: str, cluster: Cluster, views: _Views, log: list,
                 timing: Timing, rng: random.Random):
        self.env, self.node, self.views, self.log, self.timing, self.rng = env, node, views, log, timing, rng
        self.version, self.cluster = 0, cluster
        self.inbox = simpy.Store(env)
        env.process(self._run())

    def notify(self, version: int, cluster: Cluster) -> None:
        self.inbox.put((version, cluster))

    def _run(self):
        while True:
            version, cluster = yield self.inbox.get()
            yield self.env.timeout(self.timing.agent_delay(self.rng))
            if version > self.version:
                self.version, self.cluster = version, cluster
                self.log.append({"t": self.env.now, "event": "agent-regenerated", "node": self.node, "version": version})

    @property
    def view(self) -> ClusterView:
        return self.views.get(self.version, self.cluster)


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

    def run(self) -> SimResult:
        self.env.process(self._steps())
        self.env.run()
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
