"""``RealCluster``: a real run's cluster — topology, node cgroups, the desired-state
store, and one node agent per node.

The harness does not program maps: it builds the Mininet topology from the
model, creates each node's cgroup2 directory (where that node's pod
processes run), starts one :class:`~datapath.agent.NodeAgent` per node
(the agent loads, attaches and reconciles its node's programs and maps),
and publishes desired state to the :class:`~datapath.agent.Store`; the
agents react on their own.  :meth:`RealCluster.program` publishes a cluster
state and waits until every agent reconciled it.

With L2 announcements (``l2=L2Options(...)``, when
:func:`twin.model.run.needs_l2` says a run needs them) the topology is built
with the API server's host on the LAN (and a backup path to it when asked),
the control plane (etcd + the Lease API, :class:`harness.apiserver.control.ControlPlane`)
is started, every agent gets an ``L2Config`` (the API URL and the effective
election timings, qps/burst from ``k8sClientRateLimit``), and the external
host's ARP watch runs.  :class:`L2Monitor` is the real side's consistency
check (lease holders vs programmed responders vs interface state).
Teardown order: agents, control plane, topology — also on Ctrl-C.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field

from twin.model.findings import TwinError
from twin.model.objects import Cluster

__all__ = ["RealCluster", "L2Options", "L2Monitor", "L2Consistency"]

@dataclass(frozen=True)
class L2Options:
    """What a run with L2 announcements needs from the topology (``scenario.settings``)."""

    backup_path: bool = False
    external: object | None = None  # twin.model.scenario.ExternalHost


@dataclass
class _Programmed:
    seconds: dict = field(default_factory=dict)  # node -> seconds its agent took to reconcile
    changes: dict = field(default_factory=dict)  # node -> {"added":..,"updated":..,"deleted":..}
    version: int = 0


class RealCluster:
    """Topology + per node an agent owning a tc datapath on its lxc devices and
    (with socket LB) a socket LB on the node's own cgroup2 directory."""

    def __init__(self, cluster: Cluster, socket_lb: bool | None = None, l2: L2Options | None = None,
                 bandwidth: bool = False):
        self.cluster = cluster
        self.socket_lb = cluster.values.socket_lb if socket_lb is None else socket_lb
        self.l2 = l2
        #: the Bandwidth Manager's limiter on every node's native device (``needs_bandwidth``)
        self.bandwidth = bandwidth
        self.topo = None
        self.store = None
        self.agents: dict = {}
        self.control = None  # the ControlPlane (L2 runs)
        self.params = None  # ElectionParams (L2 runs): Cilium's effective timings and k8sClientRateLimit
        self._pools: set[str] = set()  # pool networks the external host routes on-link
        #: (monotonic time, node, event) from the agents' electors, in arrival order
        self.l2_events: list[tuple[float, str, object]] = []
        self._cp_dir: str | None = None

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
            if self.l2 is not None:  # the API server's host, backup path and external host's ARP settings
                from twin.semantics.l2 import election_params
                self.params = election_params(self.cluster.values)  # the one statement of the timings' rewrites
                self.topo = RealTopology(self.cluster, l2=True, backup_path=self.l2.backup_path,
                                         external=self.l2.external).__enter__()
                self.topo.start_arp_watch()  # before any agent can take a lease and send gratuitous ARP
                self._start_control_plane()
            else:
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
                agent = self._make_agent(NodeAgent, host, tables)
                self.agents[node.name] = agent
                agent.start()
            self.program(self.cluster)
        except BaseException:
            self.close()
            raise
        return self

    def _start_control_plane(self) -> None:
        """etcd + the Lease API on the LAN (:class:`harness.apiserver.control.ControlPlane`); its audit
        log and logs go to a temporary folder the topology records in the run's state file, so the
        topology's close (or ``twin cleanup`` after a crash) removes it."""
        from harness.apiserver.control import ControlPlane
        self._cp_dir = self.topo.make_run_dir(tempfile.gettempdir(), f"twin-{self.topo.run_id}-apiserver-")
        self.control = ControlPlane(self.topo, self._cp_dir).start()

    def _external_pools(self) -> None:
        """Pools of the current cluster the external host does not know yet (a later cluster
        state may bring new ones): routed on-link (it ARPs for their addresses) and, with
        ``garp: ignore``, in its gratuitous-ARP filter — as the topology does at build."""
        import ipaddress
        for pool in self.cluster.pools:
            for b in pool.blocks:
                nets = [b.cidr] if b.cidr is not None else \
                    list(ipaddress.summarize_address_range(b.start, b.stop)) if b.start and b.stop else []
                for net in nets:
                    if str(net) not in self._pools:
                        self.topo.external_add_pool(str(net))
                        self._pools.add(str(net))

    def _make_agent(self, NodeAgent, host, tables):
        """One node's agent; in L2 runs with its elector (API URL, election timings, rate limit);
        with the Bandwidth Manager's limiter when the run needs it."""
        if self.l2 is None:
            return NodeAgent(host, self.store, socket_lb=self.socket_lb, tables=tables, bandwidth=self.bandwidth)
        from datapath.agent import L2Config
        topo, node = self.topo, host.name

        def spawn(argv, **kw):  # the elector process in the node's netns, its pid in the run's state file
            return topo.popen(node, argv, **kw)
        return NodeAgent(host, self.store, socket_lb=self.socket_lb, tables=tables,
                         l2=L2Config(self.control.url, self.params, spawn=spawn), on_l2_event=self._on_l2_event,
                         bandwidth=self.bandwidth)

    def bandwidth_state(self) -> dict:
        """The Bandwidth Manager as this run has it (``Observations.bandwidth``): ``mechanism``
        (``htb`` | ``edt-fq`` from the agents' ``bandwidth_status()``; ``none`` without a
        limiter), ``reason``, and per node its device, whether ``sch_fq`` exists and the
        limits it programmed (``{pod: {ip, bytes_per_s, rate_bps, class}}``)."""
        if not self.bandwidth:
            return {"mechanism": "none", "reason": "the run does not need the Bandwidth Manager "
                    "(bandwidthManager.enabled is false, or no throughput/annotate step and no egress annotation)",
                    "nodes": {}}
        nodes: dict[str, dict] = {}
        for name, agent in sorted(self.agents.items()):
            try:
                nodes[name] = dict(agent.bandwidth_status())
            except Exception as exc:  # a killed agent, or one being torn down
                nodes[name] = {"mechanism": None, "error": f"{type(exc).__name__}: {exc}"}
        mechs = sorted({str(n.get("mechanism")) for n in nodes.values() if n.get("mechanism")})
        reasons = sorted({str(n.get("reason")) for n in nodes.values() if n.get("reason")})
        return {"mechanism": mechs[0] if len(mechs) == 1 else ("mixed: " + ", ".join(mechs) if mechs else "unknown"),
                "reason": "; ".join(reasons), "nodes": nodes}

    def node_mechanism(self, node: str) -> str:
        """The limiter ``node``'s agent runs (``htb`` | ``edt-fq``), ``none`` without one
        (the agent's probed mechanism: nothing is read from the kernel)."""
        mech = self.agents[node].bandwidth_mechanism if self.bandwidth and node in self.agents else None
        return mech.name if mech is not None else "none"

    def _on_l2_event(self, node: str, event) -> None:
        t = event.get("t") if isinstance(event, dict) else None
        self.l2_events.append((t if isinstance(t, (int, float)) else time.monotonic(), node, event))

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
        if self.control is not None:  # after the agents (their electors talk to it), before the topology
            try:
                self.control.close()
            except Exception as exc:
                errors.append(f"control plane: {exc}")
            self.control = None
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
        if self.l2 is not None:
            self._external_pools()
        return _Programmed({n: r.seconds for n, r in reports.items()},
                           {n: r.changes for n, r in reports.items()}, version)

    def set_endpoint_state(self, pod: str, state: str) -> dict[str, float]:
        """Publish a pod's readiness; returns, per node with a socket LB, the seconds
        its agent took to update the LB maps."""
        version = self.store.set_endpoint_state(pod, state)
        return {n: r.seconds for n, r in self.wait(version).items() if n in self.socklbs}

    def wait(self, version: int, timeout: float = 60.0) -> dict:
        """node -> the report of the reconcile that reached ``version``; a failed
        reconcile on any node raises TwinError naming the nodes and the error.  A killed
        agent (the ``agent-kill``/``node-crash`` faults) reconciles nothing any more, as a
        dead Cilium agent: it is not waited for (the twin freezes its view the same way)."""
        deadline = time.monotonic() + timeout  # one deadline for all nodes, not one each
        reports = {n: a.wait_for(version, max(0.0, deadline - time.monotonic())) for n, a in self.agents.items()
                   if a.killed is None}
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

    # -- L2: what the API server and the nodes say ---------------------------------------------

    def lease_writes(self) -> list[dict]:
        """The API server's audit lines of Lease writes, oldest first (a delete as a write
        that clears the holder)."""
        if self.control is None:
            return []
        return [e if e.get("verb") != "delete" else {**e, "holder": ""}
                for e in self.control.lease_log() if e.get("verb") in ("create", "update", "delete")]

    def lease_holders(self, now: float | None = None) -> dict[str, str]:
        """lease -> holder by the last write, for leases not expired at ``now`` (monotonic):
        a holder that stopped renewing keeps the lease for ``leaseDuration`` after its last
        write on the API server's record, then it is nobody's."""
        now = time.monotonic() if now is None else now
        last: dict[str, dict] = {}
        for e in self.lease_writes():
            last[e["lease"]] = e
        ld = self.params.lease_duration_s if self.params else 0.0
        return {lease: e["holder"] for lease, e in last.items() if e.get("holder") and now - e["t"] < ld}

    def l2_status(self) -> dict[str, dict]:
        """node -> its agent's L2 state (``held``: lease -> since, ``elector_alive``, ``responder_fault``)."""
        out = {}
        for name, agent in list(self.agents.items()):
            try:
                out[name] = agent.l2_status()
            except Exception as exc:  # an agent being torn down, or a dead elector: nothing held
                out[name] = {"held": {}, "elector_alive": False, "responder_fault": False, "error": str(exc)}
        return out

    def responders(self) -> dict[str, set[tuple[str, str]]]:
        """node -> the (IP, interface) pairs its ARP responder map holds (read from the kernel)."""
        return {n: {(str(ip), str(ifname)) for ip, ifname in dp.l2_responders()} for n, dp in self.datapaths.items()}

    def interfaces_up(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bool]]:
        """node -> interface -> administratively up and running (with carrier), read in the node's netns."""
        out: dict[str, dict[str, bool]] = {}
        for node, ifaces in wanted.items():
            out[node] = {i: interface_up(self.topo.node_netns(node), i) for i in ifaces}
        return out

    def holder_now(self, lease: str) -> str | None:
        """The node holding ``lease`` now: by the API server's record (not expired), else by the
        agents' own view (a node that believes it holds it)."""
        holder = self.lease_holders().get(lease)
        if holder:
            return holder
        for node, st in sorted(self.l2_status().items()):
            if lease in (st.get("held") or {}):
                return node
        return None


_SIOCGIFFLAGS = 0x8913
_IFF_UP, _IFF_RUNNING = 0x1, 0x40


def interface_up(netns: str, ifname: str) -> bool:
    """Whether ``ifname`` in ``netns`` is up and running (SIOCGIFFLAGS on a socket made in the netns);
    a missing interface is down."""
    from datapath.attach import entered_netns
    with entered_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack("16sH14s", ifname.encode()[:15], 0, b"\0" * 14))
    except OSError:
        return False
    finally:
        s.close()
    flags = struct.unpack("16sH14s", res)[1]
    return bool(flags & _IFF_UP) and bool(flags & _IFF_RUNNING)


class L2Consistency:
    """The L2 consistency check (pure): per lease, the holder by the API server, whether
    that node's agent believes it holds the lease, the responders it programmed and the
    state of its selected interfaces.  A problem is recorded once it has been seen
    without a break for ``grace_s`` (the agent programs its responder right after it
    wins; a window shorter than that is that step, not a missing responder), with
    ``since`` = when it was first seen.

    * ``responder-missing``: the API names the node, its agent holds the lease, and
      none of the lease's IPs is in the node's responder map (cilium#48626)
    * ``interface-down``: the API names the node, its agent holds the lease, and one
      of its selected interfaces is down (cilium#35507)"""

    def __init__(self, grace_s: float = 0.5):
        self.grace_s = grace_s
        self.pending: dict[tuple, float] = {}  # (problem, lease, node, iface) -> first seen
        self.found: dict[tuple, float] = {}

    def observe(self, now: float, holders: dict[str, str], status: dict[str, dict],
                responders: dict[str, set], ifup: dict[str, dict[str, bool]], leases: dict[str, dict]) -> None:
        """``leases``: lease -> {"ips": set of IP strings, "interfaces": node -> interfaces}."""
        seen = set()
        for lease, node in holders.items():
            info = leases.get(lease)
            st = status.get(node) or {}
            if info is None or not st.get("elector_alive", True) or lease not in (st.get("held") or {}):
                continue
            progd = {ip for ip, _ in responders.get(node, set())}
            if info["ips"] and not (progd & set(info["ips"])):
                seen.add(("responder-missing", lease, node, None))
            for iface in info["interfaces"].get(node, ()):
                if not ifup.get(node, {}).get(iface, True):
                    seen.add(("interface-down", lease, node, iface))
        for k in list(self.pending):
            if k not in seen:
                del self.pending[k]
        for k in seen:
            first = self.pending.setdefault(k, now)
            if now - first >= self.grace_s and k not in self.found:
                self.found[k] = first

    def checks(self, t0: float) -> list:
        from twin.model.observations import L2Check
        out = []
        for (problem, lease, node, iface), since in sorted(self.found.items(), key=lambda kv: kv[1]):
            detail = (f"{node} holds {lease} but its ARP responder has none of the lease's IPs"
                      if problem == "responder-missing" else
                      f"{node} holds {lease} (renewing) but its interface {iface} is down")
            out.append(L2Check(problem, lease, node, round(since - t0, 6), iface, detail))
        return out


class L2Monitor:
    """Runs :class:`L2Consistency` on a real cluster every ``period_s`` in a thread (and on
    demand, at each step); its findings are :meth:`checks`."""

    def __init__(self, rc: RealCluster, period_s: float = 0.2, grace_s: float = 0.5):
        self.rc, self.period_s = rc, period_s
        self.check = L2Consistency(grace_s)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="l2-monitor", daemon=True)

    def start(self) -> "L2Monitor":
        self._thread.start()
        return self

    def _leases(self) -> dict[str, dict]:
        from twin.semantics.l2 import announcements
        from twin.semantics.lbipam import allocate
        cluster = self.rc.cluster
        return {a.lease: {"ips": {str(ip) for ip in a.ips}, "interfaces": dict(a.interfaces)}
                for a in announcements(cluster, allocate(cluster)).values() if a.announced}

    def poll(self) -> None:
        with self._lock:
            try:
                now = time.monotonic()
                leases = self._leases()
                holders = self.rc.lease_holders(now)
                wanted: dict[str, tuple] = {}
                for lease, n in holders.items():
                    if lease in leases:
                        wanted[n] = tuple(dict.fromkeys(wanted.get(n, ()) + tuple(leases[lease]["interfaces"].get(n, ()))))
                self.check.observe(now, holders, self.rc.l2_status(), self.rc.responders(),
                                   self.rc.interfaces_up(wanted), leases)
            except Exception as exc:  # keep checking; the run reports what failed
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def checks(self, t0: float) -> list:
        return self.check.checks(t0)
