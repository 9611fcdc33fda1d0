"""A node's tables, computed from the desired state by the semantics.

Verdict and LB logic exist once, in :mod:`twin.semantics`; the agent only
asks it.  :class:`ClusterTables` holds what one cluster state implies
(identities, the policy table, which services select which pods) and the
LB table per set of endpoint states, each computed on first use.  Agents
in one process share a :class:`TableCache` so N in-process agents do the
pure work once per version, not N times (on real hosts each agent has its
own; the result is the same).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Iterable, Mapping

from twin.model.objects import Cluster
from twin.semantics.lb import lb_table
from twin.semantics.tables import LBService, LBTable, PolicyTable
from twin.semantics.view import ClusterView

__all__ = ["ClusterTables", "TableCache"]


class ClusterTables:
    """Tables derived from one cluster state (thread-safe, lazily computed)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._lock = threading.RLock()
        self._memo: dict[Any, Any] = {}

    def _get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    @property
    def view(self) -> ClusterView:
        return self._get("view", lambda: ClusterView(self.cluster))  # type: ignore[no-any-return]

    @property
    def policy_table(self) -> PolicyTable:
        return self._get("policy", lambda: self.view.engine.policy_table())  # type: ignore[no-any-return]

    def lb_table(self, states: Mapping[str, str]) -> LBTable:
        key = ("lb", tuple(sorted(states.items())))
        return self._get(key, lambda: lb_table(self.cluster, states, self.view.allocation))  # type: ignore[no-any-return]

    @property
    def services_of_pod(self) -> Mapping[str, frozenset[str]]:
        """pod key -> keys of the services that select it (whatever its readiness)."""
        def compute() -> dict[str, frozenset[str]]:
            out: dict[str, set[str]] = {}
            for fe in lb_table(self.cluster, {}, self.view.allocation).services:
                for b in fe.backends:
                    out.setdefault(b.pod, set()).add(fe.service)
            return {k: frozenset(v) for k, v in out.items()}
        return self._get("services_of_pod", compute)  # type: ignore[no-any-return]

    def lb_frontends(self, services: Iterable[str], states: Mapping[str, str]) -> dict[str, tuple[LBService, ...]]:
        """The frontends of just the named services (the semantics on a one-service cluster)."""
        out: dict[str, tuple[LBService, ...]] = {}
        for key in services:
            try:
                svc = self.cluster.service(key)
            except KeyError:
                out[key] = ()
                continue
            one = dataclasses.replace(self.cluster, services=(svc,))
            out[key] = lb_table(one, states, self.view.allocation).services
        return out


class TableCache:
    """The :class:`ClusterTables` of the newest cluster state seen (shared by agents)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: ClusterTables | None = None

    def tables(self, cluster: Cluster) -> ClusterTables:
        with self._lock:
            if self._current is None or self._current.cluster is not cluster:
                self._current = ClusterTables(cluster)
            return self._current
