"""Lease-based leader election as Cilium's L2 announcer runs it: client-go's
``tools/leaderelection`` algorithm on a ``coordination.k8s.io/v1`` Lease.

This is the one statement of the algorithm.  The twin's electors
(:mod:`twin.sim.l2`) and the real agents' electors
(:mod:`datapath.agent.l2announcer`, which talk to the API server with the
``kubernetes`` Python client's ``CoordinationV1Api``) both drive an
:class:`ElectorCore` and differ only in how they read and write the Lease
and how they sleep.

Why client-go's algorithm and not the Python client's ``leaderelection``
module: Cilium's agent *is* client-go; the Python module has no jitter, a
fixed retry period and a different renew loop (cilium-facts.md), so a twin
modelling it would model something Cilium does not run.

The algorithm (client-go ``leaderelection.go``; all times on the
candidate's own clock):

* **Candidate** (``acquire``): run :meth:`ElectorCore.attempt` at once,
  then every ``retry_period · (1 + U[0, 1.2))`` (``wait.JitterUntil`` with
  ``JitterFactor = 1.2``, sliding: the wait starts after the attempt
  returns) until an attempt succeeds.
* **Holder** (``renew``): every ``retry_period`` after the previous renewal
  returned (``wait.Until``, sliding, no jitter), start a renewal: attempt
  at once and then every ``retry_period`` (``PollImmediateUntil``) until one
  succeeds or ``renew_deadline`` has passed since the renewal started; in
  that case leadership is lost (``OnStoppedLeading``: the node withdraws
  its ARP responder) and the elector becomes a candidate again (Cilium's
  announcer restarts the election for as long as the service is announced).
* **One attempt** (``tryAcquireOrRenew``): Get the Lease.  NotFound →
  Create it with ourselves as holder.  Otherwise, if the record differs
  from the one last observed, remember it and *when we saw it*
  (``observedTime = now``).  If another identity holds it and
  ``observedTime + leaseDuration > now``, do nothing.  Else Update it
  (holder = us, ``renewTime = now``; ``acquireTime`` and
  ``leaseTransitions`` kept when we already hold it, else
  ``acquireTime = now`` and ``leaseTransitions + 1``).  A failed Create or
  Update (409 Conflict, timeout, connection refused) is a failed attempt.
  The API client's rate limiter (``k8sClientRateLimit``: qps/burst, a token
  bucket shared by all of the agent's API calls) may delay each request.

Cilium rewrites invalid timings before using them
(:func:`twin.semantics.l2.effective_lease_timings`).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

#: client-go's ``JitterFactor`` for the candidate's retry loop
JITTER_FACTOR = 1.2
#: Cilium's defaults for ``k8sClientRateLimit`` (cilium-facts.md)
DEFAULT_QPS = 5.0
DEFAULT_BURST = 10


@dataclass(frozen=True)
class ElectionParams:
    """Effective timings (after Cilium's rewrites) and the client's rate limit."""

    lease_duration_s: float
    renew_deadline_s: float
    retry_period_s: float
    qps: float = DEFAULT_QPS
    burst: int = DEFAULT_BURST

    @property
    def lease_duration_field(self) -> int:
        """``spec.leaseDurationSeconds`` is an integer: client-go writes ``int(LD.Seconds())``."""
        return max(1, int(self.lease_duration_s))


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a ``coordination.k8s.io/v1`` Lease, as the elector reads and writes it.

    Times are seconds on the writer's clock (the API's ``MicroTime``
    values, converted by whoever talks to the API)."""

    holder: str
    lease_duration_s: int
    acquire_time: float
    renew_time: float
    transitions: int = 0


@dataclass(frozen=True)
class Attempt:
    """What one ``tryAcquireOrRenew`` decided after reading the Lease.

    ``write`` is None when the candidate must not write (someone else holds
    a lease that has not expired on our clock); ``create`` says whether the
    write is a Create (the Lease did not exist) or an Update."""

    write: LeaseRecord | None
    create: bool = False
    reason: str = ""


class ElectorCore:
    """The state of one candidate for one Lease (client-go's ``LeaderElector``)."""

    def __init__(self, identity: str, params: ElectionParams):
        self.identity, self.params = identity, params
        self.observed: LeaseRecord | None = None
        self.observed_time: float | None = None

    # -- one attempt ------------------------------------------------------------------

    def attempt(self, current: LeaseRecord | None, now: float) -> Attempt:
        """Decide, from the Lease as just read (None: NotFound) at ``now`` on our clock."""
        mine = LeaseRecord(self.identity, self.params.lease_duration_field, now, now, 0)
        if current is None:
            return Attempt(mine, create=True, reason="lease not found: create it")
        if current != self.observed:
            self.observed, self.observed_time = current, now
        if current.holder and current.holder != self.identity \
                and self.observed_time + self.params.lease_duration_s > now:
            return Attempt(None, reason=f"held by {current.holder}, observed {now - self.observed_time:.3f}s ago")
        if current.holder == self.identity:
            return Attempt(replace(mine, acquire_time=current.acquire_time, transitions=current.transitions),
                           reason="renew")
        return Attempt(replace(mine, transitions=current.transitions + 1),
                       reason="acquire" if not current.holder else f"take over from {current.holder}")

    def written(self, record: LeaseRecord, now: float) -> None:
        """A Create/Update of ``record`` succeeded at ``now``."""
        self.observed, self.observed_time = record, now

    def is_leader(self) -> bool:
        return self.observed is not None and self.observed.holder == self.identity

    # -- loop timing ---------------------------------------------------------------------

    def candidate_wait(self, rng: random.Random) -> float:
        """``wait.Jitter(retryPeriod, 1.2)``: the candidate's pause after an attempt."""
        return self.params.retry_period_s * (1.0 + rng.random() * JITTER_FACTOR)

    def holder_wait(self) -> float:
        """The pause between a successful renewal and the next one (no jitter)."""
        return self.params.retry_period_s


class TokenBucket:
    """client-go's ``flowcontrol.NewTokenBucketRateLimiter(qps, burst)``:
    starts full; ``reserve(now)`` returns how long the request must wait for
    its token (0 when one is available).  Time is whatever clock the caller
    uses; the bucket never reads a clock itself."""

    def __init__(self, qps: float, burst: int, now: float = 0.0):
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1, got qps={qps}, burst={burst}")
        self.qps, self.burst = float(qps), int(burst)
        self.tokens, self.last = float(burst), now

    def reserve(self, now: float) -> float:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
            self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps

    def cancel(self) -> None:
        """Give back a token reserved for a request that was abandoned before it ran."""
        self.tokens = min(self.burst, self.tokens + 1.0)


def api_requests_per_second(held: int, candidates: int, params: ElectionParams) -> float:
    """Steady-state Lease requests per second one agent makes: a holder does a Get
    and an Update every ``retry_period`` (plus the round trips), a candidate a Get
    every ``retry_period · 1.6`` on average."""
    rp = params.retry_period_s
    return held * 2 / rp + candidates / (rp * (1 + JITTER_FACTOR / 2))


def throttled(held: int, candidates: int, params: ElectionParams) -> bool:
    """Whether the steady-state request rate exceeds the client's qps (cilium#26586)."""
    return api_requests_per_second(held, candidates, params) > params.qps + 1e-9


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b - 1e-12))
