"""The per-node elector process of the L2 announcer: client-go's leader election
for every Lease the node is a candidate for, on the ``kubernetes`` Python client.

    python -m datapath.agent.l2announcer --node k8s-w1 --api http://192.168.10.250:6443 \\
        --lease-duration 3 --renew-deadline 1 --retry-period 0.2 --qps 5 --burst 10

The node agent starts it inside the node's network namespace, so its API
traffic crosses the node's links: a partition or a downed interface really
cuts it off.  It is a process of its own (not a thread of the agent) so that
the "agent-kill" fault can SIGKILL it like the real agent dies.

Protocol (line-delimited JSON, UTF-8):

* **stdin**, from the agent: ``{"leases": ["cilium-l2announce-default-svc1", ...]}``
  — the complete set of Leases this node is a candidate for (replace
  semantics).  New names get an elector thread; names no longer listed stop
  theirs, and a holder releases its Lease first (client-go's
  ``ReleaseOnCancel``: holderIdentity "", leaseDurationSeconds 1).  EOF on
  stdin means the agent died: the process exits at once **without** releasing
  (Cilium's electors live inside the agent and die with it).
* **stdout**, to the agent, one flushed line per event::

      {"t": <time.monotonic()>, "event": E, "lease": NAME, "detail": {...}}

  ``E`` is ``started`` / ``stopped`` (an elector thread began / ended),
  ``acquired`` (this node became the holder; detail: ``previous`` holder,
  ``transitions``, ``reason``), ``renewed`` (a renewal succeeded; every one
  is written), ``lost`` (detail ``reason``: the renew deadline passed, or
  ``released``), ``attempt-failed`` (an API request failed: 409, timeout,
  refused, unreachable; detail ``error``, ``holding``) and ``throttled`` (the
  client-side rate limiter's wait would pass the renewal's deadline: the
  attempt failed without a request).  The first line is ``{"event": "ready",
  "lease": null, ...}`` once the process runs; a bad stdin line gives an
  ``error`` event (lease null) and is ignored.
* **SIGTERM**: every elector stops (holders release), then the process exits 0.
  SIGKILL is the agent-kill fault: nothing is released, the Leases simply stop
  being renewed.

The algorithm is :class:`twin.semantics.election.ElectorCore`'s (the one
statement shared with the twin); this module only does the I/O and the
sleeping, on this process's ``time.monotonic()``:

* candidate: attempt at once, then after ``candidate_wait(rng)`` (sliding
  jitter) until an attempt succeeds;
* holder: like client-go's ``renew`` (``wait.Until`` over
  ``PollImmediateUntil``): a renewal starts right after the Lease is acquired
  and then ``holder_wait()`` after the previous renewal returned; a renewal
  attempts at once and then ``retry_period`` after the start of the previous
  attempt (at once if that attempt took longer: apimachinery's non-sliding
  poll timer) until an attempt succeeds or ``renew_deadline`` has passed since
  the renewal started;
  then leadership is lost (at the deadline) and the elector is a candidate
  again, keeping its observed record;
* one attempt: Get, then ``ElectorCore.attempt`` on the record read, then a
  Create or an Update carrying the resourceVersion read (a concurrent writer
  makes it 409) — never the optimistic update without a Get that newer
  client-go versions try first (the core has none).

API requests (``CoordinationV1Api``: ``read_namespaced_lease``,
``create_namespaced_lease``, ``replace_namespaced_lease``) go through ONE
:class:`~twin.semantics.election.TokenBucket` shared by every elector of the
process (client-go's ``flowcontrol`` limiter of the agent's clientset).  How
the context is modelled: during a renewal the request's context is the renew
deadline.  A request whose token reservation would only be granted after the
deadline does not wait at all: the reservation is cancelled (the token given
back) and the attempt fails at once, as ``rate.Limiter.Wait`` refuses a wait
that would exceed its context's deadline; a request that does wait gets a
``_request_timeout`` of the time left to the deadline.  A candidate's attempts
have no deadline in client-go (the election's context only ends when the
elector stops); here they wait for their token (interruptibly, on stop) and
their requests time out after ``renew_deadline`` so that a request into a
partition does not hang the candidate forever.  urllib3's own retries are off:
one API call is one HTTP request, as the rate limiter counts it.

Times in the Lease: the core's records hold seconds on this process's
monotonic clock, rounded to microseconds; they are written as ``MicroTime``
values by adding a fixed monotonic→UTC offset (in whole microseconds) taken
once at start, and read back by subtracting it, so a record read back is equal
to the record written and two reads of an unchanged Lease compare equal.
Records written by another process convert with our offset; only their
equality matters to the algorithm (``observedTime`` is always our clock).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

from twin.semantics.election import ElectionParams, ElectorCore, LeaseRecord, TokenBucket

__all__ = ["LeaseApi", "RateLimiter", "Elector", "ElectorProcess", "Throttled", "main", "EVENTS"]

EVENTS = ("ready", "started", "stopped", "acquired", "lost", "renewed", "attempt-failed", "throttled", "error")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)


def now() -> float:
    """This process's clock: CLOCK_MONOTONIC in seconds, rounded to microseconds."""
    return round(time.monotonic(), 6)


class Throttled(Exception):
    """The rate limiter's wait would pass the request's deadline: no request was made."""


class Halted(Exception):
    """The elector was stopped while its request waited for a token: no request was made."""


class RateLimiter:
    """The process's one token bucket (thread-safe), on the monotonic clock."""

    def __init__(self, qps: float, burst: int) -> None:
        self._bucket = TokenBucket(qps, burst, time.monotonic())
        self._lock = threading.Lock()

    def wait(self, deadline: float | None, halt: threading.Event) -> None:
        """Take a token, waiting for it; raise :class:`Throttled` (token given back)
        if it would only come after ``deadline``, :class:`Halted` if ``halt`` is set
        while waiting."""
        with self._lock:
            t = time.monotonic()
            delay = self._bucket.reserve(t)
            if deadline is not None and t + delay > deadline:
                self._bucket.cancel()
                raise Throttled(f"rate limiter wait {delay:.3f}s would pass the renew deadline "
                                f"({max(0.0, deadline - t):.3f}s left)")
        if delay > 0 and halt.wait(delay):
            raise Halted("stopped while waiting for the rate limiter")


class LeaseApi:
    """Leases through ``kubernetes.client.CoordinationV1Api``: records in, records out."""

    def __init__(self, url: str, namespace: str, limiter: RateLimiter, offset_us: int) -> None:
        from kubernetes import client
        cfg = client.Configuration(host=url)
        cfg.retries = False  # one API call = one HTTP request (the limiter counts requests)
        cfg.proxy = None  # the client takes a proxy from *_proxy variables; the API is on the project's LAN
        cfg.connection_pool_maxsize = 64
        self._client = client
        self.api = client.CoordinationV1Api(client.ApiClient(cfg))
        self.namespace = namespace
        self.limiter = limiter
        self.offset_us = offset_us

    # -- time conversion ---------------------------------------------------------------

    def to_time(self, seconds: float) -> dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=round(seconds * 1e6) + self.offset_us)

    def from_time(self, value: dt.datetime | None) -> float:
        if value is None:
            return 0.0
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return ((value - _EPOCH) // _US - self.offset_us) / 1e6

    def record(self, lease: Any) -> LeaseRecord:
        s = lease.spec
        return LeaseRecord(s.holder_identity or "", int(s.lease_duration_seconds or 0),
                           self.from_time(s.acquire_time), self.from_time(s.renew_time),
                           int(s.lease_transitions or 0))

    def body(self, name: str, rec: LeaseRecord, read: Any | None) -> Any:
        c = self._client
        meta = c.V1ObjectMeta(name=name, namespace=self.namespace,
                              resource_version=read.metadata.resource_version if read is not None else None)
        spec = c.V1LeaseSpec(holder_identity=rec.holder, lease_duration_seconds=rec.lease_duration_s,
                             acquire_time=self.to_time(rec.acquire_time), renew_time=self.to_time(rec.renew_time),
                             lease_transitions=rec.transitions)
        return c.V1Lease(api_version="coordination.k8s.io/v1", kind="Lease", metadata=meta, spec=spec)

    # -- requests ---------------------------------------------------------------------------

    def _timeout(self, deadline: float | None, default: float) -> float:
        if deadline is None:
            return default
        left = deadline - time.monotonic()
        if left <= 0:
            raise Throttled("renew deadline passed before the request")
        return left

    def get(self, name: str, deadline: float | None, default_timeout: float, halt: threading.Event) -> Any | None:
        """The Lease, or None when the API says 404 NotFound."""
        self.limiter.wait(deadline, halt)
        try:
            return self.api.read_namespaced_lease(name, self.namespace,
                                                  _request_timeout=self._timeout(deadline, default_timeout))
        except self._client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, name: str, rec: LeaseRecord, deadline: float | None, default_timeout: float,
               halt: threading.Event) -> Any:
        self.limiter.wait(deadline, halt)
        return self.api.create_namespaced_lease(self.namespace, self.body(name, rec, None),
                                                _request_timeout=self._timeout(deadline, default_timeout))

    def update(self, name: str, rec: LeaseRecord, read: Any, deadline: float | None, default_timeout: float,
               halt: threading.Event) -> Any:
        self.limiter.wait(deadline, halt)
        return self.api.replace_namespaced_lease(name, self.namespace, self.body(name, rec, read),
                                                 _request_timeout=self._timeout(deadline, default_timeout))


def _error_text(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


class Elector:
    """One Lease's elector thread: drives an :class:`ElectorCore` (see the module docstring)."""

    def __init__(self, lease: str, identity: str, params: ElectionParams, api: LeaseApi,
                 emit: Callable[..., None], rng: random.Random) -> None:
        self.lease, self.params, self.api, self.emit, self.rng = lease, params, api, emit, rng
        self.core = ElectorCore(identity, params)
        self.halt = threading.Event()  # stop this elector (the lease is no longer wanted / SIGTERM)
        self.release_on_stop = True
        self._read: Any | None = None  # the Lease object last read or written (its resourceVersion)
        self.holding = False
        self.thread = threading.Thread(target=self._run, name=f"elector-{lease}", daemon=True)

    def start(self) -> "Elector":
        self.thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        self.release_on_stop = release
        self.halt.set()

    # -- one attempt ----------------------------------------------------------------------

    def attempt(self, deadline: float | None) -> bool:
        """client-go's ``tryAcquireOrRenew``; False on any failure (reported)."""
        rd = self.params.renew_deadline_s
        try:
            read = self.api.get(self.lease, deadline, rd, self.halt)
            if self.halt.is_set():
                return False
            current = self.api.record(read) if read is not None else None
            decision = self.core.attempt(current, now())
            if decision.write is None:
                self._read = read
                return False
            previous = current.holder if current is not None else ""
            if decision.create:
                written = self.api.create(self.lease, decision.write, deadline, rd, self.halt)
            else:
                written = self.api.update(self.lease, decision.write, read, deadline, rd, self.halt)
            self._read = written
            self.core.written(decision.write, now())
            if not self.holding:
                self.holding = True
                self.emit("acquired", self.lease, previous=previous, transitions=decision.write.transitions,
                          reason=decision.reason)
            else:
                self.emit("renewed", self.lease)
            return True
        except Halted:
            return False
        except Throttled as exc:
            self.emit("throttled", self.lease, error=str(exc), holding=self.holding)
            return False
        except Exception as exc:  # 409, timeout, refused, unreachable: a failed attempt
            self.emit("attempt-failed", self.lease, error=_error_text(exc), holding=self.holding)
            return False

    # -- loops --------------------------------------------------------------------------

    def _run(self) -> None:
        self.emit("started", self.lease)
        try:
            while not self.halt.is_set():
                if not self.holding:
                    self._candidate()
                else:
                    self._hold()
        except Exception as exc:  # a bug: say it on the protocol (the agent logs it), then stop this elector
            self.emit("error", self.lease, error=f"elector crashed: {type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=-6))
            raise
        finally:
            if self.holding and self.release_on_stop:
                self._release()
            self.emit("stopped", self.lease, holding=self.holding)

    def _candidate(self) -> None:
        while not self.halt.is_set():
            if self.attempt(None):
                return
            self.halt.wait(self.core.candidate_wait(self.rng))

    def _hold(self) -> None:
        """Renewals until one misses its deadline (then: lost) or the elector stops."""
        first = True
        while not self.halt.is_set():
            if not first and self.halt.wait(self.core.holder_wait()):
                return
            first = False
            if not self._renewal():
                if self.halt.is_set():
                    return
                self.holding = False
                self.emit("lost", self.lease, reason=f"not renewed within the renew deadline "
                                                     f"{self.params.renew_deadline_s:g}s")
                return

    def _renewal(self) -> bool:
        """client-go's ``PollUntilContextTimeout(ctx, retryPeriod, renewDeadline, immediate=true,
        tryAcquireOrRenew)`` (apimachinery ``loopConditionUntilContext``, non-sliding): the
        timer is armed for ``start + RP`` and the first attempt runs at once; then, each time
        the timer has fired (at once if it fired during the attempt), it is re-armed for
        ``now + RP`` and the next attempt runs; the deadline ``start + RD`` ends it.  Reading
        someone else's record does not end the renewal early: only the deadline does."""
        rp = self.params.retry_period_s
        start = time.monotonic()
        deadline = start + self.params.renew_deadline_s
        fire = start + rp
        if self.attempt(deadline):
            return True
        while not self.halt.is_set():
            t = time.monotonic()
            if fire >= deadline:  # the context ends first
                self.halt.wait(max(0.0, deadline - t))
                return False
            if fire > t and self.halt.wait(fire - t):
                return False
            if time.monotonic() >= deadline:
                return False
            fire = time.monotonic() + rp
            if self.attempt(deadline):
                return True
        return False

    def _release(self) -> None:
        """client-go's ``release``: holder "" with leaseDurationSeconds 1, transitions kept."""
        if self._read is None or not self.core.is_leader():
            return
        t = now()
        rec = LeaseRecord("", 1, t, t, self.core.observed.transitions if self.core.observed else 0)
        try:
            self.api.update(self.lease, rec, self._read, time.monotonic() + self.params.renew_deadline_s,
                            self.params.renew_deadline_s, threading.Event())
            self.core.written(rec, now())
            self.holding = False
            self.emit("lost", self.lease, reason="released")
        except Exception as exc:
            # the elector stops all the same (client-go calls OnStoppedLeading when its context
            # ends, released or not): the Lease expires on its own after leaseDuration
            self.emit("attempt-failed", self.lease, error=f"release: {_error_text(exc)}", holding=True)
            self.holding = False
            self.emit("lost", self.lease, reason=f"stopped; the release failed ({_error_text(exc)}): the Lease "
                                                 "expires after leaseDuration")


class ElectorProcess:
    """The process: one :class:`Elector` per wanted Lease, events to stdout."""

    def __init__(self, node: str, api_url: str, params: ElectionParams, namespace: str = "kube-system",
                 out: Any = None, seed: int | None = None) -> None:
        self.node, self.params = node, params
        self.out = out if out is not None else sys.stdout
        self._out_lock = threading.Lock()
        self.stop = threading.Event()
        offset_us = round((time.time() - time.monotonic()) * 1e6)
        self.api = LeaseApi(api_url, namespace, RateLimiter(params.qps, params.burst), offset_us)
        self.rng = random.Random(seed)
        self.electors: dict[str, Elector] = {}

    def emit(self, event: str, lease: str | None, **detail: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "event": event, "lease": lease, "detail": detail})
        with self._out_lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):  # the agent is gone: nobody to tell
                self.stop.set()

    def want(self, leases: list[str]) -> None:
        """Replace the set of Leases this node is a candidate for."""
        wanted = set(leases)
        for name in sorted(set(self.electors) - wanted):
            self.electors.pop(name).stop(release=True)
        for name in sorted(wanted - set(self.electors)):
            self.electors[name] = Elector(name, self.node, self.params, self.api, self.emit,
                                          random.Random(self.rng.random())).start()

    def shutdown(self, release: bool, timeout: float = 5.0) -> None:
        for e in self.electors.values():
            e.stop(release=release)
        if release:  # give holders the time to release (each bounded by the renew deadline)
            end = time.monotonic() + timeout
            for e in self.electors.values():
                e.thread.join(max(0.0, end - time.monotonic()))

    def run(self, stdin: Any) -> int:
        lines: queue.Queue = queue.Queue()

        def reader() -> None:
            for line in stdin:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, name="stdin", daemon=True).start()
        self.emit("ready", None, node=self.node, pid=_pid(), params=self.params.__dict__)
        while not self.stop.is_set():
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:  # EOF: the agent died; so do we, without releasing
                return 0
            try:
                msg = json.loads(line)
                leases = msg["leases"]
                if not isinstance(leases, list) or not all(isinstance(x, str) for x in leases):
                    raise ValueError("'leases' must be a list of lease names")
            except (ValueError, KeyError, TypeError) as exc:
                self.emit("error", None, error=f"bad input line {line.strip()[:200]!r}: {exc}")
                continue
            self.want(leases)
        self.shutdown(release=True)
        return 0


def _pid() -> int:
    return os.getpid()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m datapath.agent.l2announcer", description=__doc__.split("\n")[0])
    p.add_argument("--node", required=True, help="this node's name (the holderIdentity)")
    p.add_argument("--api", required=True, help="API server URL, e.g. http://192.168.10.250:6443")
    p.add_argument("--lease-duration", type=float, required=True)
    p.add_argument("--renew-deadline", type=float, required=True)
    p.add_argument("--retry-period", type=float, required=True)
    p.add_argument("--qps", type=float, required=True)
    p.add_argument("--burst", type=int, required=True)
    p.add_argument("--namespace", default="kube-system")
    p.add_argument("--seed", type=int, default=None, help="seed of the candidates' jitter (default: random)")
    a = p.parse_args(argv)
    if not 0 < a.retry_period < a.renew_deadline < a.lease_duration:
        p.error("need 0 < --retry-period < --renew-deadline < --lease-duration (the agent passes Cilium's "
                "effective timings)")
    if a.qps <= 0 or a.burst < 1:
        p.error("need --qps > 0 and --burst >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    params = ElectionParams(a.lease_duration, a.renew_deadline, a.retry_period, a.qps, a.burst)
    proc = ElectorProcess(a.node, a.api, params, a.namespace, seed=a.seed)
    signal.signal(signal.SIGTERM, lambda *_: proc.stop.set())
    signal.signal(signal.SIGINT, lambda *_: proc.stop.set())
    code = proc.run(sys.stdin)
    # elector threads may still be inside a request (EOF: nobody waits for them); holding the
    # output lock, flush and leave without the interpreter's shutdown racing them for stdout
    with proc._out_lock:
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
