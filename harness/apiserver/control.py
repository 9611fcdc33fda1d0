"""The run's control plane: etcd and the Lease API server in the topology's apiserver host.

Usage::

    with RealTopology(cluster, l2=True) as topo, ControlPlane(topo, run_dir) as cp:
        api = kubernetes.client.CoordinationV1Api(ApiClient(Configuration(host=cp.url)))  # from a node netns
        ...
        cp.lease_log()      # every create/update/delete, t on CLOCK_MONOTONIC
        cp.restart_api()    # the API process only; etcd keeps the leases

Both processes are started with the topology's ``popen`` (pids in the run's
state file, killed by ``twin cleanup`` after a crash); etcd's data directory
is recorded there too and removed by :meth:`ControlPlane.close`, by the
topology's teardown, or by ``twin cleanup``.  The audit log stays in
``run_dir`` (the caller's) and is also kept in memory at close.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.apiserver.etcd import Etcd, ns_http
from harness.errors import HarnessError
from harness.topology.plan import APISERVER
from twin.model import topology as topodefaults

__all__ = ["ControlPlane", "ControlPlaneError"]


class ControlPlaneError(HarnessError):
    """The API server would not start or answer."""


class ControlPlane:
    """etcd + the Lease API (``python -m harness.apiserver``) in ``topo``'s apiserver namespace."""

    def __init__(self, topo: Any, run_dir: Path | str, ready_timeout_s: float = 20.0) -> None:
        if not getattr(topo.plan, "l2", False):
            raise ControlPlaneError("ControlPlane needs a topology built with l2=True (the apiserver host)")
        self.topo = topo
        self.run_dir = Path(run_dir)
        self.ready_timeout_s = ready_timeout_s
        self.ip, self.port = str(topodefaults.APISERVER_IP), topodefaults.APISERVER_PORT
        self.url = f"http://{self.ip}:{self.port}"
        self.audit_path = self.run_dir / f"apiserver-{topo.run_id}.audit.jsonl"
        self.api_log_path = self.run_dir / f"apiserver-{topo.run_id}.log"
        self.etcd: Etcd | None = None
        self.data_dir: Path | None = None
        self._api: subprocess.Popen | None = None
        self._closed = False
        self._final_log: list[dict] | None = None
        self.api_restarts = 0

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> "ControlPlane":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self.topo.make_run_dir(self.run_dir, "etcd-")
            self.etcd = Etcd(self.topo, APISERVER, self.data_dir / "data",
                             self.run_dir / f"etcd-{self.topo.run_id}.log", name=f"twn-{self.topo.run_id}")
            self.etcd.start(self.ready_timeout_s)
            self._start_api()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def api_pid(self) -> int | None:
        return self._api.pid if self._api is not None else None

    @property
    def etcd_pid(self) -> int | None:
        return self.etcd.proc.pid if self.etcd is not None and self.etcd.proc is not None else None

    def _start_api(self) -> None:
        argv = [sys.executable, "-m", "harness.apiserver", "--listen", f"{self.ip}:{self.port}",
                "--etcd", self.etcd.url, "--audit", str(self.audit_path)]
        from harness.topology.build import REPO_ROOT

        with open(self.api_log_path, "ab") as log:
            self._api = self.topo.popen(APISERVER, argv, stdout=subprocess.DEVNULL, stderr=log, cwd=str(REPO_ROOT))
        netns = self.topo.apiserver_netns
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self._api.poll() is not None:
                raise ControlPlaneError(f"the API server exited with {self._api.returncode}: {self._log_tail()}")
            try:
                code, body = ns_http(netns, "GET", self.ip, self.port, "/version", timeout_s=1.0)
                if code == 200:
                    return
                last = f"HTTP {code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise ControlPlaneError(f"the API server did not answer {self.url}/version within "
                                f"{self.ready_timeout_s}s ({last}): {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.api_log_path.read_text(errors="replace")[-1500:].strip() or "(empty log)"
        except OSError:
            return "(no log)"

    def restart_api(self) -> float:
        """Kill the API server process (SIGKILL, a crash) and start it again; etcd keeps the data.
        Returns the monotonic time of the kill."""
        if self._closed or self._api is None:
            raise ControlPlaneError("restart_api(): the control plane is not running")
        proc, self._api = self._api, None
        import os
        import signal

        t = time.monotonic()
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.topo.stop(proc)
        self._start_api()
        self.api_restarts += 1
        return t

    def close(self) -> None:
        """Stop the API server, then etcd (by pid), remove etcd's data. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for what, fn in (("API server", self._stop_api), ("etcd", self._stop_etcd), ("etcd data", self._rm_data)):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep tearing down, report at the end
                errors.append(f"{what}: {exc}")
        try:
            self._final_log = self._read_log()
        except OSError:
            self._final_log = []
        if errors:
            raise ControlPlaneError("closing the control plane: " + "; ".join(errors))

    def _stop_api(self) -> None:
        if self._api is not None:
            self.topo.stop(self._api)
            self._api = None

    def _stop_etcd(self) -> None:
        if self.etcd is not None:
            self.etcd.stop()

    def _rm_data(self) -> None:
        if self.data_dir is not None and self.data_dir.exists():
            self.topo.remove_run_dir(self.data_dir)

    # ----------------------------------------------------------------- logs

    def _read_log(self) -> list[dict]:
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now (the writer flushes whole lines)
        return out

    def lease_log(self) -> list[dict]:
        """Every successful create/update/delete so far, in order: ``{"t" (CLOCK_MONOTONIC s), "verb",
        "namespace", "lease", "holder", "previous_holder", "transitions", "resourceVersion", "renewTime"}``."""
        if self._final_log is not None:
            return list(self._final_log)
        return self._read_log()
