"""``RealCluster``: a real run's cluster — topology, node cgroups, the desired-state
store, and one node agent per node.

The harness does not program maps: it builds the Mininet topology from the
model, creates each node's cgroup2 directory (where that node's pod
processes run), starts one :class:`~datapath.agent.NodeAgent` per node
(the agent loads, attaches and reconciles its node's programs and maps),
and publishes desired state to the :class:`~datapath.agent.Store`; the
agents react on their own.  :meth:`RealCluster.program` publishes a cluster
state and waits until every agent reconciled it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from twin.model.findings import TwinError
from twin.model.objects import Cluster

__all__ = ["RealCluster"]


@dataclass
class _Programmed:
    seconds: dict = field(default_factory=dict)  # node -> seconds its agent took to reconcile
    changes: dict = field(default_factory=dict)  # node -> {"added":..,"updated":..,"deleted":..}
    version: int = 0


class RealCluster:
    """Topology + per node an agent owning a tc datapath on its lxc devices and
    (with socket LB) a socket LB on the node's own cgroup2 directory."""

    def __init__(self, cluster: Cluster, socket_lb: bool | None = None):
        self.cluster = cluster
        self.socket_lb = cluster.values.socket_lb if socket_lb is None else socket_lb
        self.topo = None
        self.store = None
        self.agents: dict = {}

    # -- what other code reads ---------------------------------------------------------

    @property
    def datapaths(self) -> dict:
        """node -> its agent's NodeDatapath."""
        return {n: a.datapath for n, a in self.agents.items() if a.datapath is not None}

    @property
    def socklbs(self) -> dict:
        """node -> its agent's NodeSocketLB (socket LB only)."""
        return {n: a.socklb for n, a in self.agents.items() if a.socklb is not None}

    @property
    def states(self) -> dict[str, str]:
        """The endpoint states last published (pod key -> ready | not-ready | terminating)."""
        current = self.store.current() if self.store is not None else None
        return dict(current.endpoint_states) if current is not None else {}

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "RealCluster":
        from datapath.agent import NodeAgent, NodeHost, Store, TableCache
        from harness.topology import RealTopology
        try:
            self.topo = RealTopology(self.cluster).__enter__()
            cgroups = {}
            if self.socket_lb:  # recorded in the run's state file; the topology removes them at close
                for node in self.cluster.nodes:
                    cgroups[node.name] = self.topo.make_node_cgroup(node.name)
            self.store = Store()
            tables = TableCache()
            topo = self.topo
            for node in self.cluster.nodes:
                host = NodeHost(node.name, os.fspath(topo.node_netns(node.name)), topo.lxc_of,
                                cgroups.get(node.name), lambda key: os.fspath(topo.netns_path(key)))
                agent = NodeAgent(host, self.store, socket_lb=self.socket_lb, tables=tables)
                self.agents[node.name] = agent
                agent.start()
            self.program(self.cluster)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agents (each detaches and frees its programs and maps), then the
        topology (processes, namespaces, node cgroups).  Ctrl-C and SIGTERM are held
        back until this finishes; what could not be removed is raised as
        :class:`~harness.errors.TeardownIncomplete`, which ``twin cleanup`` removes."""
        from harness.cleanup import signals_deferred
        with signals_deferred("teardown"):
            self._close()

    def _close(self) -> None:
        from harness.errors import TeardownIncomplete
        errors = []
        if self.store is not None:
            self.store.close()
        for name, agent in list(self.agents.items()):
            try:
                agent.close()
            except Exception as exc:  # keep tearing down the rest
                errors.append(f"{name}: {exc}")
        self.agents.clear()
        if self.topo is not None:
            self.topo.close()
            self.topo = None
        if errors:
            raise TeardownIncomplete("teardown of the datapath failed on " + "; ".join(errors), errors)

    # -- desired state ----------------------------------------------------------------------

    def program(self, cluster: Cluster) -> _Programmed:
        """Publish ``cluster`` and wait until every node's agent reconciled it."""
        self.cluster = cluster
        version = self.store.publish(cluster)
        reports = self.wait(version)
        return _Programmed({n: r.seconds for n, r in reports.items()},
                           {n: r.changes for n, r in reports.items()}, version)

    def set_endpoint_state(self, pod: str, state: str) -> dict[str, float]:
        """Publish a pod's readiness; returns, per node with a socket LB, the seconds
        its agent took to update the LB maps."""
        version = self.store.set_endpoint_state(pod, state)
        return {n: r.seconds for n, r in self.wait(version).items() if n in self.socklbs}

    def wait(self, version: int, timeout: float = 60.0) -> dict:
        """node -> the report of the reconcile that reached ``version``; a failed
        reconcile on any node raises TwinError naming the nodes and the error."""
        deadline = time.monotonic() + timeout  # one deadline for all nodes, not one each
        reports = {n: a.wait_for(version, max(0.0, deadline - time.monotonic())) for n, a in self.agents.items()}
        failed: dict[str, list[str]] = {}
        for n, r in reports.items():
            if not r.ok:
                failed.setdefault(r.error, []).append(n)
        if failed:
            raise TwinError("; ".join(f"agent on {', '.join(nodes)}: {err}" for err, nodes in failed.items()))
        return reports

    # -- flow events --------------------------------------------------------------------------

    def drain_events(self) -> None:
        for dp in self.datapaths.values():
            dp.read_events(0)

    def events(self, wait_ms: int = 100) -> list[tuple[str, object]]:
        out = []
        for name, dp in self.datapaths.items():
            out += [(name, e) for e in dp.read_events(wait_ms)]
        return out
