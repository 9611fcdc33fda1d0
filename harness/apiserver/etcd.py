"""Debian's etcd (``/usr/bin/etcd``, 3.4) run inside one of the topology's namespaces.

A single member listening on that namespace's loopback only (client
``http://127.0.0.1:2379``, peer ``http://127.0.0.1:2380``: the namespace is the
run's own, so fixed ports never collide), its data in a temporary directory
recorded in the run's state file.  Started through
:meth:`~harness.topology.RealTopology.popen` (so the pid is recorded and
``twin cleanup`` finds it after a crash), ready once ``GET /health`` answers
``{"health":"true"}``, stopped by pid (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.netns import entered_netns

__all__ = ["Etcd", "EtcdUnavailable", "CLIENT_URL", "ns_http", "ETCD_BINARY"]

ETCD_BINARY = "/usr/bin/etcd"
CLIENT_URL = "http://127.0.0.1:2379"
PEER_URL = "http://127.0.0.1:2380"


class EtcdUnavailable(HarnessError):
    """etcd is missing, would not start, or did not become healthy."""


def ns_http(netns: str, method: str, host: str, port: int, path: str, body: bytes | None = None,
            timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One HTTP request from inside ``netns`` (this thread enters it for the duration)."""
    with entered_netns(netns):
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            conn.request(method, path, body, {"Content-Type": "application/json"} if body is not None else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


class Etcd:
    """One etcd member in ``target``'s namespace of ``topo``; :meth:`start`, :meth:`stop`."""

    def __init__(self, topo: Any, target: str, data_dir: Path, log_path: Path, name: str = "twin") -> None:
        self.topo, self.target, self.data_dir, self.log_path, self.name = topo, target, Path(data_dir), \
            Path(log_path), name
        self.proc: subprocess.Popen | None = None
        self.url = CLIENT_URL

    @property
    def argv(self) -> list[str]:
        return [ETCD_BINARY, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", CLIENT_URL, "--advertise-client-urls", CLIENT_URL,
                "--listen-peer-urls", PEER_URL, "--initial-advertise-peer-urls", PEER_URL,
                "--initial-cluster", f"{self.name}={PEER_URL}", "--initial-cluster-state", "new",
                "--enable-v2=false", "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]

    def start(self, timeout_s: float = 20.0) -> "Etcd":
        if not Path(ETCD_BINARY).exists() or not shutil.which(ETCD_BINARY):
            raise EtcdUnavailable(f"{ETCD_BINARY} not found: install Debian's etcd-server (the Lease API's store)")
        with open(self.log_path, "ab") as log:
            self.proc = self.topo.popen(self.target, self.argv, stdout=subprocess.DEVNULL, stderr=log)
        netns = self.topo.netns_path(self.target)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EtcdUnavailable(f"etcd exited with {self.proc.returncode} while starting: {self.log_tail()}")
            try:
                code, body = ns_http(netns, "GET", "127.0.0.1", 2379, "/health", timeout_s=1.0)
                if code == 200 and json.loads(body).get("health") == "true":
                    return self
                last = f"HTTP {code}: {body[:200]!r}"
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise EtcdUnavailable(f"etcd not healthy after {timeout_s}s ({last}): {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:].strip() or "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s (by pid, through the topology that recorded it)."""
        if self.proc is not None:
            self.topo.stop(self.proc, grace_s=5.0)
            self.proc = None
