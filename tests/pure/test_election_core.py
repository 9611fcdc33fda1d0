"""Properties of the one statement of the election algorithm
(``twin.semantics.election``), as the elector process drives it."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.semantics.election import ElectionParams, ElectorCore, LeaseRecord, TokenBucket

pytestmark = pytest.mark.pure

PARAMS = ElectionParams(3.0, 1.0, 0.2, qps=5.0, burst=10)
ME = "me"

holders = st.sampled_from(["", ME, "w2", "w3"])
records = st.builds(LeaseRecord, holder=holders, lease_duration_s=st.just(3),
                    acquire_time=st.integers(0, 20).map(float), renew_time=st.integers(0, 20).map(float),
                    transitions=st.integers(0, 5))
#: (the Lease as read: None = NotFound, seconds since the previous read, whether our write succeeds)
reads = st.lists(st.tuples(st.none() | records, st.floats(0.0, 2.0), st.booleans()), min_size=1, max_size=40)


@given(reads)
def test_a_candidate_never_writes_while_another_holders_record_is_younger_than_the_lease_duration(seq):
    core = ElectorCore(ME, PARAMS)
    now = 0.0
    seen: LeaseRecord | None = None  # the record last read, and since when (our own account)
    since = 0.0
    for current, dt, write_ok in seq:
        now += dt
        if current is not None and current != seen:
            seen, since = current, now
        a = core.attempt(current, now)
        if a.write is not None and current is not None and current.holder not in ("", ME):
            assert now - since >= PARAMS.lease_duration_s
        if a.write is not None:
            assert a.write.holder == ME and a.write.renew_time == now
            if write_ok:
                core.written(a.write, now)
                seen, since = a.write, now


@given(records, st.floats(0.0, 100.0))
def test_a_holders_renewal_keeps_acquire_time_and_transitions(rec, now):
    core = ElectorCore(ME, PARAMS)
    mine = LeaseRecord(ME, rec.lease_duration_s, rec.acquire_time, rec.renew_time, rec.transitions)
    a = core.attempt(mine, now)
    assert a.write is not None and not a.create
    assert (a.write.acquire_time, a.write.transitions) == (mine.acquire_time, mine.transitions)
    assert a.write.renew_time == now and a.write.lease_duration_s == PARAMS.lease_duration_field


@given(records.filter(lambda r: r.holder != ME), st.floats(0.0, 10.0))
def test_a_takeover_increments_transitions_and_restarts_acquire_time(rec, later):
    core = ElectorCore(ME, PARAMS)
    core.attempt(rec, 0.0)  # first seen at 0
    a = core.attempt(rec, PARAMS.lease_duration_s + later)  # unchanged for a lease duration: expired
    assert a.write is not None and not a.create
    assert a.write.transitions == rec.transitions + 1
    assert a.write.acquire_time == a.write.renew_time == PARAMS.lease_duration_s + later


def test_a_missing_lease_is_created_with_no_transitions():
    a = ElectorCore(ME, PARAMS).attempt(None, 5.0)
    assert a.create and a.write == LeaseRecord(ME, 3, 5.0, 5.0, 0)


@given(st.integers(0, 2**32))
def test_candidate_wait_is_within_client_gos_jitter(seed):
    w = ElectorCore(ME, PARAMS).candidate_wait(random.Random(seed))
    assert PARAMS.retry_period_s <= w < PARAMS.retry_period_s * 2.2


@settings(max_examples=200)
@given(st.floats(0.5, 20.0), st.integers(1, 10),
       st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.05, 3.0) | st.none()), min_size=1, max_size=60))
def test_the_bucket_never_grants_more_than_burst_plus_qps_times_t(qps, burst, reqs):
    """Requests at non-decreasing times, each with an optional deadline (relative):
    a reservation whose wait passes its deadline is cancelled (not granted).  In any
    window [a, b] of grant times, grants <= burst + qps·(b - a)."""
    bucket = TokenBucket(qps, burst, 0.0)
    now, grants = 0.0, []
    for dt, deadline in reqs:
        now += dt
        wait = bucket.reserve(now)
        if deadline is not None and wait > deadline:
            bucket.cancel()
            continue
        grants.append(now + wait)
    grants.sort()
    for i, a in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= burst + qps * (grants[j] - a) + 1e-6
