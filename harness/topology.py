"""The real side's network: the model's cluster built from namespaces and veths.

Layout (every box is a Mininet :class:`~mininet.node.Host`, i.e. a shell in
its own network namespace; there is no OpenFlow controller and no OVS)::

                       LAN host: bridge br0
          ┌──────────────┬──────┴───────┬──────────────┐
        n0.k8s-s      n1.k8s-w1      n2.k8s-w2        ext          (LAN side)
          │              │              │              │
        ens5           ens5           ens5           eth0         192.168.10.x/24
     node k8s-s     node k8s-w1    node k8s-w2    external host   .200, HTTP on :80
     cilium_host    (router IP /32; ip_forward=1; routes to the other nodes' pod CIDRs)
     lxc<sha1>…      one per local pod: proxy_arp=1, a /32 route to the pod
          │
        eth0  pod /32, default via the router IP (on-link)

``cilium_host`` is a veth paired with ``cilium_net``, as in Cilium (this
kernel has no ``dummy`` driver).  By default pod and node also get static
neighbour entries for each other, so no ARP crosses an ``lxc`` device.

Nothing is created in the root namespace: each veth is created inside its
first host's namespace with its peer placed directly in the second one.
Each namespace is also bind-mounted at ``/run/netns/twn-<run>-<name>`` so
``ip netns exec`` and pyroute2 can use it.  Everything is recorded in a
state file (:mod:`harness.cleanup`) before or as it is created, and
:meth:`RealTopology.close` removes it again (also after a partial build).

Usage::

    with RealTopology(cluster) as topo:
        res = topo.exec("default/netpod", ["ping", "-c1", "172.16.1.10"], timeout=3)
"""
from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.cleanup import (LINK_PREFIX, NETNS_DIR, NETNS_PREFIX, STATE_DIR, RunState, cleanup_leftovers,
                             remove_netns_mount)
from twin.model import topology as topodefaults
from twin.model import apps
from twin.model.apps import app_of_pod
from twin.model.objects import Cluster, Pod

__all__ = ["RealTopology", "ExecResult", "TopologyError", "lxc_name", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = "external"
LAN = "lan"
BRIDGE = "br0"
ROUTER_DEV = "cilium_host"  # a veth whose peer is cilium_net, as in Cilium (no dummy driver here)
ROUTER_PEER = "cilium_net"
_PROXY_ENV = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")


class TopologyError(RuntimeError):
    """Building or using the real topology failed; the message names the object."""


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


def lxc_name(pod_key: str) -> str:
    """Node-side name of a pod's veth: ``lxc`` + 11 hex chars of sha1(ns/name)."""
    return "lxc" + hashlib.sha1(pod_key.encode()).hexdigest()[:11]


def _mac(seed: str) -> str:
    """A stable, locally administered unicast MAC for a named interface."""
    h = hashlib.sha1(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02 | (h[0] & 0xFC), *h[1:6]))


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class RealTopology:
    """The cluster's nodes, pods, LAN and external host as real namespaces.

    Targets (for :meth:`exec`, :meth:`popen`, :meth:`netns_path`): a pod key
    (``default/netpod``, or a bare pod name in ``default``), a node name,
    ``"external"`` or ``"lan"``.
    """

    def __init__(self, cluster: Cluster, run_id: str | None = None, *,
                 state_dir: Path | str = STATE_DIR, ready_timeout_s: float = 10.0,
                 static_neighbours: bool = True, start_apps: bool = True) -> None:
        self.cluster = cluster
        self.run_id = run_id or secrets.token_hex(3)[:5]
        self.state_dir = Path(state_dir)
        self.ready_timeout_s = ready_timeout_s
        self.static_neighbours = static_neighbours
        self.start_apps = start_apps
        self.external_ip = topodefaults.EXTERNAL_HOST_IP
        #: lines from cleanup_leftovers() run at start
        self.cleanup_report: list[str] = []
        self.build_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._state: RunState | None = None
        self._hosts: dict[str, Any] = {}  # target -> mininet Host
        self._netns: dict[str, str] = {}  # target -> netns name under /run/netns
        self._links: list[Any] = []
        self._procs: dict[int, tuple[str, subprocess.Popen]] = {}  # pid -> (target, Popen)
        self._servers: dict[str, subprocess.Popen] = {}  # target -> app server
        self._cgroups: dict[str, str] = {}  # node -> cgroup directory
        self._lock = threading.RLock()
        self._started = False
        self._closed = False
        self._old_sigterm: Any = None
        self._pods = {p.key: p for p in cluster.pods}
        self._lxc = {p.key: lxc_name(p.key) for p in cluster.pods}

    # ----------------------------------------------------------------- names

    @property
    def prefix(self) -> str:
        """Prefix of every name this run uses in shared places."""
        return f"{NETNS_PREFIX}{self.run_id}-"

    @property
    def link_prefix(self) -> str:
        """Prefix a root-namespace link of this run would have (none is created)."""
        return f"{LINK_PREFIX}{self.run_id}"

    def resolve(self, target: str) -> str:
        """Canonical target: a pod key, a node name, ``external`` or ``lan``."""
        if target in (EXTERNAL, LAN) or target in self._pods:
            return target
        if any(n.name == target for n in self.cluster.nodes):
            return target
        if "/" not in target and f"default/{target}" in self._pods:
            return f"default/{target}"
        raise TopologyError(f"unknown target {target!r}: not a pod key, node name, 'external' or 'lan'")

    def netns_name(self, target: str) -> str:
        t = self.resolve(target)
        return self.prefix + t.replace("/", ".")

    def netns_path(self, target: str) -> str:
        """``/run/netns/twn-<run>-<name>``: usable by setns(2), ``ip netns`` and pyroute2."""
        return str(NETNS_DIR / self.netns_name(target))

    def node_netns(self, node_name: str) -> str:
        self.cluster.node(node_name)
        return self.netns_path(node_name)

    def lxc_of(self, pod_key: str) -> str:
        return self._lxc[self.resolve(pod_key)]

    def lxc_by_node(self, node_name: str) -> list[str]:
        self.cluster.node(node_name)
        return [self._lxc[p.key] for p in self.cluster.pods if p.node == node_name]

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
        """Build everything; on any failure remove what was built and re-raise."""
        with self._lock:
            if self._started:
                return self
            if self._closed:
                raise TopologyError("a closed RealTopology cannot be started again")
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
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Kill what we started, delete links, unmount namespaces. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        t0 = time.monotonic()
        errors: list[str] = []
        try:
            self._teardown(errors)
        finally:
            self._restore_signal_handling()
            self.teardown_seconds = time.monotonic() - t0
        if errors:
            raise TopologyError("teardown left state behind: " + "; ".join(errors))

    # ----------------------------------------------------------------- build

    def _build(self) -> None:
        from mininet.node import Host

        c = self.cluster
        self._check_model()
        targets = [LAN] + [n.name for n in c.nodes] + [p.key for p in c.pods] + [EXTERNAL]
        for t in targets:
            h = Host(f"twn{self.run_id}-{t.replace('/', '.')}", inNamespace=True)
            self._hosts[t] = h
            self._state.add_pid(int(h.pid))
        # bind-mount every namespace (recorded before it is made)
        batch = []
        for t in targets:
            name = self.netns_name(t)
            self._state.add_mount(str(NETNS_DIR / name))
            self._netns[t] = name
            batch.append(f"netns attach {name} {self._hosts[t].pid}")
        self._ip_batch(batch)

        lan = self._hosts[LAN]
        lan_ports = []
        for i, node in enumerate(c.nodes):
            port = f"n{i}.{node.name}"[:15]
            self._link(lan, port, self._hosts[node.name], node.uplink)
            lan_ports.append(port)
        self._link(lan, "ext", self._hosts[EXTERNAL], "eth0")
        lan_ports.append("ext")
        for p in c.pods:
            self._link(self._hosts[p.node], self._lxc[p.key], self._hosts[p.key], "eth0")

        self._configure_lan(lan_ports)
        for node in c.nodes:
            self._configure_node(node)
        for p in c.pods:
            self._configure_pod(p)
        self._configure_external()
        if self.start_apps:
            self._start_servers()

    def _check_model(self) -> None:
        c = self.cluster
        names = [self.netns_name(t) for t in [LAN, EXTERNAL] + [n.name for n in c.nodes] + list(self._pods)]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise TopologyError(f"namespace names collide: {sorted(dup)} (a node named like a pod?)")
        lxcs = list(self._lxc.values())
        if len(set(lxcs)) != len(lxcs):
            raise TopologyError("two pods hash to the same lxc name")
        for n in c.nodes:
            if len(n.uplink) > 15:
                raise TopologyError(f"node {n.name}: uplink name {n.uplink!r} is longer than 15 characters")
            if n.ip not in c.node_network:
                raise TopologyError(f"node {n.name}: IP {n.ip} is outside the node network {c.node_network}")
        if self.external_ip not in c.node_network:
            raise TopologyError(f"external host {self.external_ip} is outside the node network {c.node_network}")
        for p in c.pods:
            c.node(p.node)  # KeyError names the missing node

    def _link(self, h1: Any, name1: str, h2: Any, name2: str) -> None:
        """A veth created inside ``h1``'s namespace with its peer put straight into ``h2``'s."""
        from mininet.link import Intf, Link

        class _Bare(Intf):
            def config(self, **_params: Any) -> dict:  # configured by our scripts instead
                return {}

        seed = f"{self.run_id}/{h1.name}/{name1}"
        link = Link(h1, h2, intfName1=name1, intfName2=name2,
                    addr1=_mac(seed + "/1"), addr2=_mac(seed + "/2"), intf=_Bare)
        self._links.append(link)

    def _mac_of(self, target: str, ifname: str) -> str:
        return self._hosts[target].nameToIntf[ifname].mac

    def _configure_lan(self, ports: list[str]) -> None:
        cmds = self._common_sysctls() + [
            f"ip link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
            f"ip link set {BRIDGE} up",
        ]
        cmds += [f"ip link set {p} master {BRIDGE} up" for p in ports]
        self._script(LAN, cmds)

    def _configure_node(self, node: Any) -> None:
        c = self.cluster
        plen = c.node_network.prefixlen
        router = topodefaults.router_ip(node.pod_cidr)
        cmds = self._common_sysctls() + [
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            f"ip addr add {node.ip}/{plen} dev {node.uplink}",
            f"ip link set {node.uplink} up",
            f"ip link add {ROUTER_DEV} type veth peer name {ROUTER_PEER}",
            f"ip link set {ROUTER_PEER} up",
            f"ip addr add {router}/32 dev {ROUTER_DEV}",
            f"ip link set {ROUTER_DEV} up",
        ]
        for p in c.pods:
            if p.node != node.name:
                continue
            lxc = self._lxc[p.key]
            cmds += [
                f"sysctl -qw net.ipv4.conf.{lxc}.proxy_arp=1 net.ipv4.conf.{lxc}.rp_filter=0",
                f"ip link set {lxc} up",
                f"ip route add {p.ip}/32 dev {lxc}",
            ]
            if self.static_neighbours:
                cmds.append(f"ip neigh replace {p.ip} lladdr {self._mac_of(p.key, 'eth0')} dev {lxc} nud permanent")
        for other in c.nodes:
            if other.name != node.name:
                cmds.append(f"ip route add {other.pod_cidr} via {other.ip} dev {node.uplink}")
        self._script(node.name, cmds)

    def _configure_pod(self, p: Pod) -> None:
        router = topodefaults.router_ip(self.cluster.node(p.node).pod_cidr)
        cmds = self._common_sysctls() + [
            f"ip addr add {p.ip}/32 dev eth0",
            "ip link set eth0 up",
            f"ip route add {router} dev eth0 scope link",
            f"ip route add default via {router} dev eth0",
        ]
        if self.static_neighbours:
            cmds.append(f"ip neigh replace {router} lladdr {self._mac_of(p.node, self._lxc[p.key])} "
                        "dev eth0 nud permanent")
        self._script(p.key, cmds)

    def _configure_external(self) -> None:
        c = self.cluster
        cmds = self._common_sysctls() + [
            f"ip addr add {self.external_ip}/{c.node_network.prefixlen} dev eth0",
            "ip link set eth0 up",
        ]
        cmds += [f"ip route add {n.pod_cidr} via {n.ip} dev eth0" for n in c.nodes]
        self._script(EXTERNAL, cmds)

    @staticmethod
    def _common_sysctls() -> list[str]:
        # IPv6 off (the seed lab is IPv4-only; keeps ND/MLD noise off the BPF hooks)
        return ["sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
                "ip link set lo up"]

    def _script(self, target: str, cmds: list[str]) -> None:
        res = self.exec(target, ["sh", "-ec", "\n".join(cmds)], timeout=30)
        if not res.ok:
            raise TopologyError(f"configuring {target}: exit {res.returncode}: {res.stderr.strip()}\n"
                                + "\n".join(cmds))

    def _ip_batch(self, lines: list[str]) -> None:
        res = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n",
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise TopologyError(f"ip -batch failed: {res.stderr.strip()}")

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
        argv = self._server_argv(app.name, p.name, app.tcp_ports, app.udp_ports, [str(p.ip)])
        self._wait_listening({key: (self._spawn_server(key, argv), app.tcp_ports, app.udp_ports)})
        return t

    def _start_servers(self) -> None:
        wanted: dict[str, tuple[subprocess.Popen, tuple[int, ...], tuple[int, ...]]] = {}
        for p in self.cluster.pods:
            app = app_of_pod(p)
            if app.name == "none":
                continue
            argv = self._server_argv(app.name, p.name, app.tcp_ports, app.udp_ports, [str(p.ip)])
            wanted[p.key] = (self._spawn_server(p.key, argv), app.tcp_ports, app.udp_ports)
        ext = apps.EXTERNAL_APP
        argv = self._server_argv(ext.name, apps.EXTERNAL_HOSTNAME, ext.tcp_ports, ext.udp_ports, [str(self.external_ip)])
        wanted[EXTERNAL] = (self._spawn_server(EXTERNAL, argv), ext.tcp_ports, ext.udp_ports)
        self._wait_listening(wanted)

    @staticmethod
    def _server_argv(app: str, hostname: str, tcp: Iterable[int], udp: Iterable[int],
                     ips: list[str]) -> list[str]:
        argv = [sys.executable, "-m", "harness.apps.server", "--app", app, "--hostname", hostname]
        for port in tcp:
            argv += ["--tcp", str(port)]
        for port in udp:
            argv += ["--udp", str(port)]
        for ip in ips:
            argv += ["--ip", ip]
        return argv

    def _spawn_server(self, target: str, argv: list[str]) -> subprocess.Popen:
        log = self._state.log_dir / f"{target.replace('/', '.')}.log"
        with open(log, "wb") as fh:
            proc = self.popen(target, argv, stdout=subprocess.DEVNULL, stderr=fh, cwd=str(REPO_ROOT))
        self._servers[target] = proc
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

    def set_node_cgroup(self, node_name: str, cgroup_dir: str | os.PathLike) -> None:
        """Run the node's pods' processes in ``cgroup_dir`` (cgroup2): moves the
        running ones (app servers, popen'd) now, and starts later ones there."""
        self.cluster.node(node_name)
        procs_file = Path(cgroup_dir) / "cgroup.procs"
        if not procs_file.exists():
            raise TopologyError(f"{cgroup_dir} is not a cgroup2 directory (no cgroup.procs)")
        self._cgroups[node_name] = str(cgroup_dir)
        for pid, (target, proc) in list(self._procs.items()):
            if proc.poll() is None and self._node_of(target) == node_name:
                procs_file.write_text(f"{pid}\n")

    def _node_of(self, target: str) -> str | None:
        p = self._pods.get(target)
        return p.node if p else (target if target not in (EXTERNAL, LAN) else None)

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
        return ExecResult(tuple(map(str, argv)), proc.returncode, out, err, time.monotonic() - t0, timed_out)

    def popen(self, target: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in ``target``'s namespace (its own session); killed by :meth:`close`."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("env", _clean_env())
        t = self.resolve(target)
        with self._lock:
            proc = subprocess.Popen(self._argv_in(t, argv), **kwargs)
            self._procs[proc.pid] = (t, proc)
            if self._state:
                self._state.add_pid(proc.pid, list(argv))
        return proc

    # -------------------------------------------------------------- teardown

    def _teardown(self, errors: list[str]) -> None:
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
        # 2. links (deleting one end of a veth removes both), bridge, dummies
        for link in reversed(self._links):
            try:
                h = link.intf1.node
                if getattr(h, "shell", None):
                    h.cmd(f"ip link del {link.intf1.name}")
            except Exception as exc:  # keep tearing down
                errors.append(f"link {link}: {exc}")
        self._links.clear()
        for t, h in self._hosts.items():
            if getattr(h, "shell", None) and (t == LAN or t in {n.name for n in self.cluster.nodes}):
                h.cmd(f"ip link del {BRIDGE} 2>/dev/null; ip link del {ROUTER_DEV} 2>/dev/null")
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
        if self._state and not errors:
            self._state.remove()

    # --------------------------------------------------------------- signals

    def _install_signal_handling(self) -> None:
        """SIGTERM becomes SystemExit in the main thread, so ``finally``/``with`` clean up."""
        atexit.register(self.close)
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def _on_term(signum: int, _frame: Any) -> None:
                if not self._closed:  # a second SIGTERM must not interrupt the teardown itself
                    raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, _on_term)

    def _restore_signal_handling(self) -> None:
        atexit.unregister(self.close)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


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
