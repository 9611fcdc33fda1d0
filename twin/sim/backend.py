"""The twin as a :class:`twin.model.run.Backend`: components assembled per run,
steps walked with the shared :func:`twin.model.run.dispatch`.

Components (each a class that starts its own SimPy processes, with its own
random stream and delays, see :mod:`twin.sim.world`):

* :class:`~twin.sim.api.ApiServer`: the desired cluster and endpoint states.
* :class:`~twin.sim.agent.NodeAgent`: one per node, its own view of policy and LB state.
* :class:`~twin.sim.pipeline.Prober` (one per backend pod), :class:`~twin.sim.pipeline.Kubelet`
  (one per node), :class:`~twin.sim.pipeline.EndpointController`: the endpoint pipeline.
* :class:`~twin.sim.client.Client`: one per traffic step (requests, loop, hold, syscalls).
* When the run has a ``throughput`` step (:mod:`twin.sim.bandwidth`): a
  :class:`~twin.sim.bandwidth.Limiter` per (node, pod) following its node
  agent's view of the pod's egress annotation, and a
  :class:`~twin.sim.bandwidth.ThroughputClient` per throughput step, predicting
  goodput from the calibration profile (:mod:`twin.semantics.rates`).
* When the run needs L2 announcements (:func:`twin.model.run.needs_l2`),
  :class:`~twin.sim.l2.L2`: the Lease API, an elector per (node, lease), each
  node's responder and gratuitous ARP, the external host's ARP cache, faults
  and the consistency check; ``from: external`` traffic is an
  :class:`~twin.sim.l2.ExternalClient`.  Its predictions (failover outages,
  lease transitions and losses; analytic and Monte Carlo) come from
  :mod:`twin.sim.predict`.

A probe's egress verdict is taken with the source node agent's view and its
ingress verdict with the destination node agent's view, by the same
semantics the datapath is compiled from.  A dropped probe costs the tool's
timeout; an answered one costs round trips and server time.
"""
from __future__ import annotations

import time

from twin.calibration import load_bandwidth_profile
from twin.model.calibration import BandwidthProfile
from twin.model.enums import Verdict
from twin.model.observations import FlowRecord, KillRecord, Observations
from twin.model.run import RunInputs, dispatch, needs_l2, needs_services
from twin.model.scenario import EXTERNAL, Step, kill_loops
from twin.semantics.delays import DELAYS, Delays
from twin.semantics.endpoints import kill_predictions, probed_backends
from twin.semantics.probe import predict, resolve_targets
from twin.sim.agent import NodeAgent
from twin.sim.api import ApiServer
from twin.sim.bandwidth import Limiter, ThroughputClient
from twin.sim.client import Client
from twin.sim.l2 import L2, ExternalClient
from twin.sim.pipeline import EndpointController, Kubelet, Prober
from twin.sim.predict import MONTE_CARLO_RUNS, l2_predictions
from twin.sim.world import SimConfig, World


class Twin:
    """The components of one run, wired together."""

    def __init__(self, inputs: RunInputs, config: SimConfig, profile: BandwidthProfile | None = None):
        self.inputs, self.config = inputs, config
        self.world = world = World(inputs, config)
        self.env = world.env
        cluster = inputs.cluster
        self.api = ApiServer(world, cluster)
        self.agents = {n.name: NodeAgent(world, n.name, self.api) for n in cluster.nodes}
        self.probers: dict[str, Prober] = {}
        if needs_services(inputs.scenario):
            endpoints = EndpointController(world, self.api)
            kubelets = {n.name: Kubelet(world, n.name, endpoints) for n in cluster.nodes}
            for pod, _ in probed_backends(cluster):
                self.probers[pod.key] = Prober(world, pod, kubelets[pod.node])
        self.l2 = L2(self) if needs_l2(inputs.scenario, cluster) else None
        self.clients: dict[str, Client] = {}  # by traffic step name
        self.step_times: dict[int, float] = {}  # step index -> when it started
        self.loops: dict = {}
        self.throughputs: dict = {}  # background throughput processes by name
        self.limiters: dict[tuple[str, str], Limiter] = {}  # (node, pod key) -> limiter
        self.profile: BandwidthProfile | None = None
        if any(s.kind == "throughput" for s in inputs.scenario.steps):
            self.profile = profile if profile is not None else load_bandwidth_profile()
            world.obs.bandwidth = {"mechanism": "model", "calibration": self.profile.describe(),
                                   "calibrated_mechanism": self.profile.mechanism}
            for pod in cluster.pods:
                self.limiter(pod.node, pod.key)

    def limiter(self, node: str, pod: str) -> Limiter:
        lim = self.limiters.get((node, pod))
        if lim is None:
            lim = self.limiters[(node, pod)] = Limiter(self.world, self.agents[node], self.api, pod, self.profile)
        return lim

    def client(self, src: str, name: str) -> Client:
        c = self.clients.get(name)
        if c is None:
            if src == EXTERNAL:
                if self.l2 is None:
                    raise ValueError(f"traffic {name!r} from the external host needs L2 announcements "
                                     "(l2announcements.enabled and a CiliumL2AnnouncementPolicy)")
                c = self.clients[name] = ExternalClient(self, name)
            else:
                c = self.clients[name] = Client(self, src, name)
        return c

    def run(self) -> Observations:
        done = self.env.process(self._steps())
        self.env.run(until=done)
        return self.world.obs

    def _steps(self):
        steps = ScenarioSteps(self)
        for step in self.inputs.scenario.steps:
            self.world.log("step", step=step.index, kind=step.kind)
            self.step_times[step.index] = self.env.now
            yield from dispatch(steps, step)
            if self.l2 is not None:
                self.l2.check()
        for proc in (*self.loops.values(), *self.throughputs.values()):
            if proc.is_alive:
                yield proc
        while any(a.pending for a in self.agents.values()):  # let in-flight updates land
            yield self.env.timeout(0.001)


class ScenarioSteps:
    """The twin's step handlers (SimPy generators), called by ``dispatch``."""

    def __init__(self, twin: Twin):
        self.twin, self.env, self.world = twin, twin.env, twin.world
        self.inputs = twin.inputs

    def on_apply(self, step: Step):
        yield from self.twin.api.apply(f"apply {step.path}", self.inputs.after(step))

    def on_delete(self, step: Step):
        yield from self.twin.api.apply(f"delete {step.target}", self.inputs.after(step))

    def on_wait(self, step: Step):
        yield self.env.timeout(step.seconds)

    def on_note(self, step: Step):
        return
        yield

    def on_requests(self, step: Step):
        t = step.traffic
        yield from self.twin.client(t.src, t.name).run_requests(t)

    def on_loop(self, step: Step):
        t = step.traffic
        self.twin.loops[t.name] = self.twin.client(t.src, t.name).start_loop(t)
        return
        yield

    def on_await(self, step: Step):
        proc = self.twin.loops.get(step.name) or self.twin.throughputs.get(step.name)
        if proc is None:
            raise ValueError(f"await at step {step.index}: no loop or background throughput named {step.name!r} "
                             "has started before it")
        yield proc

    def on_hold(self, step: Step):
        h = step.hold
        yield from self.twin.client(h.src, h.name).hold(h)

    def on_check(self, step: Step):
        self.world.obs.holds.append(self.twin.clients[step.name].check(step.name, step.index))
        return
        yield

    def on_syscalls(self, step: Step):
        t = step.traffic
        self.world.obs.syscalls.append(self.twin.client(t.src, t.name).syscalls(t))
        return
        yield

    def on_label(self, step: Step):
        yield from self.twin.api.apply(f"label {step.label.kind}/{step.label.key}", self.inputs.after(step))

    def on_annotate(self, step: Step):
        yield from self.twin.api.apply(f"annotate {step.label.kind}/{step.label.key}", self.inputs.after(step))

    def on_throughput(self, step: Step):
        t, twin = step.throughput, self.twin
        cluster = twin.api.cluster
        pods = {p.key: p for p in cluster.pods}
        for role, key in (("from", t.src), ("to", t.dst)):
            if key not in pods:
                raise ValueError(f"throughput {t.name!r} (step {step.index}): {role} pod {key} does not exist at "
                                 f"t={self.env.now:.3f}s")
        sender, receiver = pods[t.sender], pods[t.receiver]
        client = ThroughputClient(self.world, t.name, twin.limiter(sender.node, sender.key),
                                  sender.node == receiver.node, twin.profile)
        proc = self.env.process(client.run(step, sender.key, receiver.key))
        if t.background:
            twin.throughputs[t.name] = proc
            return
        yield proc

    def _l2(self, step: Step):
        if self.twin.l2 is None:
            raise ValueError(f"step {step.index} ({step.kind}) needs L2 announcements: l2announcements.enabled "
                             "is false in the values")
        return self.twin.l2

    def on_arping(self, step: Step):
        l2, a = self._l2(step), step.arping
        ip = a.ip
        if not ip:
            svc = self.twin.api.cluster.service(a.service)
            ips = self.twin.api.view.allocation.ips.get(svc.key, ())
            if not ips:
                raise ValueError(f"arping {a.name}: service {a.service} has no LoadBalancer IP")
            ip = str(ips[0])
        yield from l2.arping(a.name, ip, a.count, step.index)

    def on_fault(self, step: Step):
        l2, f = self._l2(step), step.fault
        node, lease = f.node, None
        if f.holder_of:
            node, lease = l2.holder_of(f.holder_of)
            if node is None:
                raise ValueError(f"fault {f.kind} at step {step.index}: nobody holds {lease} at "
                                 f"t={self.env.now:.3f}s (is {f.holder_of} announced?)")
        l2.fault(f.kind, node, step.index, lease)
        return
        yield

    def on_kill(self, step: Step):
        self.world.servers.dead.add(step.pod)
        for c in self.twin.clients.values():
            c.server_killed(step.pod)
        self._killed(step)
        return
        yield

    def on_restart(self, step: Step):
        self.world.servers.dead.discard(step.pod)
        self._killed(step)
        return
        yield

    def _killed(self, step: Step) -> None:
        self.world.obs.kills.append(KillRecord(t=round(self.env.now, 6), action=step.kind, pod=step.pod, step=step.index))
        self.world.log(step.kind, pod=step.pod)

    def on_probe(self, step: Step):
        probe = step.probe
        twin, delays = self.twin, self.world.delays("probe", probe.name)
        rng = self.world.stream("probe", probe.name)  # the probing tool's own stream
        targets = resolve_targets(twin.api.view, probe)
        src = twin.api.cluster.pod(probe.src)
        for target in targets:
            start = self.env.now
            # egress is decided on the source node, ingress on the destination node
            dst_node = target.pod.node if target.pod else src.node
            pred = predict(twin.agents[src.node].view, probe, target, twin.agents[dst_node].view)
            same = target.pod is not None and target.pod.node == src.node
            rtt = 2 * (delays.net_same_node if same else delays.net_cross_node).sample(rng)
            if pred.verdict == Verdict.FORWARDED.value:
                cost = rtt * (3 if probe.kind == "http" else 1) + (delays.server_answer.sample(rng) if pred.http_status else 0)
            elif pred.http_status:  # L7 denial: the proxy answers 403
                cost = rtt * 3
            else:
                cost = self.inputs.scenario.settings.probe_timeout_s
            yield self.env.timeout(cost)
            self.world.obs.flows.append(FlowRecord(
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


class TwinBackend:
    """The SimPy twin: runs a scenario in virtual time (see the module docstring)."""

    name = "twin"

    def __init__(self, delays: Delays = DELAYS, overrides: dict[str, Delays] | None = None,
                 monte_carlo: int = MONTE_CARLO_RUNS, bandwidth_profile: BandwidthProfile | None = None):
        self.delays, self.overrides = delays, dict(overrides or {})
        #: the calibration the rate model uses (None: ``twin/calibration/bandwidth.json``, read when needed)
        self.bandwidth_profile = bandwidth_profile
        #: how many reruns (derived seeds) the L2 predictions' distributions come from; 0: none
        self.monte_carlo = monte_carlo

    def unavailable_reason(self) -> str | None:
        return None

    def run(self, inputs: RunInputs, seed: int) -> Observations:
        t0 = time.perf_counter()
        config = SimConfig(seed=seed, delays=self.delays, overrides=self.overrides)
        twin = Twin(inputs, config, self.bandwidth_profile)
        twin.world.log("twin-run", seed=seed)
        for d in self.delays.describe(l2=twin.l2 is not None):
            twin.world.log("twin-delay", **d)
        for component, delays in sorted(self.overrides.items()):
            for d in delays.describe(l2=twin.l2 is not None):
                twin.world.log("twin-delay", component=component, **d)
        obs = twin.run()
        obs.predictions = kill_predictions(inputs.cluster, kill_loops(inputs.scenario), self.delays)
        if twin.l2 is not None and self.monte_carlo > 0:
            obs.predictions += l2_predictions(inputs, twin, obs, seed, self.delays, self.overrides, self.monte_carlo)
        obs.virtual_seconds = round(twin.env.now, 6)
        obs.wall_seconds = round(time.perf_counter() - t0, 3)
        return obs
