"""``iperf3`` between two pods: the real side of a ``throughput`` step.

The server (``iperf3 -s -1 -J``, bound to the server pod's IP) runs in the
``to`` pod; once it listens, the client (``iperf3 -c IP -J``) runs in the
``from`` pod with ``-R`` for ``direction: reverse`` (the server pod sends: the
seed's ``netperf -t TCP_MAERTS``).  Both are started through the topology
(:meth:`~harness.topology.RealTopology.popen`): their pids are in the run's
state file, so ``twin cleanup`` ends them after a crash, and the topology's
close ends them on error and Ctrl-C.  :class:`IperfRun` stops both itself
when the measurement ends (or fails).

What is read from iperf3's JSON (:func:`parse_iperf_json`, pure):

* goodput: ``end.sum_received.bits_per_second`` (payload at the receiver)
* per stream: ``end.streams[i].receiver.bits_per_second``, in stream order
* per interval: the receiver's ``intervals[k].sum`` (the client's own
  intervals for ``-R``; the server's, from ``--get-server-output``, for a
  forward run, where the client is the sender)
* retransmits: ``end.sum_sent.retransmits`` (the sender's TCP retransmits)
* CPU: ``end.cpu_utilization_percent`` ``host_total`` + ``remote_total`` (user + system
  time of each iperf3 process over the test) as CPU seconds over the receiver's duration

A failed run raises :class:`IperfError` with iperf3's own ``error`` field.
Several runs at once on one server pod get distinct ports (:class:`PortBook`).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

__all__ = ["IperfError", "IperfResult", "IperfRun", "PortBook", "parse_iperf_json", "client_argv", "server_argv"]

#: how long the server may take to listen
LISTEN_TIMEOUT_S = 5.0
#: beyond the test's duration: connection set-up, result exchange, a loaded machine
CLIENT_SLACK_S = 15.0


class IperfError(HarnessError):
    """iperf3 did not produce a measurement (its own error message included)."""


@dataclass(frozen=True)
class IperfResult:
    """One iperf3 measurement (receiver side), bit/s."""

    goodput_bps: float
    streams_bps: tuple[float, ...]
    #: (t0, t1, bit/s) of each sampling interval, seconds since the test started
    intervals: tuple[tuple[float, float, float], ...]
    retransmits: int | None
    seconds: float  # the receiver's measured duration
    reverse: bool
    argv: tuple[str, ...] = ()
    port: int = 0
    server_ip: str = ""
    wall_s: float = 0.0
    #: CPU seconds of both iperf3 processes (None when iperf3 did not report it)
    cpu_s: float | None = None


def server_argv(ip: str, port: int) -> list[str]:
    """One test, then exit; bound to the pod's own address; JSON (its intervals feed forward runs)."""
    return ["iperf3", "-s", "-1", "-J", "-p", str(port), "-B", str(ip)]


def client_argv(ip: str, port: int, duration_s: float, interval_s: float, parallel: int, reverse: bool) -> list[str]:
    argv = ["iperf3", "-c", str(ip), "-p", str(port), "-t", f"{duration_s:g}", "-i", f"{interval_s:g}",
            "-P", str(parallel), "-J", "--get-server-output"]
    return argv + (["-R"] if reverse else [])


def _receiver_intervals(doc: dict) -> list[dict]:
    """The receiver's interval sums: the client's own when it received (``sum.sender`` false),
    else the server's (``server_output_json``)."""
    mine = doc.get("intervals") or []
    if mine and not (mine[0].get("sum") or {}).get("sender", True):
        return mine
    server = doc.get("server_output_json") or {}
    return server.get("intervals") or mine


def parse_iperf_json(text: str, what: str = "iperf3") -> IperfResult:
    """iperf3 ``-J`` output → :class:`IperfResult`; :class:`IperfError` with iperf3's own
    ``error`` when it failed, or when the output is not iperf3's JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise IperfError(f"{what}: no JSON output ({text.strip()[:300] or 'empty'})") from None
    if not isinstance(doc, dict):
        raise IperfError(f"{what}: unexpected JSON output: {text.strip()[:200]}")
    if doc.get("error"):
        raise IperfError(f"{what}: iperf3 error: {doc['error']}")
    end = doc.get("end") or {}
    recv = end.get("sum_received")
    if not recv or "bits_per_second" not in recv:
        raise IperfError(f"{what}: iperf3 output has no end.sum_received (the test did not complete)")
    streams = tuple(float((s.get("receiver") or {}).get("bits_per_second", 0.0)) for s in end.get("streams") or [])
    ivals = []
    for iv in _receiver_intervals(doc):
        s = iv.get("sum") or {}
        if "start" in s and "end" in s and not s.get("omitted"):
            ivals.append((round(float(s["start"]), 6), round(float(s["end"]), 6), float(s.get("bits_per_second", 0.0))))
    sent = end.get("sum_sent") or {}
    retr = sent.get("retransmits")
    reverse = bool((doc.get("start") or {}).get("test_start", {}).get("reverse", 0))
    secs = float(recv.get("seconds", 0.0))
    cpu = end.get("cpu_utilization_percent") or {}
    cpu_s = None
    if isinstance(cpu.get("host_total"), (int, float)) and isinstance(cpu.get("remote_total"), (int, float)):
        cpu_s = round((cpu["host_total"] + cpu["remote_total"]) / 100.0 * secs, 6)
    return IperfResult(float(recv["bits_per_second"]), streams, tuple(ivals),
                       int(retr) if retr is not None else None, secs, reverse, cpu_s=cpu_s)


def _listening(pid: int, port: int) -> bool:
    """A TCP socket of ``port`` in LISTEN in ``pid``'s network namespace."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        f = line.split()
        if len(f) > 3 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


class _Drain(threading.Thread):
    """Reads a process's stdout and stderr to the end (no pipe can fill up while it runs)."""

    def __init__(self, proc: subprocess.Popen, name: str):
        super().__init__(name=name, daemon=True)
        self.proc, self.out, self.err = proc, "", ""

    def run(self) -> None:
        try:
            self.out, self.err = self.proc.communicate()
        except (OSError, ValueError):  # the pipes were closed by a stop()
            pass


class PortBook:
    """Ports in use per server pod, so runs at the same time never share one."""

    def __init__(self) -> None:
        self._used: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def take(self, pod: str, wanted: int) -> int:
        with self._lock:
            used = self._used.setdefault(pod, set())
            port = wanted
            while port in used:
                port = port + 1 if port < 65535 else 1024
                if port == wanted:
                    raise IperfError(f"no free port for another iperf3 server in {pod}")
            used.add(port)
            return port

    def give(self, pod: str, port: int) -> None:
        with self._lock:
            self._used.get(pod, set()).discard(port)


@dataclass
class IperfRun:
    """One iperf3 measurement between two pods of a topology; :meth:`start` returns at once,
    :meth:`wait` blocks until the result (and stops both processes whatever happens)."""

    topo: object
    server_pod: str
    server_ip: str
    client_pod: str
    port: int
    duration_s: float
    interval_s: float = 1.0
    parallel: int = 1
    reverse: bool = True
    _server: subprocess.Popen | None = field(default=None, repr=False)
    _client: subprocess.Popen | None = field(default=None, repr=False)
    _drains: list = field(default_factory=list, repr=False)
    _t0: float = 0.0

    @property
    def argv(self) -> list[str]:
        return client_argv(self.server_ip, self.port, self.duration_s, self.interval_s, self.parallel, self.reverse)

    def start(self) -> "IperfRun":
        try:
            self._server = self.topo.popen(self.server_pod, server_argv(self.server_ip, self.port), text=True)
            sdrain = _Drain(self._server, f"iperf3-server-{self.port}")
            sdrain.start()
            self._drains.append(sdrain)
            deadline = time.monotonic() + LISTEN_TIMEOUT_S
            while not _listening(self._server.pid, self.port):
                if self._server.poll() is not None:
                    sdrain.join(1.0)
                    raise IperfError(f"iperf3 server in {self.server_pod} ({self.server_ip}:{self.port}) exited "
                                     f"with {self._server.returncode}: {_error_of(sdrain.out, sdrain.err)}")
                if time.monotonic() > deadline:
                    raise IperfError(f"iperf3 server in {self.server_pod} not listening on "
                                     f"{self.server_ip}:{self.port} after {LISTEN_TIMEOUT_S:g} s")
                time.sleep(0.02)
            self._t0 = time.monotonic()
            self._client = self.topo.popen(self.client_pod, self.argv, text=True)
            cdrain = _Drain(self._client, f"iperf3-client-{self.port}")
            cdrain.start()
            self._drains.append(cdrain)
        except BaseException:
            self.close()
            raise
        return self

    def wait(self) -> IperfResult:
        """The measurement; :class:`IperfError` when iperf3 failed or hung."""
        what = f"iperf3 {self.client_pod} → {self.server_pod} ({self.server_ip}:{self.port})"
        try:
            cdrain = self._drains[-1]
            cdrain.join(self.duration_s + CLIENT_SLACK_S - (time.monotonic() - self._t0))
            if cdrain.is_alive():
                raise IperfError(f"{what}: no result after {self.duration_s + CLIENT_SLACK_S:g} s; stopped")
            wall = time.monotonic() - self._t0
            res = parse_iperf_json(cdrain.out, what) if cdrain.out.strip() or not cdrain.err.strip() else None
            if res is None:
                raise IperfError(f"{what}: exit {self._client.returncode}: {cdrain.err.strip()[:300]}")
            return IperfResult(res.goodput_bps, res.streams_bps, res.intervals, res.retransmits, res.seconds,
                               res.reverse, tuple(self.argv), self.port, self.server_ip, round(wall, 3), res.cpu_s)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the client and the server (idempotent): SIGTERM to what still runs (the server of
        ``-1`` has usually exited after its test), let the readers see the end of the output,
        then the topology forgets the pids."""
        procs = [p for p in (self._client, self._server) if p is not None]
        if self._server is not None and self._server.poll() is None:
            try:
                self._server.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        for d in self._drains:
            d.join(3.0)
        for proc in procs:
            try:
                self.topo.stop(proc)  # SIGKILL if SIGTERM was not enough; drops the pid from the state file
            except Exception:  # noqa: BLE001 - the topology is already closed: it ended the process itself
                pass
        self._client = self._server = None


def _error_of(out: str, err: str) -> str:
    try:
        doc = json.loads(out)
        if isinstance(doc, dict) and doc.get("error"):
            return f"iperf3 error: {doc['error']}"
    except ValueError:
        pass
    return (err or out).strip()[:300] or "no output"
