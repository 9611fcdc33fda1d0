"""L2 failover: the outage an external client sees when the node answering ARP for
a LoadBalancer IP fails, derived from the algorithms (pure).

**The outage** (both backends measure it with :func:`measured_outage`): in one
``loop`` of requests from the external host, from the first failed request
starting at or after the fault to the first answered request after the last
failure following the fault; 0 when no request failed.  When the loop ends
(or the next fault comes) while still failing, the outage runs to the start
of the last request and ``persists`` is true.

**The analytic bounds** (:func:`outage_bounds`) chain these stages (all
bounds from :class:`FailoverTiming`, i.e. from the election parameters and
:mod:`twin.semantics.delays`):

1. *Last renewal* ``W``: the holder renews (a Get and an Update, ``d`` each)
   every ``RP`` after the previous renewal returned, slower when its agent's
   token bucket is the bottleneck (2 tokens per held lease and cycle at
   ``qps``): ``W ∈ [t_fault − cycle, t_fault]``.
2. *Observation*: a candidate polls (one Get) every ``RP·[1, 2.2)`` plus the
   request (or its token wait); the first Get served after ``W`` returns the
   new record, so ``observedTime ∈ [W, W + poll]``.
3. *Takeover*: the first poll whose Get returns after ``observedTime + LD``
   (on the candidate's own clock) updates the Lease:
   ``T ∈ [W + LD, W + 2·poll + LD + 2·d]``.
4. *Announcement*: the new holder programs its responder and sends a
   gratuitous ARP: ``G ∈ T + [program + garp + lan]`` (plus the Update's
   return leg).
5. *The external host* (Linux neighbour table, see :mod:`twin.sim.l2`): with
   GARP honoured, its existing entry takes the new MAC at ``G`` (override:
   ``is_garp``; ``arp_accept`` only matters for creating entries).  With GARP
   ignored it keeps sending to the dead MAC until the entry revalidates:
   REACHABLE until ``confirmed + reachable_time`` (``[0.5, 1.5]·base``; the
   last answered request confirmed it), DELAY ``delay_first_probe_time``
   (5 s), PROBE ``ucast_solicit × retrans_time`` (3 × 1 s) unicast to the dead
   MAC, FAILED; the next packet broadcasts who-has and the new holder answers.
6. *The loop*: the first failure starts within one request interval of the
   fault; failed requests follow every ``request_timeout``; the first answered
   one starts within one ``request_timeout`` after the path is back (earlier
   by a SYN retransmission at +1 s when the timeout is longer than that).

Faults that leave the old path working (``partition``: the old holder keeps
its LB state and only withdraws its responder after the renew deadline;
``agent-kill``: responder and LB stay) predict no outage while requests keep
the external host's entry confirmed.  ``nic-down`` predicts an outage that
persists (the node keeps renewing over the backup path; nobody else takes
over: its kept-alive API connection, opened over the LAN, gets no replies, so
it loses its leadership once at the renew deadline and retakes its own lease
over a new connection on the backup path).
"""
from __future__ import annotations

from dataclasses import dataclass

from twin.semantics.delays import DELAYS, Delays
from twin.semantics.election import JITTER_FACTOR, ElectionParams

#: Linux neighbour defaults (net/ipv4/arp.c arp_tbl, ``net.ipv4.neigh.*``)
DELAY_FIRST_PROBE_S = 5.0
RETRANS_S = 1.0
UCAST_SOLICIT = 3
MCAST_SOLICIT = 3
LOCKTIME_S = 1.0
#: Linux TCP's initial retransmission timeout (a SYN is resent after 1 s, 3 s, ...)
SYN_RTO_S = 1.0

#: fault kinds after which the old path keeps working (no outage predicted)
NO_OUTAGE = ("partition", "agent-kill", "heal", "responder-missing")


def measured_outage(records, t_fault: float, until: float | None = None) -> dict:
    """The outage of one loop after a fault (the definition both sides use; the harness's
    ``failover_outage`` computes the same numbers from its records).

    ``records``: (start time, answered?) of the loop's requests; only those starting
    in ``[t_fault, until)`` count.  From the first failed one to the first answered one
    after the last failure; when none is answered after it (the outage outlasted the
    loop or the window) ``persists`` is true and the outage runs to the start of the
    window's last request (a lower bound).  Returns ``{"outage": s, "first_failure": t|None,
    "recovered": t|None, "persists": bool}`` (absolute times)."""
    recs = sorted((float(t), bool(ok)) for t, ok in records if t >= t_fault and (until is None or t < until))
    failures = [t for t, ok in recs if not ok]
    if not failures:
        return {"outage": 0.0, "first_failure": None, "recovered": None, "persists": False}
    first, last = failures[0], failures[-1]
    recovered = next((t for t, ok in recs if ok and t > last), None)
    if recovered is None:
        return {"outage": round(recs[-1][0] - first, 6), "first_failure": first, "recovered": None, "persists": True}
    return {"outage": round(recovered - first, 6), "first_failure": first, "recovered": recovered, "persists": False}


@dataclass(frozen=True)
class FailoverTiming:
    """What the bounds depend on."""

    params: ElectionParams
    delays: Delays = DELAYS
    loop_interval_s: float = 0.1
    request_timeout_s: float = 1.0
    garp: str = "honour"  # honour | ignore
    arp_accept: bool = True
    base_reachable_s: float = 30.0
    held: int = 1  # leases the holder's agent holds (its token bucket's load)
    candidate_electors: int = 1  # electors on a candidate's agent
    remaining_s: float = 0.0  # loop time left after the fault

    def request_s(self, write: bool) -> tuple[float, float]:
        """One Lease request as the elector sees it: round trip plus service time."""
        rtt = self.delays.lease_request.bounds()
        svc = (self.delays.api_lease_write if write else self.delays.api_lease_read).bounds()
        return rtt[0] + svc[0], rtt[1] + svc[1]

    @property
    def cycle_s(self) -> float:
        """Longest time between two renewal writes of a live holder."""
        p = self.params
        d = self.request_s(False)[1] + self.request_s(True)[1]
        return max(p.retry_period_s + d, 2 * self.held / p.qps + d)

    @property
    def poll_s(self) -> float:
        """Longest time between two Gets served for one candidate."""
        p = self.params
        wait = p.retry_period_s * (1 + JITTER_FACTOR)
        return max(wait, self.candidate_electors / p.qps) + self.request_s(False)[1]

    def takeover_s(self) -> tuple[float, float]:
        """Fault (the holder stops renewing) → the candidate's Update is served."""
        p = self.params
        return (p.lease_duration_s - self.cycle_s,
                2 * self.poll_s + p.lease_duration_s + self.request_s(False)[1] + self.request_s(True)[1])

    def announce_s(self) -> tuple[float, float]:
        """Update served → the gratuitous ARP reaches the external host."""
        d = self.delays
        parts = [d.responder_program.bounds(), d.garp_send.bounds(), d.lan_one_way.bounds()]
        return (sum(x[0] for x in parts), sum(x[1] for x in parts) + d.lease_request.bounds()[1] / 2)

    def reachable_s(self) -> tuple[float, float]:
        return 0.5 * self.base_reachable_s, 1.5 * self.base_reachable_s


@dataclass(frozen=True)
class OutageBounds:
    lo: float
    hi: float
    persists: bool
    derivation: str


def outage_bounds(kind: str, t: FailoverTiming, backend_on_node: bool = False) -> OutageBounds:
    """The analytic interval of :func:`measured_outage` after a fault of ``kind`` at the
    holder (see the module docstring for the stages)."""
    p, iv, to = t.params, t.loop_interval_s, t.request_timeout_s
    retrans_gain = SYN_RTO_S if to > SYN_RTO_S else 0.0
    if kind in NO_OUTAGE:
        return OutageBounds(0.0, 0.0, False, (
            f"{kind}: the old holder's node keeps forwarding (its LB maps stay) and, while requests are answered, "
            "TCP keeps confirming the external host's ARP entry, so it never revalidates; a new holder's GARP "
            "(if honoured) moves traffic to another live node: no request fails"))
    if kind == "nic-down":
        lo = max(0.0, t.remaining_s - iv - 2 * to)
        return OutageBounds(lo, t.remaining_s, True, (
            "nic-down: the holder keeps renewing over the backup path (its kept-alive LAN connection gets no "
            "replies: one leadership lost at the renew deadline, retaken at once over a new connection on the "
            "backup path; or, without one, loses the lease after "
            f"RD={p.renew_deadline_s:g}s but nothing moves the external host's entry sooner than its revalidation), "
            "its LAN interface drops every frame: requests fail until the loop ends"))
    if kind != "node-crash":
        raise ValueError(f"no failover bounds for fault kind {kind!r}")
    tk, an = t.takeover_s(), t.announce_s()
    g = (tk[0] + an[0], tk[1] + an[1])
    text = (f"node-crash: last renewal W in [-{t.cycle_s:.3f}, 0]s of the fault (renew cycle); candidates poll every "
            f"<= {t.poll_s:.3f}s (RP·2.2 + Get), observe W within one poll and take over at the first poll "
            f"LD={p.lease_duration_s:g}s after that on their own clock: Update at [{tk[0]:.3f}, {tk[1]:.3f}]s; "
            f"responder + GARP + LAN: GARP at the host at [{g[0]:.3f}, {g[1]:.3f}]s. ")
    if t.garp == "honour":
        lo = g[0] - iv - retrans_gain
        hi = g[1] + to
        text += (f"GARP honoured: the host's existing entry takes the new MAC at once (is_garp overrides; "
                 f"arp_accept={int(t.arp_accept)} only matters for new entries); first failure within "
                 f"{iv:g}s of the fault, answered again within one request timeout ({to:g}s) of the GARP")
    else:
        r = t.reachable_s()
        probe = DELAY_FIRST_PROBE_S + UCAST_SOLICIT * RETRANS_S
        failed = (r[0] - iv + probe, r[1] + probe)
        # the broadcast who-has after FAILED is answered once the new holder has its responder
        ready = (max(failed[0], g[0]), max(failed[1], g[1] + MCAST_SOLICIT * RETRANS_S))
        lo = ready[0] - iv - retrans_gain
        hi = ready[1] + to + 2 * t.delays.lan_one_way.bounds()[1]
        text += (f"GARP ignored: the host keeps the dead MAC until its entry revalidates: REACHABLE for "
                 f"reachable_time in [{r[0]:g}, {r[1]:g}]s after the last answered request, DELAY "
                 f"{DELAY_FIRST_PROBE_S:g}s, PROBE {UCAST_SOLICIT}×{RETRANS_S:g}s unicast to the dead MAC, FAILED; "
                 f"the next request broadcasts who-has and the new holder answers")
    if backend_on_node:
        text += ("; a backend lives on the crashed node: the new holder still picks it (nothing removes it), so "
                 "failures continue at random until the loop ends")
        return OutageBounds(max(0.0, lo), t.remaining_s, True, text)
    return OutageBounds(max(0.0, lo), hi, False, text)


def central_interval(samples, coverage: float = 0.98) -> tuple[float, float]:
    """The central ``coverage`` interval of Monte Carlo samples (nearest ranks)."""
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    k = int((1 - coverage) / 2 * len(s))
    return s[k], s[len(s) - 1 - k]


def prediction_interval(bounds: OutageBounds, samples, tolerance_s: float) -> tuple[float, float]:
    """The envelope of the analytic bounds and the samples' range, widened by the tolerance."""
    lo = min([bounds.lo] + list(samples))
    hi = max([bounds.hi] + list(samples))
    return max(0.0, lo - tolerance_s), hi + tolerance_s
