"""Executing a :class:`~harness.topology.plan.TopologyPlan`: namespaces, veths, scripts, app servers.

Every box of the plan is a Mininet :class:`~mininet.node.Host` (a shell in
its own network namespace).  Each veth is created inside its first host's
namespace with its peer placed directly in the second one, so nothing is
created in the root namespace.  Each namespace is also bind-mounted at
``/run/netns/twn-<run>-<name>`` so ``ip netns exec`` and pyroute2 can use it.
Everything is recorded in a state file (:mod:`harness.cleanup`) before or as
it is created, and :meth:`RealTopology.close` removes it again (also after a
partial build), with SIGINT/SIGTERM deferred until it is done.

Usage::

    with RealTopology(cluster) as topo:
        res = topo.exec("default/netpod", ["ping", "-c1", "172.16.1.10"], timeout=3)
"""
from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.cleanup import (LINK_PREFIX, STATE_DIR, RunState, cleanup_leftovers, latch_ctrl_c, leftovers,
                             make_run_dir, register_teardown, remove_cgroup_tree, remove_netns_mount,
                             remove_run_dir, set_signal_handler, signals_deferred, unlatch_ctrl_c,
                             unregister_teardown)
from harness.errors import TeardownIncomplete, TopologyError
from harness.topology.plan import (APISERVER, EXTERNAL, GARP_TABLE, LAN, PARTITION_TABLE, NamespacePlan, ServerPlan,
                                   TopologyPlan, lxc_name, plan_topology)
from twin.model import topology as topodefaults
from twin.model.apps import app_of_pod
from twin.model.objects import Cluster
from twin.model.scenario import ExternalHost

__all__ = ["RealTopology", "ExecResult", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_PROXY_ENV = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class ExecResult:
    """A finished command (shaped like :class:`subprocess.CompletedProcess`)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def args(self) -> tuple[str, ...]:
        return self.argv

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class RealTopology:
    """The cluster's nodes, pods, LAN and external host as real namespaces, built from :attr:`plan`.

    Targets (for :meth:`exec`, :meth:`popen`, :meth:`netns_path`): a pod key
    (``default/netpod``, or a bare pod name in ``default``), a node name,
    ``"external"``, ``"lan"`` or (with ``l2=True``) ``"apiserver"``.

    ``l2=True`` adds the apiserver host and the L2 LAN rules, ``backup_path``
    the nodes' ``mgmt0`` paths to it, ``external`` the external host's ARP
    settings (see :mod:`harness.topology.plan`).  Faults (:meth:`partition`,
    :meth:`heal`, :meth:`nic_down`, :meth:`node_crash`) return the
    ``time.monotonic()`` by which they are in effect.
    """

    def __init__(self, cluster: Cluster, run_id: str | None = None, *,
                 state_dir: Path | str = STATE_DIR, ready_timeout_s: float = 10.0,
                 static_neighbours: bool = True, start_apps: bool = True, l2: bool = False,
                 backup_path: bool = False, external: ExternalHost | None = None) -> None:
        self.cluster = cluster
        self.run_id = run_id or secrets.token_hex(3)[:5]
        self.state_dir = Path(state_dir)
        self.ready_timeout_s = ready_timeout_s
        self.static_neighbours = static_neighbours
        self.start_apps = start_apps
        self.external_ip = topodefaults.EXTERNAL_HOST_IP
        #: every name, address and command of this run (pure; see harness.topology.plan)
        self.plan: TopologyPlan = plan_topology(cluster, self.run_id, static_neighbours=static_neighbours,
                                                start_apps=start_apps, external_ip=self.external_ip,
                                                l2=l2, backup_path=backup_path, external=external)
        self.l2, self.backup_path, self.external = l2, backup_path, external
        #: lines from cleanup_leftovers() run at start
        self.cleanup_report: list[str] = []
        self.build_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._state: RunState | None = None
        self._hosts: dict[str, Any] = {}  # target -> mininet Host
        self._links: list[Any] = []
        self._procs: dict[int, tuple[str, subprocess.Popen]] = {}  # pid -> (target, Popen)
        self._servers: dict[str, subprocess.Popen] = {}  # target -> app server
        self._cgroups: dict[str, str] = {}  # node -> cgroup directory
        self._lock = threading.RLock()
        self._started = False
        self._closed = False
        self._torn_down = False
        self._old_sigterm: Any = None
        self._pods = {p.key: p for p in cluster.pods}
        self._lxc = {p.key: lxc_name(p.key) for p in cluster.pods}
        self._arp_watch: _ArpWatch | None = None
        self._partitioned: set[str] = set()

    # ----------------------------------------------------------------- names

    @property
    def prefix(self) -> str:
        """Prefix of every name this run uses in shared places."""
        return self.plan.prefix

    @property
    def link_prefix(self) -> str:
        """Prefix a root-namespace link of this run would have (none is created)."""
        return f"{LINK_PREFIX}{self.run_id}"

    def resolve(self, target: str) -> str:
        """Canonical target: a pod key, a node name, ``external`` or ``lan``."""
        if target in (EXTERNAL, LAN) or target in self._pods:
            return target
        if target == APISERVER and self.plan.l2:
            return target
        if any(n.name == target for n in self.cluster.nodes):
            return target
        if "/" not in target and f"default/{target}" in self._pods:
            return f"default/{target}"
        raise TopologyError(f"unknown target {target!r}: not a pod key, node name, 'external' or 'lan'"
                            + ("" if self.plan.l2 else " ('apiserver' exists with l2=True)"))

    def netns_name(self, target: str) -> str:
        return self.plan.namespace(self.resolve(target)).netns

    def netns_path(self, target: str) -> str:
        """``/run/netns/twn-<run>-<name>``: usable by setns(2), ``ip netns`` and pyroute2."""
        return self.plan.namespace(self.resolve(target)).path

    @property
    def apiserver_netns(self) -> str:
        """``/run/netns/twn-<run>-apiserver`` (only with ``l2=True``)."""
        if not self.plan.l2:
            raise TopologyError(f"run {self.run_id}: no apiserver host (build the topology with l2=True)")
        return self.plan.namespace(APISERVER).path

    def node_netns(self, node_name: str) -> str:
        self._node(node_name)
        return self.netns_path(node_name)

    def lxc_of(self, pod_key: str) -> str:
        return self._lxc[self.resolve(pod_key)]

    def lxc_by_node(self, node_name: str) -> list[str]:
        self._node(node_name)
        return [self._lxc[p.key] for p in self.cluster.pods if p.node == node_name]

    def _node(self, node_name: str) -> None:
        if not any(n.name == node_name for n in self.cluster.nodes):
            raise TopologyError(f"unknown node {node_name!r} (nodes: {[n.name for n in self.cluster.nodes]})")

    def pod_host(self, pod_key: str) -> Any:
        return self.host(self.resolve(pod_key))

    def host(self, target: str) -> Any:
        t = self.resolve(target)
        if t not in self._hosts:
            raise TopologyError(f"{t!r} has no host (topology not built, or closed)")
        return self._hosts[t]

    def pid_of(self, target: str) -> int:
        """pid of the shell of ``target``'s host (``/proc/PID/ns/net`` is its namespace)."""
        return int(self.host(target).pid)

    def server_pid(self, pod_key: str) -> int | None:
        proc = self._servers.get(self.resolve(pod_key))
        return proc.pid if proc else None

    def pids(self) -> list[int]:
        """Every process this run started and still knows of (shells, servers, popen)."""
        out = [int(h.pid) for h in self._hosts.values() if getattr(h, "shell", None)]
        return out + [pid for pid in self._procs]

    @property
    def mounts(self) -> list[str]:
        return list(self._state.mounts) if self._state else []

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> "RealTopology":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> "RealTopology":
        """Build everything; on any failure (or Ctrl-C) remove what was built and re-raise."""
        with self._lock:
            if self._started:
                return self
            if self._closed:
                raise TopologyError(f"run {self.run_id}: a closed RealTopology cannot be started again")
            self._started = True
        if os.geteuid() != 0:
            raise TopologyError("RealTopology needs root (network namespaces, veths, mounts)")
        t0 = time.monotonic()
        self._install_signal_handling()
        try:
            self.cleanup_report = cleanup_leftovers(self.state_dir)
            self._state = RunState.create(self.run_id, self.state_dir)
            self._state.log_dir.mkdir(parents=True, exist_ok=True)
            self._build()
        except (OSError, subprocess.SubprocessError) as exc:  # operational: say what, no traceback
            self.close()
            raise TopologyError(f"run {self.run_id}: building the topology failed: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Kill what we started, delete links, unmount namespaces, remove cgroups. Idempotent.

        SIGINT/SIGTERM are deferred until it is done (a second Ctrl-C cannot cut
        the teardown short).  If something could not be removed,
        :class:`TeardownIncomplete` lists it; the state file then stays, so
        ``twin cleanup`` removes the rest once this process has exited.
        """
        with signals_deferred("teardown"):
            with self._lock:
                if self._torn_down:
                    return
                self._closed = True  # no new commands from here on
                t0 = time.monotonic()
                errors: list[str] = []
                # an exception out of _teardown, or objects it could not remove, leave _torn_down False:
                # a later close() (again, at exit, or from finish_teardown) retries what is left
                self._teardown(errors)
                self.teardown_seconds = time.monotonic() - t0
                if not errors:
                    self._torn_down = True
                    unregister_teardown(self.close)
                    self._restore_signal_handling()
            if errors:
                left = leftovers(self.run_id, self.state_dir)
                raise TeardownIncomplete(
                    f"run {self.run_id}: teardown left state behind: " + "; ".join(errors)
                    + ("; still present: " + "; ".join(left) if left else "")
                    + "; `twin cleanup` removes it once this process has exited", left)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except TopologyError as exc:  # the interpreter is exiting: say what is left, no traceback
            os.write(2, f"twin: {exc}\n".encode())

    # ----------------------------------------------------------------- build

    def _build(self) -> None:
        from mininet.node import Host

        plan, state = self.plan, self._state
        assert state is not None
        for ns in plan.namespaces:
            with signals_deferred():  # a shell is tracked as soon as it exists
                h = Host(ns.host_name, inNamespace=True)
                self._hosts[ns.target] = h
                state.add_pid(int(h.pid))
        # bind-mount every namespace (recorded before it is made)
        for ns in plan.namespaces:
            state.add_mount(ns.path)
        self._ip_batch([f"netns attach {ns.netns} {self._hosts[ns.target].pid}" for ns in plan.namespaces])
        for v in plan.veths:
            self._link(v.target1, v.name1, v.mac1, v.target2, v.name2, v.mac2)
        for ns in plan.namespaces:
            self._script(ns)
        if plan.servers:
            self._wait_listening({s.target: (self._spawn_server(s), s.tcp_ports, s.udp_ports)
                                  for s in plan.servers})

    def _link(self, t1: str, name1: str, mac1: str, t2: str, name2: str, mac2: str) -> None:
        """A veth created inside ``t1``'s namespace with its peer put straight into ``t2``'s."""
        from mininet.link import Intf, Link

        class _Bare(Intf):
            def config(self, **_params: Any) -> dict:  # configured by the plan's scripts instead
                return {}

        self._links.append(Link(self._hosts[t1], self._hosts[t2], intfName1=name1, intfName2=name2,
                                addr1=mac1, addr2=mac2, intf=_Bare))

    def _script(self, ns: NamespacePlan) -> None:
        cmds = ns.commands()
        res = self.exec(ns.target, ["sh", "-ec", "\n".join(cmds)], timeout=30)
        if not res.ok:
            raise TopologyError(f"run {self.run_id}: configuring namespace {ns.netns} ({ns.target}): "
                                f"exit {res.returncode}: {res.stderr.strip()}\n" + "\n".join(cmds))

    def _ip_batch(self, lines: list[str]) -> None:
        res = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n",
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise TopologyError(f"run {self.run_id}: attaching namespaces under /run/netns failed: "
                                f"{res.stderr.strip()}")

    # ---------------------------------------------------------------- servers

    def kill_server(self, pod_key: str) -> float:
        """SIGKILL a pod's app server (a crash); returns the monotonic time of the kill."""
        key = self.resolve(pod_key)
        proc = self._servers.pop(key, None)
        if proc is None or proc.poll() is not None:
            raise TopologyError(f"{key} has no running app server to kill")
        _killpg(proc.pid)
        t = time.monotonic()
        proc.wait(timeout=5)
        with self._lock:
            self._procs.pop(proc.pid, None)
        return t

    def start_server(self, pod_key: str) -> float:
        """(Re)start a pod's app server and wait until it listens; returns the monotonic start time."""
        key = self.resolve(pod_key)
        p = self._pods[key]
        app = app_of_pod(p)
        if app.name == "none":
            raise TopologyError(f"{key} runs no app server (image {p.containers[0].image if p.containers else '?'})")
        if key in self._servers and self._servers[key].poll() is None:
            raise TopologyError(f"{key}'s app server is already running")
        t = time.monotonic()
        s = ServerPlan(key, app.name, p.name, tuple(app.tcp_ports), tuple(app.udp_ports), (str(p.ip),))
        self._wait_listening({key: (self._spawn_server(s), s.tcp_ports, s.udp_ports)})
        return t

    def _spawn_server(self, s: ServerPlan) -> subprocess.Popen:
        assert self._state is not None
        with open(self._state.log_dir / s.log_name, "wb") as fh:
            proc = self.popen(s.target, list(s.argv), stdout=subprocess.DEVNULL, stderr=fh, cwd=str(REPO_ROOT))
        self._servers[s.target] = proc
        return proc

    def _wait_listening(self, wanted: dict) -> None:
        """Poll each server's /proc/PID/net/{tcp,udp} (its namespace's sockets) until all ports are bound."""
        deadline = time.monotonic() + self.ready_timeout_s
        pending = dict(wanted)
        while pending:
            for target, (proc, tcp, udp) in list(pending.items()):
                if proc.poll() is not None:
                    raise TopologyError(f"app server in {target} exited with {proc.returncode}: "
                                        f"{self._server_log(target)}")
                if set(tcp) <= _ports(proc.pid, "tcp", listening=True) and \
                        set(udp) <= _ports(proc.pid, "udp", listening=False):
                    del pending[target]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TopologyError(f"app servers not listening after {self.ready_timeout_s}s: {sorted(pending)}")
            time.sleep(0.02)

    def _server_log(self, target: str) -> str:
        try:
            return (self._state.log_dir / f"{target.replace('/', '.')}.log").read_text()[-2000:].strip()
        except OSError:
            return "(no log)"

    # -------------------------------------------------------------- commands

    def make_node_cgroup(self, node_name: str) -> Path:
        """Create the node's cgroup2 directory (``<plan.cgroup_dir>/<node>``), record it in the
        state file and run the node's pods' processes in it; :meth:`close` removes it."""
        self._node(node_name)
        if self._state is None or self._closed:
            raise TopologyError(f"run {self.run_id}: no cgroup for {node_name} (topology not built, or closed)")
        root = Path(self.plan.cgroup_dir)
        d = Path(self.plan.node_cgroup(node_name))
        try:
            if not root.is_dir():
                self._state.add_cgroup(str(root))
                root.mkdir()
            self._state.add_cgroup(str(d))
            d.mkdir()
        except OSError as exc:
            raise TopologyError(f"run {self.run_id}: cannot create cgroup {d}: {exc.strerror}") from exc
        self.set_node_cgroup(node_name, d)
        return d

    def set_node_cgroup(self, node_name: str, cgroup_dir: str | os.PathLike) -> None:
        """Run the node's pods' processes in ``cgroup_dir`` (cgroup2): moves the
        running ones (app servers, popen'd) now, and starts later ones there."""
        self._node(node_name)
        procs_file = Path(cgroup_dir) / "cgroup.procs"
        if not procs_file.exists():
            raise TopologyError(f"{cgroup_dir} is not a cgroup2 directory (no cgroup.procs)")
        self._cgroups[node_name] = str(cgroup_dir)
        for pid, (target, proc) in list(self._procs.items()):
            if proc.poll() is None and self._node_of(target) == node_name:
                try:
                    procs_file.write_text(f"{pid}\n")
                except ProcessLookupError:
                    pass  # it exited meanwhile
                except OSError as exc:
                    raise TopologyError(f"cannot move pid {pid} ({target}) into cgroup {cgroup_dir}: "
                                        f"{exc.strerror}") from exc

    def _node_of(self, target: str) -> str | None:
        p = self._pods.get(target)
        return p.node if p else (target if target not in (EXTERNAL, LAN, APISERVER) else None)

    def _argv_in(self, target: str, argv: Sequence[str]) -> list[str]:
        t = self.resolve(target)
        if t not in self._hosts or self._closed:
            raise TopologyError(f"no namespace for {t!r} (topology not built, or closed)")
        cmd = ["mnexec", "-da", str(self._hosts[t].pid), *map(str, argv)]
        node = self._node_of(t)
        if t in self._pods and node in self._cgroups:
            procs = str(Path(self._cgroups[node]) / "cgroup.procs")
            cmd = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *cmd]
        return cmd

    def exec(self, target: str, argv: Sequence[str], timeout: float = 10.0,
             input: str | None = None) -> ExecResult:  # noqa: A002
        """Run ``argv`` in ``target``'s namespace and wait; on timeout its process group is killed."""
        cmd = self._argv_in(target, argv)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
        try:
            out, err = proc.communicate(input, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            out, err = proc.communicate()
            timed_out = True
        except BaseException:  # Ctrl-C while waiting: the command runs in its own session, end it too
            _killpg(proc.pid)
            proc.wait()
            raise
        return ExecResult(tuple(map(str, argv)), proc.returncode, out, err, time.monotonic() - t0, timed_out)

    def popen(self, target: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in ``target``'s namespace (its own session); killed by :meth:`close`."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("env", _clean_env())
        t = self.resolve(target)
        with signals_deferred(), self._lock:  # started and recorded, or neither: no untracked process
            proc = subprocess.Popen(self._argv_in(t, argv), **kwargs)
            self._procs[proc.pid] = (t, proc)
            if self._state:
                self._state.add_pid(proc.pid, list(argv))
        return proc

    def stop(self, proc: subprocess.Popen, grace_s: float = 2.0) -> float:
        """End a process started by :meth:`popen` (SIGTERM to its session, SIGKILL after ``grace_s``),
        forget it; returns the monotonic time it was signalled."""
        with self._lock:
            if self._procs.get(proc.pid, (None, None))[1] is not proc:
                raise TopologyError(f"pid {proc.pid} was not started by this topology's popen()")
        t = time.monotonic()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM) if os.getpgid(proc.pid) == proc.pid else proc.terminate()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr, proc.stdin):
            if f:
                f.close()
        with self._lock:
            self._procs.pop(proc.pid, None)
            if self._state:
                self._state.drop_pid(proc.pid)
        return t

    def make_run_dir(self, parent: Path | str, prefix: str) -> Path:
        """A temporary directory under ``parent``, recorded in the run's state file (so a crashed run's
        is removed by ``twin cleanup``) and removed by :meth:`close` or :meth:`remove_run_dir`."""
        if self._state is None or self._closed:
            raise TopologyError(f"run {self.run_id}: no temporary directory (topology not built, or closed)")
        return make_run_dir(self._state, parent, prefix)

    def remove_run_dir(self, path: Path | str) -> None:
        if self._state is None or str(path) not in self._state.dirs:
            raise TopologyError(f"{path} is not a temporary directory of run {self.run_id}")
        remove_run_dir(path, self.run_id)
        if Path(path).exists():
            raise TopologyError(f"run {self.run_id}: could not remove {path}")
        self._state.drop_dir(str(path))

    # ---------------------------------------------------------------- faults

    def _ipr(self, target: str) -> Any:
        from harness.netns import open_iproute

        return open_iproute(self.netns_path(target))

    def _links_down(self, node: str, devs: Sequence[str]) -> float:
        self._node(node)
        ipr = self._ipr(node)
        try:
            idx = []
            for dev in devs:
                found = ipr.link_lookup(ifname=dev)
                if not found:
                    raise TopologyError(f"node {node} has no interface {dev}")
                idx.append(found[0])
            for i in idx:
                ipr.link("set", index=i, state="down")
            return time.monotonic()
        finally:
            ipr.close()

    def nic_down(self, node: str) -> float:
        """Set ``node``'s LAN interface (its uplink, ``ens5``) down; returns when it was down.

        Its routes over the uplink go with it; with the backup path, the API server stays
        reachable over ``mgmt0`` (metric 100)."""
        return self._links_down(node, [self.cluster.node(node).uplink])

    def nic_up(self, node: str) -> float:
        """Undo :meth:`nic_down`: the uplink up again and the plan's routes over it restored (setting a
        link down flushes them).  Returns when the routes were back."""
        uplink = self.cluster.node(node).uplink
        ns = self.plan.namespace(node)
        lines = [f"ip link set {uplink} up"]
        lines += [r.command().replace("ip route add", "ip route replace", 1) for r in ns.routes if r.dev == uplink]
        res = self.exec(node, ["sh", "-ec", "\n".join(lines)], timeout=10)
        if not res.ok:
            raise TopologyError(f"run {self.run_id}: bringing {node}'s {uplink} back: {res.stderr.strip()}")
        return time.monotonic()

    def node_crash(self, node: str) -> float:
        """``node`` stops answering on every interface (uplink and ``mgmt0`` down); the caller
        kills its agent.  Returns when the interfaces were down."""
        devs = [self.cluster.node(node).uplink] + ([topodefaults.BACKUP_DEV] if self.plan.backup_path else [])
        return self._links_down(node, devs)

    def partition(self, node: str) -> float:
        """Cut ``node`` off from the API server on every path: an nft table in the node's namespace
        drops packets to and from 192.168.10.250 (LAN and ``mgmt0`` alike; established connections
        hang as in a real partition).  LAN traffic with everyone else still flows.  Returns when the
        rules were in place."""
        self._node(node)
        api = topodefaults.APISERVER_IP
        rules = (f"table ip {PARTITION_TABLE} {{\n"
                 f"  chain output {{ type filter hook output priority 0; policy accept; ip daddr {api} drop; }}\n"
                 f"  chain input {{ type filter hook input priority 0; policy accept; ip saddr {api} drop; }}\n"
                 f"  chain forward {{ type filter hook forward priority 0; policy accept; "
                 f"ip daddr {api} drop; ip saddr {api} drop; }}\n}}")
        self._nft(node, rules, f"partitioning {node} from the API server")
        self._partitioned.add(node)
        return time.monotonic()

    def heal(self, node: str) -> float:
        """Undo :meth:`partition`; returns when the rules were gone."""
        self._node(node)
        self._nft(node, f"delete table ip {PARTITION_TABLE}", f"healing {node}'s partition")
        self._partitioned.discard(node)
        return time.monotonic()

    def _nft(self, target: str, script: str, what: str) -> None:
        res = self.exec(target, ["nft", "-f", "-"], timeout=10, input=script + "\n")
        if not res.ok:
            raise TopologyError(f"run {self.run_id}: {what}: nft exit {res.returncode}: {res.stderr.strip()}")

    def node_mac(self, node: str) -> str:
        """MAC of ``node``'s LAN interface (as planned, and set on the veth at build)."""
        self._node(node)
        return self.plan.uplink_mac(node)

    def mac_to_node(self) -> dict[str, str]:
        return {self.plan.uplink_mac(n.name): n.name for n in self.cluster.nodes}

    # --------------------------------------------------------- external host

    def external_arping(self, ip: str, count: int = 1, timeout: float = 2.0) -> list[tuple[float, str]]:
        """iputils ``arping -c count -w timeout`` from the external host's eth0; one
        ``(monotonic time the reply line was read, MAC)`` per reply (none if nobody answers)."""
        import shutil

        argv = ["arping", "-I", "eth0", "-c", str(int(count)), "-w", f"{timeout:g}", str(ip)]
        if shutil.which("stdbuf"):  # arping's stdout is a pipe: make it line-buffered so times are honest
            argv = ["stdbuf", "-oL", *argv]
        proc = self.popen(EXTERNAL, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        replies: list[tuple[float, str]] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _ARPING_REPLY.search(line)
                if m:
                    replies.append((time.monotonic(), m.group(1).lower()))
            proc.wait(timeout=timeout + 5)
            err = proc.stderr.read() if proc.stderr else ""
        finally:
            self.stop(proc)
        if proc.returncode not in (0, 1):  # 1: no reply
            raise TopologyError(f"arping {ip} from the external host: exit {proc.returncode}: {err.strip()}")
        return replies

    def start_arp_watch(self) -> None:
        """Record every ARP packet the external host's eth0 receives (an AF_PACKET socket made in its
        namespace, read by a thread); :meth:`arp_events` returns them.  Idempotent."""
        if self._arp_watch is None:
            if EXTERNAL not in self._hosts or self._closed:
                raise TopologyError(f"run {self.run_id}: no external host to watch (not built, or closed)")
            self._arp_watch = _ArpWatch(self.netns_path(EXTERNAL), "eth0")

    def arp_events(self) -> list[dict]:
        """``{"t", "op" (request|reply|<number>), "sip", "tip", "sha", "tha", "src", "dst"}`` per ARP
        packet received since :meth:`start_arp_watch`, in order; ``t`` is ``time.monotonic()``."""
        if self._arp_watch is None:
            raise TopologyError("arp_events(): start_arp_watch() was not called")
        return self._arp_watch.events()

    def external_neigh(self, ip: str) -> dict | None:
        """The external host's neighbour entry for ``ip`` (``ip -j neigh show``), or None."""
        res = self.exec(EXTERNAL, ["ip", "-j", "neigh", "show", "to", str(ip), "dev", "eth0"], timeout=5)
        if not res.ok:
            raise TopologyError(f"ip neigh show {ip} on the external host: {res.stderr.strip()}")
        rows = [r for r in json.loads(res.stdout or "[]") if r.get("dst") == str(ip)]
        return rows[0] if rows else None

    def external_add_pool(self, network: str) -> None:
        """Make the external host treat ``network`` (an LB-IPAM pool added after the build) as the
        build does the cluster's pools: routed on-link on eth0 (it ARPs for its addresses) and, with
        ``garp: ignore``, its addresses added to the gratuitous-ARP filter."""
        import ipaddress

        net = ipaddress.IPv4Network(network, strict=False)
        res = self.exec(EXTERNAL, ["ip", "route", "replace", str(net), "dev", "eth0", "scope", "link"])
        if not res.ok:
            raise TopologyError(f"route {net} on the external host: {res.stderr.strip()}")
        if self.external is not None and self.external.garp == "ignore":
            if net.num_addresses > 65536:
                raise TopologyError(f"pool {net}: too many addresses to list in the external host's ARP filter")
            elems = ", ".join(f"{a} . {a}" for a in net)
            self._nft(EXTERNAL, f"add element arp {GARP_TABLE} garp {{ {elems} }}",
                      f"adding pool {net} to the external host's gratuitous-ARP filter")

    # -------------------------------------------------------------- teardown

    def _teardown(self, errors: list[str]) -> None:
        # 0. the ARP watcher's thread (its socket lives in the external namespace)
        if self._arp_watch is not None:
            self._arp_watch.stop()
        # 1. processes we started in the namespaces
        for pid, (_t, proc) in list(self._procs.items()):
            if proc.poll() is None:
                try:
                    os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2.0
        for pid, (_t, proc) in list(self._procs.items()):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(pid)
                proc.wait(timeout=5)
            for f in (proc.stdout, proc.stderr, proc.stdin):
                if f:
                    f.close()
            if self._state:
                self._state.drop_pid(pid)
            del self._procs[pid]
        self._servers.clear()
        # 1b. temporary directories recorded for this run (etcd's data), now that their processes are gone
        if self._state:
            for d in list(self._state.dirs):
                remove_run_dir(d, self.run_id)
                if Path(d, f".twin-run-{self.run_id}").exists():
                    errors.append(f"temporary directory {d} still present")
                else:
                    self._state.drop_dir(d)
        # 2. links (deleting one end of a veth removes both), the bridge, the cilium_host veths
        for link in reversed(self._links):
            try:
                h = link.intf1.node
                if getattr(h, "shell", None):
                    h.cmd(f"ip link del {link.intf1.name}")
            except Exception as exc:  # keep tearing down
                errors.append(f"link {link}: {exc}")
        self._links.clear()
        for ns in self.plan.namespaces:
            h = self._hosts.get(ns.target)
            if getattr(h, "shell", None) and ns.local_devices:
                h.cmd("; ".join(f"ip link del {dev} 2>/dev/null" for dev in ns.local_devices))
        # 3. bind mounts
        if self._state:
            for m in list(self._state.mounts):
                remove_netns_mount(m)
                if Path(m).exists():
                    errors.append(f"netns mount {m} still present")
                else:
                    self._state.drop_mount(m)
        # 4. the hosts' shells
        for t, h in list(self._hosts.items()):
            pid = int(h.pid) if h.pid else None
            try:
                h.terminate()
            except Exception as exc:
                errors.append(f"host {t}: {exc}")
            if pid and self._state:
                self._state.drop_pid(pid)
        self._hosts.clear()
        # 5. cgroups (empty now: their processes are gone; BPF programs attached to them detach with them)
        if self._state:
            for cg in reversed(list(self._state.cgroups)):
                if Path(cg).is_dir() and not remove_cgroup_tree(Path(cg)):
                    errors.append(f"cgroup {cg} still has processes")
                else:
                    self._state.drop_cgroup(cg)
        if self._state and not errors:
            self._state.remove()

    # --------------------------------------------------------------- signals

    def _install_signal_handling(self) -> None:
        """SIGTERM becomes SystemExit in the main thread, so ``finally``/``with`` clean up; the first
        Ctrl-C raises KeyboardInterrupt, later ones wait for the teardown (``latch_ctrl_c``)."""
        atexit.register(self._close_at_exit)
        register_teardown(self.close)
        if threading.current_thread() is not threading.main_thread():
            return
        latch_ctrl_c()  # from here a second Ctrl-C cannot cut the teardown short
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def _on_term(signum: int, _frame: Any) -> None:
                if not self._closed:  # during teardown signals_deferred() holds it back anyway
                    raise SystemExit(128 + signum)

            self._old_sigterm = set_signal_handler(signal.SIGTERM, _on_term)

    def _restore_signal_handling(self) -> None:
        atexit.unregister(self._close_at_exit)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            set_signal_handler(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        unlatch_ctrl_c()


_ARPING_REPLY = re.compile(r"reply from \S+ \[([0-9A-Fa-f:]{17})\]")


class _ArpWatch:
    """A thread reading ARP frames from an AF_PACKET socket opened inside a namespace."""

    def __init__(self, netns: str, ifname: str) -> None:
        import socket

        from harness.netns import entered_netns

        with entered_netns(netns):  # the socket belongs to the namespace it was made in
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
            self._sock.bind((ifname, 0x0806))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.1)
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # kernel receive stamps are CLOCK_REALTIME; put them on CLOCK_MONOTONIC
        self._offset = time.time() - time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"arp-watch {ifname}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                data, anc, _flags, addr = self._sock.recvmsg(2048, 64)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    t = min(t, sec + nsec / 1e9 - self._offset)
            if addr[2] == 4 or len(data) < 42:  # PACKET_OUTGOING: sent by the host itself
                continue
            op = struct.unpack("!H", data[20:22])[0]
            mac = lambda b: ":".join(f"{x:02x}" for x in b)  # noqa: E731
            ev = {"t": t, "op": {1: "request", 2: "reply"}.get(op, str(op)),
                  "sip": socket.inet_ntoa(data[28:32]), "tip": socket.inet_ntoa(data[38:42]),
                  "sha": mac(data[22:28]), "tha": mac(data[32:38]), "src": mac(data[6:12]), "dst": mac(data[0:6])}
            with self._lock:
                self._events.append(ev)

    def events(self) -> list[dict]:
        with self._lock:
            return list(self._events)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


_SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD on x86_64


def _killpg(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _ports(pid: int, proto: str, listening: bool) -> set[int]:
    """Local ports of IPv4 sockets in ``pid``'s network namespace (TCP: LISTEN only)."""
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return set()
    out = set()
    for line in lines:
        f = line.split()
        if len(f) < 4:
            continue
        if listening and f[3] != "0A":
            continue
        out.add(int(f[1].rsplit(":", 1)[1], 16))
    return out
