"""Environment for socket-LB tests: a node, a client pod in our own cgroup2
directory, two backend pods, servers that answer with their own address, and
a client that reports what the application sees (peer, own address, reply).
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from twin.model.enums import Protocol
from twin.semantics.tables import LBBackend, LBService, LBTable

from topology import PYTHON, Pod, Topology

CGROUP2_ROOT = Path("/sys/fs/cgroup/unified")
VIP = ipaddress.IPv4Address("10.96.0.10")
VIP_PORT = 80
TARGET_PORT = 8080


# Answers every request with the server's own address (the backend's IP).
SERVER = r"""
import socket, socketserver, sys, threading
proto, port = sys.argv[1], int(sys.argv[2])
class TCP(socketserver.BaseRequestHandler):
    def handle(self):
        me = self.request.getsockname()[0].encode()
        while True:
            data = self.request.recv(100)
            if not data:
                return
            self.request.sendall(me)
class UDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(MY_IP, self.client_address)  # bound to 0.0.0.0: say who we are
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
if proto == "tcp":
    srv = socketserver.ThreadingTCPServer(("0.0.0.0", port), TCP)
else:
    MY_IP = sys.argv[3].encode()
    srv = socketserver.UDPServer(("0.0.0.0", port), UDP)
print("ready", flush=True)
srv.serve_forever()
"""

# Commands on stdin, one JSON answer per line on stdout.
CLIENT = r"""
import errno, json, socket, sys
socks = {}
def addr(a): return [a[0], a[1]]
def err(e): return {"error": errno.errorcode.get(e.errno, str(e.errno))}
for line in sys.stdin:
    cmd = json.loads(line)
    op, out = cmd["op"], None
    try:
        if op == "tcp_many":
            res = []
            for _ in range(cmd["n"]):
                s = socket.socket(); s.settimeout(2)
                try:
                    s.connect((cmd["host"], cmd["port"]))
                    s.sendall(b"hi")
                    res.append({"reply": s.recv(100).decode(), "peer": addr(s.getpeername()),
                                "sock": addr(s.getsockname())})
                except OSError as e:
                    res.append(err(e))
                finally:
                    s.close()
            out = res
        elif op == "tcp_open":
            s = socket.socket(); s.settimeout(2)
            s.connect((cmd["host"], cmd["port"])); socks[cmd["name"]] = s
            s.sendall(b"hi")
            out = {"reply": s.recv(100).decode(), "peer": addr(s.getpeername())}
        elif op == "udp_connect":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.connect((cmd["host"], cmd["port"])); socks[cmd["name"]] = s
            s.send(b"hi")
            out = {"reply": s.recv(100).decode(), "peer": addr(s.getpeername())}
        elif op == "again":
            s = socks[cmd["name"]]
            s.send(b"hi")
            out = {"reply": s.recv(100).decode(), "peer": addr(s.getpeername())}
        elif op == "recv":
            out = {"reply": socks[cmd["name"]].recv(100).decode()}
        elif op == "udp_many":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            res = []
            for _ in range(cmd["n"]):
                try:
                    s.sendto(b"hi", (cmd["host"], cmd["port"]))
                    data, src = s.recvfrom(100)
                    res.append({"reply": data.decode(), "src": addr(src)})
                except OSError as e:
                    res.append(err(e))
            s.close()
            out = res
    except OSError as e:
        out = err(e)
    print(json.dumps(out), flush=True)
"""


@dataclass
class Client:
    """A long-lived client process in the client pod's netns and our cgroup."""

    proc: subprocess.Popen[str]

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


@dataclass
class LBEnv:
    topo: Topology
    client_pod: Pod
    backends: list[Pod]
    cgroup: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start_servers(self, port: int = TARGET_PORT) -> None:
        for be in self.backends:
            for proto in ("tcp", "udp"):
                args = [PYTHON, "-c", SERVER, proto, str(port), str(be.ip)]
                proc = be.popen(*args)
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    proc.kill()
                    raise RuntimeError(f"{proto} server in {be.name} did not start")
                self.procs.append(proc)

    def client(self) -> Client:
        """A client process in the client netns, moved into our cgroup before exec."""
        procs_file = str(self.cgroup / "cgroup.procs")

        def join_cgroup() -> None:
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))

        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.client_pod.netns, PYTHON, "-u", "-c", CLIENT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=join_cgroup,
        )
        self.procs.append(proc)
        return Client(proc)

    def table(self, states: Sequence[str] | None = None, protocols: Sequence[Protocol] = (Protocol.TCP, Protocol.UDP),
              backends: Sequence[Pod] | None = None) -> LBTable:
        """VIP:80 -> backends:8080 for each protocol; ``states`` per backend (default active)."""
        bes_pods = self.backends if backends is None else list(backends)
        states = list(states) if states is not None else ["active"] * len(bes_pods)
        services = []
        for proto in protocols:
            bes = tuple(LBBackend(p.ip, TARGET_PORT, proto, f"default/{p.name}", st)
                        for p, st in zip(bes_pods, states))
            services.append(LBService("default/svc", VIP, VIP_PORT, proto, "ClusterIP", bes))
        return LBTable(tuple(services))

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        self.topo.destroy()
        remove_cgroup(self.cgroup)


def make_cgroup() -> Path:
    path = CGROUP2_ROOT / f"twt-{secrets.token_hex(3)}"
    path.mkdir()
    return path


def remove_cgroup(path: Path) -> None:
    """Remove our cgroup; any process still in it is one of ours (killed first)."""
    if not path.exists():
        return
    for pid in (path / "cgroup.procs").read_text().split():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError:
            import time
            time.sleep(0.05)
    path.rmdir()


def chi_square_p_uniform(counts: Sequence[int]) -> float:
    """p-value of a chi-square test of ``counts`` against uniform (df = k-1; exact for k = 2, 3)."""
    n, k = sum(counts), len(counts)
    expected = n / k
    stat = sum((c - expected) ** 2 / expected for c in counts)
    if k == 2:
        return math.erfc(math.sqrt(stat / 2))
    if k == 3:
        return math.exp(-stat / 2)
    raise ValueError("only 2 or 3 categories")
