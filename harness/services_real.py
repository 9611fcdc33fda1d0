"""Services on the real side: the endpoint pipeline (kubelet-style readiness
probers on each backend's node → endpoint states → every node agent's LB
maps), and the traffic steps (requests, loop, hold/check, kill/restart,
syscalls) run with real processes inside the pods.

Stage events are logged with CLOCK_MONOTONIC relative to the scenario start,
the same clock the in-pod clients print, so the outage window is measured
from the kill to the last failed request without clock skew.
"""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from harness.topology import REPO_ROOT
from harness.errors import HarnessError
from twin.model.observations import HoldResult, RequestRecord, SyscallFacts
from twin.model.scenario import EXTERNAL, Hold, Traffic, service_key


def first_lb_ip(cluster, key: str) -> str:
    """The first LoadBalancer IP LB-IPAM gives service ``key`` in ``cluster`` (what traffic
    ``from: external`` is sent to); a service without one is an error naming it."""
    from twin.semantics.lbipam import allocate
    alloc = allocate(cluster)
    ips = alloc.ips.get(key) or ()
    if not ips:
        why = alloc.reasons.get(key, "no LoadBalancer IP")
        raise HarnessError(f"service {key} has no LoadBalancer IP to send external traffic to ({why})")
    return str(ips[0])


def _client_argv(mode: str, ip: str, t: Traffic | Hold, timeout: float) -> list[str]:
    argv = [sys.executable, "-m", "harness.apps.client", mode, "--to", ip, "--port", str(t.port), "--timeout", str(timeout)]
    if isinstance(t, Hold):
        return argv + ["--backend", t.backend.split("/")[-1]]
    argv += ["--kind", t.kind, "--interval", str(t.interval_s), "--path", t.path, "--method", t.method]
    return argv + (["--duration", str(t.duration_s)] if mode == "loop" else ["--count", str(t.count)])


class RealTraffic:
    def __init__(self, rc, t0: float, settings):
        self.rc, self.t0, self.settings = rc, t0, settings
        self.rows: list[RequestRecord] = []
        self.loops: dict[str, tuple[subprocess.Popen, Traffic]] = {}
        self.holds: dict[str, tuple[subprocess.Popen, Hold, queue.Queue]] = {}
        self.hold_results: list[HoldResult] = []
        self.syscall_results: list[SyscallFacts] = []

    def _service(self, dst: str):
        return self.rc.cluster.service(service_key(dst))

    def _frontend(self, t: Traffic) -> tuple[str, str]:
        """(where the client runs, the IP it sends to): a pod and the ClusterIP, or the external
        host on the LAN and the service's first LoadBalancer IP (north-south through the
        node that answers ARP for it)."""
        svc = self._service(t.dst)
        if t.src == EXTERNAL:
            return EXTERNAL, first_lb_ip(self.rc.cluster, svc.key)
        return t.src, str(svc.cluster_ip)

    def _collect(self, t: Traffic, out: str, ip: str | None = None) -> None:
        svc = self._service(t.dst)
        ip = ip or str(svc.cluster_ip)
        for line in out.splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            self.rows.append(RequestRecord(
                name=t.name, i=r["i"], t=round(r["t"] - self.t0, 6), service=svc.key, frontend=f"{ip}:{t.port}",
                backend=f"{svc.namespace}/{r['backend']}" if r.get("backend") else None,
                outcome=r["outcome"], status=r.get("status")))

    def _popen(self, pod: str, argv: list[str], **kw) -> subprocess.Popen:
        return self.rc.topo.popen(pod, argv, text=True, cwd=str(REPO_ROOT), **kw)

    def requests(self, t: Traffic) -> None:
        where, ip = self._frontend(t)
        proc = self._popen(where, _client_argv("requests", ip, t, self.settings.request_timeout_s))
        out, err = proc.communicate(timeout=t.count * (t.interval_s + self.settings.request_timeout_s) + 30)
        if proc.returncode != 0:
            raise HarnessError(f"client for {t.name} failed: {err.strip()[:500]}")
        self._collect(t, out, ip)

    def start_loop(self, t: Traffic) -> None:
        where, ip = self._frontend(t)
        self.loops[t.name] = (self._popen(where, _client_argv("loop", ip, t, self.settings.request_timeout_s)), t, ip)

    def await_loop(self, name: str) -> None:
        proc, t, ip = self.loops.pop(name)
        out, err = proc.communicate(timeout=t.duration_s + 60)
        if proc.returncode != 0:
            raise HarnessError(f"client loop {name} failed: {err.strip()[:500]}")
        self._collect(t, out, ip)

    def hold(self, h: Hold, step: int = -1) -> None:
        svc = self._service(h.dst)
        proc = self._popen(h.src, _client_argv("hold", str(svc.cluster_ip), h, self.settings.request_timeout_s),
                           stdin=subprocess.PIPE)
        q: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [q.put(line) for line in proc.stdout], daemon=True).start()
        first = json.loads(q.get(timeout=60))
        self.holds[h.name] = (proc, h, q)
        if first.get("event") != "held":
            self.hold_results.append(HoldResult(h.name, None, "closed", 0.0,
                                                why=f"no connection landed on {h.backend} in {first.get('attempts')} tries", step=step))

    def check(self, name: str, step: int = -1) -> None:
        proc, h, q = self.holds[name]
        if proc.poll() is not None:
            self.hold_results.append(HoldResult(name, h.backend, "closed", round(time.monotonic() - self.t0, 6), step=step))
            return
        proc.stdin.write("check\n")
        proc.stdin.flush()
        r = json.loads(q.get(timeout=10))
        self.hold_results.append(HoldResult(name, h.backend, r["state"], round(r["t"] - self.t0, 6), step=step))

    def syscalls(self, t: Traffic) -> None:
        """strace curl (connect, getsockname) and a client's getpeername; tcpdump inside the pod."""
        svc = self._service(t.dst)
        vip, port = str(svc.cluster_ip), t.port
        cap = self._popen(t.src, ["tcpdump", "-i", "any", "-nn", "-l", "-q", "ip"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in cap.stderr], daemon=True).start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if "listening on" in lines.get(timeout=0.2):
                    break
            except queue.Empty:
                continue
        curl = self.rc.topo.exec(t.src, ["strace", "-f", "-e", "trace=connect,getsockname,getpeername",
                                         "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{vip}:{port}/"], timeout=20)
        peer = self.rc.topo.exec(t.src, ["strace", "-f", "-e", "trace=connect,getpeername", sys.executable, "-c",
                                         f"import socket; s = socket.create_connection(({vip!r}, {port}), 2); s.getpeername(); s.close()"],
                                 timeout=20)
        time.sleep(0.3)
        cap.send_signal(signal.SIGINT)
        try:
            out, _ = cap.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            cap.kill()
            out, _ = cap.communicate()
        ips = set()
        for a, b in re.findall(r"IP (\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > (\d+\.\d+\.\d+\.\d+)(?:\.\d+)?:", out):
            ips |= {a, b}

        def calls(text: str, name: str) -> list[str]:
            return [f"{ip}:{p}" for p, ip in re.findall(
                name + r"\(\d+, \{sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\(\"([\d.]+)\"\)", text)]

        connects = calls(curl.stderr, "connect")
        names = calls(curl.stderr, "getsockname")
        peers = calls(peer.stderr, "getpeername")
        self.syscall_results.append(SyscallFacts(
            name=t.name, connect=connects[0] if connects else None,
            getsockname_ip=names[0].split(":")[0] if names else None,
            getpeername=peers[0] if peers else None,
            capture_ips=tuple(sorted(ips)), capture_has_frontend=vip in ips,
            outcome="answered" if curl.stdout.strip() == "200" else f"curl {curl.stdout.strip() or curl.returncode}",
            evidence=tuple([ln for ln in (curl.stderr + peer.stderr).splitlines()
                            if ln.startswith(("connect(", "getsockname(", "getpeername(", "[pid")) and "AF_INET" in ln][:8]),
        ))

    def close(self) -> None:
        for proc, *_ in list(self.loops.values()) + list(self.holds.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
