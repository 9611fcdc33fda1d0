"""The endpoint pipeline as components: a readiness ``Prober`` per backend pod →
the ``Kubelet`` of its node (pod status) → the ``EndpointController`` → the API
server, whose watchers (every ``NodeAgent``) update their LB maps.

Stages and their delays are those of :mod:`twin.semantics.endpoints` and
:mod:`twin.semantics.delays`, the same the analytical intervals use.
"""
from __future__ import annotations

from twin.model.objects import Pod
from twin.semantics.dists import Uniform
from twin.semantics.endpoints import probe_port, readiness_probe
from twin.sim.api import ApiServer
from twin.sim.world import Component, World


class EndpointController(Component):
    """Drops a NotReady pod from its services' endpoints (and re-adds it when Ready)."""

    kind = "endpoints"

    def __init__(self, world: World, api: ApiServer):
        super().__init__(world, "controller")
        self.api = api

    def update(self, pod: str, state: str) -> None:
        self.env.process(self._update(pod, state))

    def _update(self, pod: str, state: str):
        yield self.env.timeout(self.delays.endpoints_controller.sample(self.rng))
        states = dict(self.api.states)
        states[pod] = state
        self.api.publish(f"endpoints {pod} {state}", states=states)


class Kubelet(Component):
    """A node's kubelet: reports a pod's readiness to the API server."""

    kind = "kubelet"

    def __init__(self, world: World, node: str, endpoints: EndpointController):
        super().__init__(world, node)
        self.endpoints = endpoints

    def report(self, pod: str, state: str) -> None:
        self.env.process(self._report(pod, state))

    def _report(self, pod: str, state: str):
        self.world.log("pod-" + state, pod=pod)
        yield self.env.timeout(self.delays.kubelet_status.sample(self.rng))
        self.world.log("status-updated", pod=pod, state=state)
        self.endpoints.update(pod, state)


class Prober(Component):
    """The kubelet's readiness prober for one pod: probes start every ``period``
    (a fixed schedule, like the kubelet's ticker) at a phase unknown to the
    scenario, uniform in one period."""

    kind = "prober"

    def __init__(self, world: World, pod: Pod, kubelet: Kubelet):
        super().__init__(world, pod.key)
        self.pod, self.kubelet = pod, kubelet
        self.spec = readiness_probe(pod)
        self.port = probe_port(pod, self.spec)
        self.ready = True
        self.fails = self.succ = 0
        self.process = self.env.process(self._run())

    def _run(self):
        env, spec, servers = self.env, self.spec, self.world.servers
        yield env.timeout(spec.initial_delay_s + Uniform(0.0, spec.period_s).sample(self.rng))
        while True:
            start = env.now
            alive = servers.alive(self.pod.key)
            took = self.delays.probe_answered if alive else self.delays.probe_refused
            yield env.timeout(took.sample(self.rng))
            if alive:
                self.succ, self.fails = self.succ + 1, 0
                if not self.ready and self.succ >= spec.success_threshold:
                    self.ready = True
                    self.kubelet.report(self.pod.key, "ready")
            else:
                self.fails, self.succ = self.fails + 1, 0
                self.world.log("probe-failed", pod=self.pod.key, consecutive=self.fails)
                if self.ready and self.fails >= spec.failure_threshold:
                    self.ready = False
                    self.kubelet.report(self.pod.key, "not-ready")
            yield env.timeout(max(0.0, start + spec.period_s - env.now))
