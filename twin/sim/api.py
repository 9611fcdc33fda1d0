"""The API server: the desired cluster (policies) and the pods' endpoint states;
every change is published to every node agent's watch."""
from __future__ import annotations

from twin.model.objects import Cluster
from twin.semantics.lb import lb_table
from twin.semantics.view import ClusterView
from twin.sim.world import Component, World


class Views:
    """ClusterView per cluster and LB table per API version, shared by agents that see
    the same version.  An endpoint-state change is a new version of the same cluster
    object, so it reuses that cluster's view (the view keeps its cluster alive, so
    the ``id`` key is never reused)."""

    def __init__(self):
        self._views: dict[int, ClusterView] = {}
        self._lb: dict[int, object] = {}

    def view(self, cluster: Cluster) -> ClusterView:
        v = self._views.get(id(cluster))
        if v is None:
            v = self._views[id(cluster)] = ClusterView(cluster)
        return v

    def lb(self, version: int, cluster: Cluster, states: dict):
        t = self._lb.get(version)
        if t is None:
            t = self._lb[version] = lb_table(cluster, states, self.view(cluster).allocation)
        return t


class ApiServer(Component):
    kind = "api"

    def __init__(self, world: World, cluster: Cluster):
        super().__init__(world, "api")
        self.cluster, self.version = cluster, 0
        self.states: dict[str, str] = {}  # pod key -> ready | not-ready (absent = ready)
        self.watchers: list = []
        self.views = Views()

    @property
    def view(self) -> ClusterView:
        return self.views.view(self.cluster)

    def apply(self, what: str, desired: Cluster):
        """A client's apply/delete: admitted after ``api_accept``, then published."""
        yield self.env.timeout(self.delays.api_accept.sample(self.rng))
        self.publish(what, cluster=desired)

    def publish(self, what: str, cluster: Cluster | None = None, states: dict | None = None) -> None:
        self.version += 1
        if cluster is not None:
            self.cluster = cluster
        if states is not None:
            self.states = dict(states)
        self.world.log("api", what=what, version=self.version)
        for w in self.watchers:
            w.notify(self.version, self.cluster, dict(self.states))
