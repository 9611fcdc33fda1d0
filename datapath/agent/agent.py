"""``NodeAgent``: the per-node control loop of the real side.

    agent = NodeAgent(NodeHost("k8s-w1", netns, lxc_of, cgroup), store, socket_lb=True)
    agent.start()                 # load + attach its programs, start watching
    store.publish(cluster)        # ... the agent reconciles on its own
    report = agent.wait_for(store.version)
    agent.close()                 # detach and free everything it created

With ``l2=L2Config(api_url, params)`` the agent also takes part in L2
announcements: once a cluster state enables them it starts the node's elector
process (:mod:`datapath.agent.l2announcer`) in the node's network namespace,
sends it the Leases the node is a candidate for on every reconcile, reads its
events in a thread, and on every acquisition or loss reprograms the host (ARP
responder entries for the held leases, gratuitous ARP for the new ones).
:meth:`NodeAgent.kill_agent` and :meth:`NodeAgent.inject_responder_fault` are
the agent-kill and responder faults; :meth:`NodeAgent.l2_status` says what
the node holds and since when.

With ``bandwidth=True`` the agent enforces its pods' egress limits (Cilium's
Bandwidth Manager): the host program goes on the node's uplink (with or
without L2) and a :class:`~datapath.agent.reconcilers.BandwidthReconciler`
programs ``twin.semantics.bandwidth.node_limits`` as per-pod classes
(:mod:`datapath.bandwidth`); :meth:`NodeAgent.bandwidth_status` reads them
back from the kernel.

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

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from datapath.agent.reconcilers import (
    BandwidthReconciler, EndpointsReconciler, HostReconciler, IpcacheReconciler, NodeHost, PolicyReconciler, Reconciler,
    ServicesReconciler,
)
from datapath.agent.store import DesiredState, Watch, WatchSource
from datapath.agent.tables import ClusterTables, TableCache
from datapath.attach import netns_path
from datapath.errors import DatapathError
from datapath.node import NodeDatapath
from datapath.reconcile import ReconcileResult
from datapath.socklb import NodeSocketLB
from twin.model.objects import Cluster
from twin.semantics.election import ElectionParams

__all__ = ["AgentReport", "AgentError", "NodeAgent", "L2Config", "L2_LEASES"]

RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
REPORTS_KEPT = 1000
#: the change kind of a report made when the node's held leases changed (not a desired-state change)
L2_LEASES = "l2-leases"
ELECTOR_STOP_GRACE_S = 5.0
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class L2Config:
    """What a node agent needs for L2 announcements (absent: the agent does none).

    ``api_url``: the Lease API as seen from the node's namespace.  ``params``:
    the election's (Cilium's effective lease timings and ``k8sClientRateLimit``;
    the elector process is started once, with these, the first time a cluster
    state enables L2 announcements).  ``spawn(argv, **popen_kwargs) -> Popen`` starts ``argv`` in the
    node's network namespace and records its pid for ``twin cleanup`` (the
    harness passes its topology's ``popen``); None = ``nsenter --net=<netns>``
    from this process (pid not recorded anywhere: tests).  ``on_event(node,
    event)`` receives every elector event and the agent's own L2 events."""

    api_url: str
    params: ElectionParams
    namespace: str = "kube-system"
    spawn: Callable[..., subprocess.Popen] | None = None
    on_event: Callable[[str, dict], None] | None = None


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
                 tables: TableCache | None = None, extra_cflags: Sequence[str] = (),
                 l2: L2Config | None = None, on_l2_event: Callable[[str, dict], None] | None = None,
                 bandwidth: bool = False) -> None:
        """``bandwidth``: enforce pods' ``kubernetes.io/egress-bandwidth`` on the
        node's uplink (Cilium's Bandwidth Manager; :mod:`datapath.bandwidth`)."""
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
        # -- L2 announcements (only with ``l2``) --
        self.l2 = l2
        self.on_l2_event = on_l2_event or (l2.on_event if l2 is not None else None)
        self._dp_lock = threading.RLock()  # one writer at a time on the node's datapath (agent thread, elector reader)
        self._l2_lock = threading.Lock()  # the held/wanted bookkeeping below
        self._elector: subprocess.Popen | None = None
        self._elector_threads: list[threading.Thread] = []
        self._elector_stderr: deque[str] = deque(maxlen=40)
        self._wanted: tuple[str, ...] | None = None  # the lease set last sent to the elector
        self._held: dict[str, float] = {}  # lease -> time.monotonic() it was acquired
        self._unprogrammed: set[str] = set()  # held leases acquired after inject_responder_fault()
        self._responder_fault = False
        self._programmed: frozenset[str] = frozenset()  # leases whose responder entries were last programmed
        self._l2_tables: ClusterTables | None = None
        self.host_reconciler: HostReconciler | None = None
        self.bandwidth = bandwidth
        self.bandwidth_reconciler: BandwidthReconciler | None = None
        self._killed: float | None = None  # time.monotonic() of kill_agent()
        self._closing = False
        self.l2_errors: list[str] = []

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
            if self.l2 is not None or self.bandwidth:
                # the host program on the LAN interface(s): ARP responder, north-south LB, pod egress limits
                self.host_reconciler = HostReconciler(self.host, self.datapath, garp=self._garp)
                self.reconcilers.append(self.host_reconciler)
            if self.bandwidth:  # after the host reconciler: it attaches the host program to the uplink
                self.bandwidth_reconciler = BandwidthReconciler(self.host, self.datapath)
                self.reconcilers.append(self.bandwidth_reconciler)
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
        """Stop watching; stop the elector process (SIGTERM: it releases its leases;
        SIGKILL after a grace period; reaped); then detach and free every kernel
        object this agent created."""
        self._closing = True  # from now on no elector is started and held leases reprogram nothing
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        try:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=30)
                if self._thread.is_alive():  # still inside a reconcile: freeing its maps now would pull them from under it
                    raise DatapathError(f"agent {self.name}: still reconciling 30 s after stop; its programs and "
                                        "maps are left in place (`twin cleanup` removes them once this process exits)")
        finally:
            elector_error = self._stop_elector()
        self._thread = None
        errors: list[str] = [elector_error] if elector_error else []
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
            with self._dp_lock:
                tables = self.tables.tables(desired.cluster)
                for rec in self.reconcilers:
                    if rec.concerns & desired.changed:
                        current = rec.name
                        results[rec.name] = rec.reconcile(desired, tables)
                if self.l2 is not None and self._killed is None:
                    current = "l2"
                    results["l2"] = self._l2_reconcile(desired.cluster, tables)
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
                if self._killed is not None:
                    raise AgentError(f"agent {self.name}: killed (agent-kill fault) at {self._killed:.3f}; "
                                     f"it reconciles nothing any more (last reconciled: {self._version})")
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    raise AgentError(f"agent {self.name}: version {version} not reconciled within {timeout:g} s "
                                     f"(last reconciled: {self._version})")
                self._cond.wait(left)

    # -- L2 announcements ----------------------------------------------------------------

    def _l2_reconcile(self, cluster: Cluster, tables: ClusterTables) -> ReconcileResult:
        """Tell the elector which leases this node is a candidate for (starting it the
        first time L2 announcements are enabled), then program the host for the
        leases held now."""
        self._l2_tables = tables
        wanted = tuple(sorted({a.lease for a in tables.view.announcements.values()
                               if a.announced and self.name in a.candidate_nodes}))
        if cluster.values.l2.enabled and self._elector is None:
            self._start_elector()
        if self._elector is not None and wanted != self._wanted:
            self._send_leases(wanted)
        return self._program_l2()

    def _elector_argv(self, params: ElectionParams) -> list[str]:
        assert self.l2 is not None
        return [sys.executable, "-m", "datapath.agent.l2announcer", "--node", self.name, "--api", self.l2.api_url,
                "--lease-duration", repr(params.lease_duration_s), "--renew-deadline", repr(params.renew_deadline_s),
                "--retry-period", repr(params.retry_period_s), "--qps", repr(params.qps),
                "--burst", str(params.burst), "--namespace", self.l2.namespace]

    def _start_elector(self) -> None:
        assert self.l2 is not None
        if self._closing or self._killed is not None:
            raise DatapathError(f"agent {self.name}: not starting an elector: the agent is "
                                f"{'closing' if self._closing else 'killed'}")
        argv = self._elector_argv(self.l2.params)
        pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        if self.l2.spawn is not None:
            proc = self.l2.spawn(argv, **pipes)
        else:
            env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH", "")) if p)
            # nsenter takes a path; NodeHost.netns may be a name in /run/netns (as NodeDatapath accepts)
            proc = subprocess.Popen(["nsenter", f"--net={netns_path(self.host.netns)}", *argv], cwd=_REPO_ROOT, env=env,
                                    start_new_session=True, **pipes)  # type: ignore[call-overload]
        self._elector = proc
        self._elector_threads = [
            threading.Thread(target=self._read_elector, args=(proc,), name=f"elector-out-{self.name}", daemon=True),
            threading.Thread(target=self._read_elector_stderr, args=(proc,), name=f"elector-err-{self.name}",
                             daemon=True)]
        for t in self._elector_threads:
            t.start()
        self._emit({"t": time.monotonic(), "event": "elector-started", "lease": None,
                    "detail": {"pid": proc.pid, "argv": argv}})

    def _elector_gone(self) -> str:
        proc = self._elector
        rc = proc.poll() if proc is not None else None
        tail = " | ".join(list(self._elector_stderr)[-5:])
        return f"the elector process (pid {proc.pid if proc else '?'}) is gone (exit code {rc}); stderr: {tail or '-'}"

    def _send_leases(self, wanted: tuple[str, ...]) -> None:
        proc = self._elector
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"leases": list(wanted)}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise DatapathError(f"agent {self.name}: cannot send the lease set: {self._elector_gone()}") from exc
        with self._l2_lock:
            self._wanted = wanted

    def _read_elector_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._elector_stderr.append(line.rstrip())

    def _read_elector(self, proc: subprocess.Popen) -> None:
        """The elector's events: held leases change, the host is reprogrammed."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
                kind, lease = ev["event"], ev.get("lease")
            except (ValueError, KeyError, TypeError):
                self._l2_error(f"elector wrote an unreadable line: {line.strip()[:200]!r}")
                continue
            changed = False
            with self._l2_lock:
                if kind == "acquired":
                    self._held[lease] = float(ev["t"])
                    if self._responder_fault:
                        self._unprogrammed.add(lease)
                    changed = True
                elif kind == "lost":
                    changed = self._held.pop(lease, None) is not None
                    self._unprogrammed.discard(lease)
            self._emit(ev)
            if changed and self._killed is None and not self._closing:
                self._reprogram(f"{kind} {lease}")
        if self._killed is None and not self._closing:
            rc = proc.wait()
            self._l2_error(f"elector process exited on its own: {self._elector_gone()} (exit code {rc})")

    def _reprogram(self, why: str) -> None:
        """Program the host after held leases changed; the outcome is an AgentReport."""
        t0 = time.monotonic()
        error = None
        results: dict[str, ReconcileResult] = {}
        try:
            with self._dp_lock:
                if self._killed is not None or self._closing:
                    return
                results["l2"] = self._program_l2()
        except Exception as exc:
            error = f"l2 ({why}): {type(exc).__name__}: {exc}"
            self._l2_error(error)
        with self._cond:
            report = AgentReport(self.name, self._version, frozenset({L2_LEASES}), t0,
                                 round(time.monotonic() - t0, 6), results, error)
            self.reports.append(report)
            self._cond.notify_all()

    def _program_l2(self) -> ReconcileResult:
        """Program the ARP responder entries for the leases held (minus those acquired
        after a responder fault: cilium#48626) through the host reconciler, which
        also load-balances the north-south frontends and sends one gratuitous ARP per
        newly added entry (:meth:`_garp`)."""
        with self._dp_lock:
            if self._l2_tables is None or self.datapath is None or self.host_reconciler is None:
                return ReconcileResult()
            with self._l2_lock:
                wanted = set(self._wanted or ())
                held = {lease for lease in self._held if lease in wanted and lease not in self._unprogrammed}
            result = self.host_reconciler.set_leases(held, responder_fault=False)
            if result is None:  # no desired state reconciled yet: the leases are remembered, nothing programmed
                return ReconcileResult()
            self._programmed = frozenset(held)
            self._emit({"t": time.monotonic(), "event": "programmed", "lease": None,
                        "detail": {"leases": sorted(held),
                                   "responders_added": [[str(i), n] for i, n in result.responders_added]}})
            return result.total

    def _garp(self, ip, ifname: str) -> None:
        """One gratuitous ARP for a responder entry just added; a failure (e.g. the
        interface is down) is logged and the entry stays, as Cilium does."""
        from datapath.garp import send_garp
        try:
            send_garp(self.host.netns, ifname, ip)
        except (DatapathError, OSError) as exc:
            self._emit({"t": time.monotonic(), "event": "garp-failed", "lease": None,
                        "detail": {"ip": str(ip), "ifname": ifname, "error": str(exc)}})
            return
        self._emit({"t": time.monotonic(), "event": "garp", "lease": None,
                    "detail": {"ip": str(ip), "ifname": ifname}})

    def _emit(self, ev: dict) -> None:
        if self.on_l2_event is None:
            return
        ev = dict(ev, node=self.name)
        try:
            self.on_l2_event(self.name, ev)
        except Exception as exc:  # the harness's callback failed: say so, keep the node's L2 running
            self.l2_errors.append(f"on_l2_event callback failed on {ev.get('event')}: {type(exc).__name__}: {exc}")

    def _l2_error(self, text: str) -> None:
        self.l2_errors.append(text)
        self._emit({"t": time.monotonic(), "event": "error", "lease": None, "detail": {"error": text}})

    def _stop_elector(self) -> str | None:
        """SIGTERM (holders release), wait, SIGKILL; reap; join the readers."""
        proc, self._elector = self._elector, None
        if proc is None:
            return None
        error = None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(ELECTOR_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
                error = f"elector process {proc.pid} ignored SIGTERM for {ELECTOR_STOP_GRACE_S:g}s: killed"
        for t in self._elector_threads:
            t.join(5)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f:
                    f.close()
            except OSError:  # stdin to a dead process: its unflushed data has nowhere to go
                pass
        return error

    # -- L2 faults and status ----------------------------------------------------------------

    def kill_agent(self) -> float:
        """The "agent-kill" fault: SIGKILL the elector process and stop this agent's
        loop without touching its maps or programs (Cilium's datapath keeps running
        when its agent dies; its leases are no longer renewed).  Returns the
        ``time.monotonic()`` of the kill.  ``close()`` still frees everything."""
        proc = self._elector
        t = self._killed = time.monotonic()  # set first: the reader must not take the EOF for a crash
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(5)
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._cond:
            self._cond.notify_all()
        self._emit({"t": t, "event": "agent-killed", "lease": None,
                    "detail": {"elector_pid": proc.pid if proc is not None else None}})
        return t

    def inject_responder_fault(self) -> float:
        """From now on the leases this node acquires are not programmed into its ARP
        responder (cilium#48626); leases held already stay programmed.  Returns the
        ``time.monotonic()`` of the injection."""
        t = time.monotonic()
        with self._l2_lock:
            self._responder_fault = True
        self._emit({"t": t, "event": "responder-fault", "lease": None, "detail": {}})
        return t

    def l2_status(self) -> dict:
        """``{"held": {lease: since}, "elector_alive", "responder_fault", "programmed",
        "wanted", "killed", "errors"}`` (``since``: time.monotonic() of the acquisition)."""
        proc = self._elector
        with self._l2_lock:
            return {"held": dict(self._held), "elector_alive": proc is not None and proc.poll() is None,
                    "responder_fault": self._responder_fault, "programmed": sorted(self._programmed),
                    "wanted": list(self._wanted or ()), "killed": self._killed, "errors": list(self.l2_errors)}

    @property
    def bandwidth_mechanism(self):
        """The limiter this agent's datapath runs (:class:`datapath.bandwidth.Mechanism`), None
        without ``bandwidth`` or before :meth:`start`."""
        return self.datapath.bandwidth_mechanism if self.bandwidth and self.datapath is not None else None

    def bandwidth_status(self) -> dict:
        """``{"mechanism", "reason", "fq_available", "device", "limits": {pod_key:
        {"ip", "bytes_per_s", "rate_bps", "class"}}}``, the limits read from the
        kernel (``bw_pods`` entries; ``rate_bps`` is the HTB class's rate on the
        device, or bytes_per_s * 8 under EDT; ``class`` None under EDT).  Empty
        limits and ``device`` None before the first reconcile or without ``bandwidth``."""
        dp, rec = self.datapath, self.bandwidth_reconciler
        out: dict = {"mechanism": None, "reason": None, "fq_available": None, "device": None, "limits": {}}
        if dp is None or not self.bandwidth:
            return out
        with self._dp_lock:
            mech = dp.bandwidth_mechanism
            out.update(mechanism=mech.name, reason=mech.reason, fq_available=mech.fq_available)
            devices = dp.bandwidth_devices
            out["device"] = devices[0] if len(devices) == 1 else (devices or None)
            kernel = dp.bandwidth_limits()
            keys = {ip: key for key, ip in (rec.ips.items() if rec is not None else ())}
            for ip, pb in kernel.items():
                rates = set(pb.class_rate.values())
                rate = (rates.pop() * 8 if len(rates) == 1 else None) if pb.classid else pb.rate_bps
                out["limits"][keys.get(ip, str(ip))] = {"ip": str(ip), "bytes_per_s": pb.bytes_per_s,
                                                        "rate_bps": rate, "class": pb.class_name}
        return out

    @property
    def killed(self) -> float | None:
        """``time.monotonic()`` of :meth:`kill_agent`, or None.  A killed agent reconciles
        nothing: :meth:`wait_for` raises AgentError for it (a caller waiting for every
        node skips the killed ones)."""
        return self._killed

    @property
    def elector_pid(self) -> int | None:
        return self._elector.pid if self._elector is not None else None
