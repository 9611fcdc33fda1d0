"""Throwaway network namespaces for datapath tests: one node, N pods.

Pod ``i`` lives in its own netns with ``eth0`` (a /32 address, default
route via the node over an on-link next hop); its peer ``lxcX`` sits in the
node netns, which routes each pod /32 to its lxc and forwards.
Everything is named ``twt-<suffix>-…`` and removed by :meth:`Topology.destroy`.
"""
from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = "/usr/bin/python3"
NODE_GW = "169.254.1.1"  # pods' next hop; resolved by a static neighbour entry


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Pod:
    name: str
    netns: str
    lxc: str
    ip: ipaddress.IPv4Address

    def exec(self, *cmd: str, check: bool = False, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *cmd],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def ping(self, dst: ipaddress.IPv4Address, timeout_s: int = 1) -> bool:
        return self.exec("ping", "-c1", f"-W{timeout_s}", str(dst)).returncode == 0


@dataclass
class Topology:
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    node_netns: str = ""
    pods: list[Pod] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_netns = f"twt-{self.suffix}-node"

    def create_node(self) -> None:
        sh("ip", "netns", "add", self.node_netns)
        self._namespaces.append(self.node_netns)
        self.node("ip", "link", "set", "lo", "up")
        self.node("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def add_node(self, name: str) -> str:
        """An extra node netns (forwarding on); returns its name."""
        netns = f"twt-{self.suffix}-{name}"
        sh("ip", "netns", "add", netns)
        self._namespaces.append(netns)
        sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return netns

    def link_nodes(self, n1: str, ip1: str, n2: str, ip2: str) -> None:
        """A veth "LAN" ens5<->ens5 between two node namespaces, 192.168.x/24 style."""
        sh("ip", "link", "add", "ens5", "netns", n1, "type", "veth", "peer", "name", "ens5", "netns", n2)
        for ns, ip in ((n1, ip1), (n2, ip2)):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "ens5")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "ens5", "up")

    def route(self, netns: str, prefix: str, via: str) -> None:
        sh("ip", "netns", "exec", netns, "ip", "route", "add", prefix, "via", via)

    def node(self, *cmd: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", netns or self.node_netns, *cmd, check=check)

    def add_pod(self, name: str, ip: str, node: str | None = None) -> Pod:
        node_ns = node or self.node_netns
        idx = len(self.pods)
        netns = f"twt-{self.suffix}-{name}"
        lxc = f"lxc{self.suffix}{idx}"[:15]
        sh("ip", "netns", "add", netns)
        self._namespaces.append(netns)
        sh("ip", "link", "add", lxc, "netns", node_ns, "type", "veth",
           "peer", "name", "eth0", "netns", netns)
        pod = Pod(name, netns, lxc, ipaddress.IPv4Address(ip))
        pod.exec("ip", "link", "set", "lo", "up", check=True)
        pod.exec("ip", "addr", "add", f"{ip}/32", "dev", "eth0", check=True)
        pod.exec("ip", "link", "set", "eth0", "up", check=True)
        pod.exec("ip", "route", "add", NODE_GW, "dev", "eth0", "scope", "link", check=True)
        pod.exec("ip", "route", "add", "default", "via", NODE_GW, "dev", "eth0", check=True)
        self.node("ip", "link", "set", lxc, "up", netns=node_ns)
        self.node("ip", "route", "add", f"{ip}/32", "dev", lxc, netns=node_ns)
        # static neighbours both ways (Cilium answers ARP in BPF; we need no ARP)
        lxc_mac = _mac(self.node("ip", "-j", "link", "show", lxc, netns=node_ns).stdout)
        pod_mac = _mac(pod.exec("ip", "-j", "link", "show", "eth0", check=True).stdout)
        pod.exec("ip", "neigh", "replace", NODE_GW, "lladdr", lxc_mac, "dev", "eth0",
                 "nud", "permanent", check=True)
        self.node("ip", "neigh", "replace", ip, "lladdr", pod_mac, "dev", lxc, "nud", "permanent",
                  netns=node_ns)
        self.pods.append(pod)
        return pod

    def destroy(self) -> None:
        for ns in reversed(self._namespaces):
            # kill leftover processes we started in the namespace, then remove it
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()

    @property
    def node_netns_path(self) -> Path:
        return Path("/run/netns") / self.node_netns


def _mac(ip_json: str) -> str:
    return str(json.loads(ip_json)[0]["address"])


# A tiny TCP/UDP server and client run inside pod namespaces.
SERVER = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
if proto == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); print("ready", flush=True)
    while True:
        c, _ = s.accept(); data = c.recv(100); c.sendall(b"ok:" + data); c.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(100); s.sendto(b"ok:" + data, addr)
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
try:
    if proto == "tcp":
        s = socket.socket(); s.settimeout(1.5)
        if sport: s.bind(("0.0.0.0", sport))
        s.connect((host, port)); s.sendall(b"hi"); print(s.recv(100).decode())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
        if sport: s.bind(("0.0.0.0", sport))
        s.sendto(b"hi", (host, port)); print(s.recv(100).decode())
except OSError as e:
    print("error:", type(e).__name__); sys.exit(1)
"""


def start_server(pod: Pod, proto: str, port: int) -> subprocess.Popen[str]:
    proc = pod.popen(PYTHON, "-c", SERVER, proto, str(port))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"server in {pod.name} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


def connect(pod: Pod, proto: str, dst: ipaddress.IPv4Address, port: int, sport: int = 0) -> bool:
    res = pod.exec(PYTHON, "-c", CLIENT, proto, str(dst), str(port), str(sport), timeout=10)
    return res.returncode == 0 and res.stdout.startswith("ok:")


if __name__ == "__main__":  # manual smoke: build, ping, destroy
    t = Topology()
    try:
        t.create_node()
        a = t.add_pod("a", "10.200.0.1")
        b = t.add_pod("b", "10.200.0.2")
        print("ping a->b", a.ping(b.ip))
        srv = start_server(b, "tcp", 8080)
        print("tcp a->b", connect(a, "tcp", b.ip, 8080))
        srv.kill()
    finally:
        t.destroy()
        print(sh("ip", "netns", "list").stdout, file=sys.stderr)
