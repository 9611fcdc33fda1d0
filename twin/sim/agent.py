"""One agent per node, with its own view of the cluster (policies and LB state)."""
from __future__ import annotations

import simpy

from twin.model.objects import Cluster
from twin.semantics.view import ClusterView
from twin.sim.api import ApiServer
from twin.sim.world import Component, World


class NodeAgent(Component):
    """Watches the API server; applies each change after ``agent_regenerate``.

    Until then its node enforces the old policy and load-balances with the
    old LB table, like a real agent that has not regenerated yet.
    """

    kind = "agent"

    def __init__(self, world: World, node: str, api: ApiServer):
        super().__init__(world, node)
        self.api = api
        self.version, self.cluster, self.states = api.version, api.cluster, dict(api.states)
        self.pending = 0
        self.dead = False  # agent-kill / node-crash: its maps stay as they are
        self.inbox = simpy.Store(self.env)
        #: called with the new version after each regeneration (e.g. the bandwidth limiters)
        self.listeners: list = []
        api.watchers.append(self)
        self.process = self.env.process(self._run())

    def notify(self, version: int, cluster: Cluster, states: dict) -> None:
        self.pending += 1
        self.inbox.put((version, cluster, states))

    def _run(self):
        while True:
            version, cluster, states = yield self.inbox.get()
            yield self.env.timeout(self.delays.agent_regenerate.sample(self.rng))
            self.pending -= 1
            if version > self.version and not self.dead:
                self.version, self.cluster, self.states = version, cluster, states
                self.world.log("agent-regenerated", node=self.name, version=version)
                for listener in self.listeners:
                    listener(version)

    @property
    def view(self) -> ClusterView:
        return self.api.views.view(self.cluster)

    @property
    def lb(self):
        return self.api.views.lb(self.version, self.cluster, self.states)
