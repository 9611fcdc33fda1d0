"""Desired state and how an agent watches it.

The agent consumes a stream of :class:`DesiredState` snapshots, each with a
version and what changed since the previous one.  :class:`WatchSource` is
the interface an agent watches; :class:`Store` is the in-process source
(versioned, with change notifications) the harness publishes to.  A
Kubernetes-shaped API server (issue 7) is another ``WatchSource``: the
agent does not care where versions come from, only that they increase and
that each says what changed.

Change kinds (``DesiredState.changed``):

* ``cluster``          the cluster objects (pods, services, policies, values)
* ``endpoint-states``  readiness of pods (``DesiredState.pods`` names them)
"""
from __future__ import annotations

import dataclasses
import threading
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Protocol

from twin.model.objects import Cluster

__all__ = ["CLUSTER", "ENDPOINT_STATES", "ALL_CHANGES", "DesiredState", "Watch", "WatchSource", "Store",
           "services_changed"]

CLUSTER = "cluster"
ENDPOINT_STATES = "endpoint-states"
ALL_CHANGES = frozenset({CLUSTER, ENDPOINT_STATES})
ENDPOINT_STATE_VALUES = ("ready", "not-ready", "terminating")


@dataclass(frozen=True)
class DesiredState:
    """One version of what every node should implement."""

    version: int
    cluster: Cluster
    endpoint_states: Mapping[str, str] = field(default_factory=dict)  # pod key -> ready|not-ready|terminating
    changed: frozenset[str] = ALL_CHANGES  # kinds changed since the previous version
    pods: frozenset[str] = frozenset()  # with ENDPOINT_STATES: the pods whose state changed
    #: with CLUSTER: keys of the services added, changed or removed when nothing but
    #: services changed; None when other objects changed too (or it is not known)
    services: frozenset[str] | None = None

    def merged_after(self, earlier: "DesiredState") -> "DesiredState":
        """This snapshot, with the changes of ``earlier`` (an unprocessed older one) folded in."""
        services = None if self.services is None or earlier.services is None else self.services | earlier.services
        return DesiredState(self.version, self.cluster, self.endpoint_states,
                            self.changed | earlier.changed, self.pods | earlier.pods, services)


class Watch(Protocol):
    """A cursor on a :class:`WatchSource`."""

    def next(self, timeout: float | None = None) -> DesiredState | None:
        """The newest snapshot after the last one returned, with every change
        since folded in; ``None`` on timeout or when the watch is closed."""
        ...

    def close(self) -> None: ...


class WatchSource(Protocol):
    """Where an agent reads desired state from."""

    def watch(self) -> Watch:
        """A watch that first returns the current snapshot (if any), then each change."""
        ...


class Store:
    """In-process desired-state store: versioned snapshots and change notifications.

    ``publish(cluster)`` and ``set_endpoint_state(pod, state)`` each make a
    new version; watchers wake up and get the newest snapshot with the
    kinds of change they have not seen (a slow watcher that fell behind more
    than ``history`` versions gets everything marked changed)."""

    def __init__(self, history: int = 1024) -> None:
        self._cond = threading.Condition()
        self._log: deque[DesiredState] = deque(maxlen=history)
        self._states: dict[str, str] = {}
        self._closed = False

    @property
    def version(self) -> int:
        with self._cond:
            return self._log[-1].version if self._log else 0

    def current(self) -> DesiredState | None:
        with self._cond:
            return self._log[-1] if self._log else None

    def publish(self, cluster: Cluster) -> int:
        """A new cluster state (objects applied or deleted); returns its version."""
        with self._cond:
            before = self._log[-1].cluster if self._log else None
            return self._append(cluster, frozenset({CLUSTER}), frozenset(), services_changed(before, cluster))

    def set_endpoint_state(self, pod: str, state: str) -> int:
        """A pod's readiness changed (the kubelet's status update); returns the version."""
        if state not in ENDPOINT_STATE_VALUES:
            raise ValueError(f"endpoint state of {pod} must be one of {', '.join(ENDPOINT_STATE_VALUES)}, not {state!r}")
        with self._cond:
            if not self._log:
                raise ValueError(f"endpoint state of {pod} published before any cluster state")
            self._states[pod] = state
            return self._append(self._log[-1].cluster, frozenset({ENDPOINT_STATES}), frozenset({pod}), frozenset())

    def _append(self, cluster: Cluster, changed: frozenset[str], pods: frozenset[str],
                services: frozenset[str] | None) -> int:
        with self._cond:
            version = (self._log[-1].version if self._log else 0) + 1
            self._log.append(DesiredState(version, cluster, MappingProxyType(dict(self._states)), changed, pods,
                                          services))
            self._cond.notify_all()
            return version

    def watch(self) -> "StoreWatch":
        return StoreWatch(self)

    def close(self) -> None:
        """Wake every watcher; their ``next`` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def services_changed(before: Cluster | None, after: Cluster) -> frozenset[str] | None:
    """Keys of the services that differ between two cluster states when nothing
    else differs (what per-object watch events would say); None otherwise."""
    if before is None:
        return None
    for f in dataclasses.fields(Cluster):
        if f.name in ("services", "findings"):
            continue
        a, b = getattr(before, f.name), getattr(after, f.name)
        if a is not b and a != b:
            return None
    old = {s.key: s for s in before.services}
    new = {s.key: s for s in after.services}
    return frozenset(k for k in old.keys() | new.keys() if old.get(k) is not new.get(k) and old.get(k) != new.get(k))


class StoreWatch:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen = 0
        self._closed = False

    def next(self, timeout: float | None = None) -> DesiredState | None:
        s = self._store
        with s._cond:
            if not s._cond.wait_for(lambda: self._closed or s._closed or (s._log and s._log[-1].version > self._seen),
                                    timeout):
                return None
            if self._closed or s._closed:
                return None
            newer = [d for d in s._log if d.version > self._seen]
            out = newer[-1]
            if self._seen == 0 or newer[0].version != self._seen + 1:
                out = DesiredState(out.version, out.cluster, out.endpoint_states, ALL_CHANGES, out.pods, None)
            else:
                for d in reversed(newer[:-1]):
                    out = out.merged_after(d)
            self._seen = out.version
            return out

    def close(self) -> None:
        with self._store._cond:
            self._closed = True
            self._store._cond.notify_all()
