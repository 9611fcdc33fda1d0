"""The benchmark's kernel objects: namespaces, veths, cgroups, helper processes.

Everything is named ``twb-<random>…`` and removed by :meth:`BenchEnv.close`
(also on errors and Ctrl-C, see ``bench.run``):

* one backend netns: every address of 10.245.0.0/16 is local there
  (``ip route add local … dev lo``), so one listener on 0.0.0.0:8080 serves
  all backends of all services;
* one client netns per configuration (so each has its own source address,
  its own nat table and its own counters at the backend), each linked to the
  backend netns by a veth pair 10.244.<i>.1/30 <-> 10.244.<i>.2/30;
* one cgroup2 directory ``/sys/fs/cgroup/unified/twb-<random>/`` with a child
  per socket-LB configuration and a ``plain`` child without programs.

Only processes this module started are ever signalled.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BenchEnv", "Client", "CGROUP2_ROOT", "sh", "NETNS_DIR"]

CGROUP2_ROOT = Path("/sys/fs/cgroup/unified")
NETNS_DIR = Path("/run/netns")
PREFIX = "twb-"
_CLONE_NEWNET = 0x40000000


def sh(*args: str, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def setns_net(path: str | os.PathLike[str]) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Client:
    """One client configuration: its netns, address and cgroup directory."""

    name: str
    netns: str
    ip: str
    gw: str
    cgroup: Path

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


@dataclass
class BenchEnv:
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)  # children first when removing
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    clients: dict[str, Client] = field(default_factory=dict)
    tmp: Path | None = None

    def __post_init__(self) -> None:
        self.base = f"{PREFIX}{self.suffix}"
        self.backend_netns = f"{self.base}-be"
        self.cgroup_root = CGROUP2_ROOT / self.base

    # -- creation -----------------------------------------------------------------

    def tmpdir(self) -> Path:
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.base}-"))
        return self.tmp

    def _netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def create_backend(self, backend_net: str) -> None:
        self._netns(self.backend_netns)
        sh("ip", "-n", self.backend_netns, "route", "add", "local", backend_net, "dev", "lo")
        for kv in ("net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535"):
            sh("ip", "netns", "exec", self.backend_netns, "sysctl", "-qw", kv)

    def cgroup(self, name: str) -> Path:
        """``twb-<random>/<name>`` (created once)."""
        if not CGROUP2_ROOT.is_dir():
            raise RuntimeError(f"no cgroup2 mount at {CGROUP2_ROOT} (design.md: hybrid layout expected)")
        if self.cgroup_root not in self.cgroups:
            self.cgroup_root.mkdir()
            self.cgroups.append(self.cgroup_root)
        path = self.cgroup_root / name
        if path not in self.cgroups:
            path.mkdir()
            self.cgroups.insert(0, path)
        return path

    def add_client(self, name: str, cgroup: Path, routes: list[str]) -> Client:
        i = len(self.clients)
        netns = self._netns(f"{self.base}-{name}")
        cip, bip = f"10.244.{i}.1", f"10.244.{i}.2"
        sh("ip", "link", "add", "name", "eth0", "netns", netns, "type", "veth",
           "peer", "name", f"c{i}", "netns", self.backend_netns)
        sh("ip", "-n", netns, "addr", "add", f"{cip}/30", "dev", "eth0")
        sh("ip", "-n", self.backend_netns, "addr", "add", f"{bip}/30", "dev", f"c{i}")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.backend_netns, "link", "set", f"c{i}", "up")
        for prefix in routes:
            sh("ip", "-n", netns, "route", "add", prefix, "via", bip)
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
        client = Client(name, netns, cip, bip, cgroup)
        self.clients[name] = client
        return client

    def popen(self, args: list[str], **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def nsenter(self, netns: str) -> list[str]:
        """Command prefix running a program in ``netns`` (no fork of this process)."""
        return ["nsenter", f"--net={NETNS_DIR / netns}"]

    # -- teardown -----------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove everything we created; returns what could not be removed."""
        problems: list[str] = []
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"process {proc.pid} did not exit")
        self.procs.clear()
        for ns in reversed(self.namespaces):
            res = sh("ip", "netns", "del", ns, check=False)
            if res.returncode != 0:
                problems.append(f"netns {ns}: {res.stderr.strip()}")
        self.namespaces.clear()
        for cg in list(self.cgroups):
            for _ in range(100):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                problems.append(f"cgroup {cg} could not be removed")
                continue
            self.cgroups.remove(cg)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return problems


def leftovers() -> tuple[list[str], list[Path]]:
    """``twb-*`` namespaces and cgroups left by a run that was killed (SIGKILL)."""
    ns = sorted(p.name for p in NETNS_DIR.glob(f"{PREFIX}*")) if NETNS_DIR.is_dir() else []
    cgs = sorted(CGROUP2_ROOT.glob(f"{PREFIX}*")) if CGROUP2_ROOT.is_dir() else []
    return ns, cgs


def remove_leftovers() -> list[str]:
    """Delete leftover ``twb-*`` namespaces and (empty) cgroups; returns messages."""
    out = []
    ns, cgs = leftovers()
    for name in ns:
        res = sh("ip", "netns", "del", name, check=False)
        out.append(f"netns {name}: " + ("removed" if res.returncode == 0 else res.stderr.strip()))
    for cg in cgs:
        for child in sorted((p for p in cg.iterdir() if p.is_dir()), reverse=True):
            try:
                child.rmdir()
            except OSError as exc:
                out.append(f"cgroup {child}: {exc} (processes still inside?)")
        try:
            cg.rmdir()
            out.append(f"cgroup {cg}: removed")
        except OSError as exc:
            out.append(f"cgroup {cg}: {exc}")
    return out
