"""``NodeAgent``: the per-node control loop of the real side.

    agent = NodeAgent(NodeHost("k8s-w1", netns, lxc_of, cgroup), store, socket_lb=True)
    agent.start()                 # load + attach its programs, start watching
    store.publish(cluster)        # ... the agent reconciles on its own
    report = agent.wait_for(store.version)
    agent.close()                 # detach and free everything it created

One agent per node owns that node's kernel objects: its
:class:`~datapath.node.NodeDatapath` (tc programs on its pods' lxc devices,
endpoints/ipcache/policy maps) and, with ``socket_lb``, its
:class:`~datapath.socklb.NodeSocketLB` (cgroup programs on the node's
cgroup, LB maps).  It watches a :class:`~datapath.agent.store.WatchSource`,
computes its tables from the semantics and runs the reconcilers the change
concerns; maps change in place, programs are never reloaded.

Each agent runs in its own thread, as a real agent is its own process: a
slow or failing node does not hold up the others or the publisher, and a
watch on an API server (issue 7) is a blocking stream that fits a thread.
Every reconcile (successful or not) produces an :class:`AgentReport`; a
failed one is retried with backoff until it succeeds or a newer version
supersedes it; errors are in the reports, never swallowed.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from datapath.agent.reconcilers import (
    EndpointsReconciler, IpcacheReconciler, NodeHost, PolicyReconciler, Reconciler, ServicesReconciler,
)
from datapath.agent.store import DesiredState, Watch, WatchSource
from datapath.agent.tables import TableCache
from datapath.errors import DatapathError
from datapath.node import NodeDatapath
from datapath.reconcile import ReconcileResult
from datapath.socklb import NodeSocketLB

__all__ = ["AgentReport", "AgentError", "NodeAgent"]

RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
REPORTS_KEPT = 1000


class AgentError(DatapathError):
    """An agent could not reach a version (its report says why)."""


@dataclass(frozen=True)
class AgentReport:
    """One reconcile of one node: what changed, how long it took, what failed."""

    node: str
    version: int
    changed: frozenset[str]  # the kinds of desired-state change handled
    started: float  # time.monotonic()
    seconds: float
    results: Mapping[str, ReconcileResult] = field(default_factory=dict)  # per reconciler that ran
    error: str | None = None  # "<reconciler>: <message>" when it failed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changes(self) -> dict[str, int]:
        """Map entries added, updated and deleted, summed over the reconcilers."""
        return {k: sum(getattr(r, k) for r in self.results.values()) for k in ("added", "updated", "deleted")}


class NodeAgent:
    """The agent of one node (see the module docstring)."""

    def __init__(self, host: NodeHost, source: WatchSource, *, socket_lb: bool = False,
                 tables: TableCache | None = None, extra_cflags: Sequence[str] = ()) -> None:
        self.host = host
        self.source = source
        self.socket_lb = socket_lb
        self.tables = tables or TableCache()
        self._extra_cflags = tuple(extra_cflags)
        self.datapath: NodeDatapath | None = None
        self.socklb: NodeSocketLB | None = None
        self.reconcilers: list[Reconciler] = []
        self.reports: deque[AgentReport] = deque(maxlen=REPORTS_KEPT)  # newest last
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._version = 0  # newest version a reconcile finished (successfully or not)

    @property
    def name(self) -> str:
        return self.host.name

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "NodeAgent":
        """Load this node's programs, attach what needs no desired state, start watching.

        Runs in the caller's thread so that a compile or attach failure is
        raised here; on failure everything created so far is removed."""
        if self._thread is not None:
            return self
        try:
            self.datapath = NodeDatapath(self.host.netns, extra_cflags=self._extra_cflags).open()
            self.reconcilers = [EndpointsReconciler(self.host, self.datapath),
                                IpcacheReconciler(self.host, self.datapath),
                                PolicyReconciler(self.host, self.datapath)]
            if self.socket_lb:
                if self.host.cgroup is None:
                    raise DatapathError(f"agent {self.name}: socket LB needs the node's cgroup directory")
                self.socklb = NodeSocketLB(extra_cflags=self._extra_cflags).open()
                self.socklb.attach_cgroup(self.host.cgroup)
                self.reconcilers.append(ServicesReconciler(self.host, self.socklb))
            self.start_watching()
        except BaseException:
            self.close()
            raise
        return self

    def start_watching(self) -> None:
        """Start the watch loop over :attr:`reconcilers` as they are (``start`` calls it
        after loading the node's programs; a test may call it with its own reconcilers)."""
        if self._thread is None:
            self._watch = self.source.watch()
            self._thread = threading.Thread(target=self._run, name=f"agent-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop watching, then detach and free every kernel object this agent created."""
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
            if self._thread.is_alive():  # still inside a reconcile: freeing its maps now would pull them from under it
                raise DatapathError(f"agent {self.name}: still reconciling 30 s after stop; its programs and maps "
                                    "are left in place (`twin cleanup` removes them once this process exits)")
        self._thread = None
        errors: list[str] = []
        for what, obj in (("socket LB", self.socklb), ("datapath", self.datapath)):
            if obj is None:
                continue
            try:
                obj.close()
            except Exception as exc:  # keep tearing down the rest
                errors.append(f"{what}: {exc}")
        self.socklb = self.datapath = None
        with self._cond:
            self._cond.notify_all()
        if errors:
            raise DatapathError(f"agent {self.name}: teardown failed: " + "; ".join(errors))

    def __enter__(self) -> "NodeAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        assert self._watch is not None
        pending: DesiredState | None = None
        attempt = 0
        while not self._stop.is_set():
            wait = None if pending is None else RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            newer = self._watch.next(timeout=wait if wait is not None else 0.5)
            if self._stop.is_set():
                return
            if newer is not None:
                pending = newer.merged_after(pending) if pending is not None else newer
                attempt = 0
            elif pending is None or wait is None:
                continue
            report = self.reconcile(pending)
            if report.ok:
                pending = None
            else:
                attempt += 1

    def reconcile(self, desired: DesiredState) -> AgentReport:
        """Run the reconcilers ``desired.changed`` concerns, in order; report.

        Stops at the first failing reconciler (later ones may depend on it)."""
        t0 = time.monotonic()
        results: dict[str, ReconcileResult] = {}
        error = None
        current = "tables"
        try:
            tables = self.tables.tables(desired.cluster)
            for rec in self.reconcilers:
                if rec.concerns & desired.changed:
                    current = rec.name
                    results[rec.name] = rec.reconcile(desired, tables)
        except Exception as exc:
            if isinstance(exc, DatapathError):
                error = f"{current}: {exc}"
            else:  # a bug, not a kernel refusal: keep where it happened
                error = f"{current}: {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=-4))
        report = AgentReport(self.name, desired.version, desired.changed, t0,
                             round(time.monotonic() - t0, 6), results, error)
        with self._cond:
            self.reports.append(report)
            self._version = max(self._version, desired.version)
            self._cond.notify_all()
        return report

    # -- waiting -------------------------------------------------------------------

    def wait_for(self, version: int, timeout: float = 60.0) -> AgentReport:
        """The first report at or after ``version`` (it may carry an error)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.reports:
                    if r.version >= version:
                        return r
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    raise AgentError(f"agent {self.name}: version {version} not reconciled within {timeout:g} s "
                                     f"(last reconciled: {self._version})")
                self._cond.wait(left)
