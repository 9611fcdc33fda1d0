"""Pure: the failover outage definition and its analytic bounds (twin.semantics.failover)."""
from __future__ import annotations

import dataclasses

import pytest

from twin.semantics.delays import DELAYS
from twin.semantics.dists import Constant
from twin.semantics.election import ElectionParams
from twin.semantics.failover import (NO_OUTAGE, FailoverTiming, central_interval, measured_outage, outage_bounds,
                                     prediction_interval)

pytestmark = pytest.mark.pure
SEED = ElectionParams(3.0, 1.0, 0.2, 5.0, 10)


def _loop(start, fail_from, fail_to, step=0.1, end=10.0, timeout=0.5):
    """Requests every ``step`` while answered, every ``timeout`` while failing."""
    t, out = start, []
    while t < end:
        ok = not (fail_from <= t < fail_to)
        out.append((round(t, 6), ok))
        t += step if ok else timeout
    return out


def test_no_failed_request_is_no_outage():
    assert measured_outage(_loop(0, 99, 99), 2.0) == {"outage": 0.0, "first_failure": None, "recovered": None,
                                                           "persists": False}


def test_outage_runs_from_the_first_failure_at_or_after_the_fault_to_the_first_answer_after_the_last_failure():
    recs = [(0.9, False)] + _loop(1.0, 2.0, 5.2)  # a failure before the fault does not count
    out = measured_outage(recs, 2.0)
    assert out["first_failure"] == 2.0 and out["recovered"] == 5.5 and out["outage"] == 3.5 and not out["persists"]


def test_an_outage_still_going_when_the_loop_ends_persists_until_the_start_of_the_last_request():
    out = measured_outage(_loop(0, 2.0, 99, end=6.0), 2.0)
    assert out["persists"] and out["recovered"] is None and out["outage"] == pytest.approx(5.5 - 2.0)


def test_the_window_ends_at_the_next_fault():
    recs = _loop(0, 2.0, 99, end=8.0)
    out = measured_outage(recs, 2.0, until=4.0)
    assert out["persists"] and out["outage"] == pytest.approx(3.5 - 2.0)


def test_faults_that_leave_the_old_path_working_predict_no_outage():
    for kind in NO_OUTAGE:
        b = outage_bounds(kind, FailoverTiming(SEED))
        assert (b.lo, b.hi, b.persists) == (0.0, 0.0, False) and kind in b.derivation


def test_crash_takeover_spans_lease_duration_minus_a_renew_cycle_to_lease_duration_plus_two_polls():
    t = FailoverTiming(SEED)
    lo, hi = t.takeover_s()
    assert lo == pytest.approx(3.0 - t.cycle_s) and 2.5 < lo < 3.0
    assert hi == pytest.approx(3.0 + 2 * t.poll_s + t.request_s(False)[1] + t.request_s(True)[1])
    assert 3.0 + 4 * 0.2 * 2.2 / 2 < hi < 3.0 + 4.4 * 0.2 + 0.1  # the documented LD + 4.4·RP, plus round trips


def test_crash_outage_with_garp_honoured_follows_the_takeover_and_the_request_timeout():
    t = FailoverTiming(SEED, loop_interval_s=0.1, request_timeout_s=0.5)
    b = outage_bounds("node-crash", t)
    tk, an = t.takeover_s(), t.announce_s()
    assert b.lo == pytest.approx(tk[0] + an[0] - 0.1) and b.hi == pytest.approx(tk[1] + an[1] + 0.5)
    assert not b.persists and "GARP honoured" in b.derivation


def test_a_longer_lease_duration_moves_both_crash_bounds_by_the_same_amount():
    a = outage_bounds("node-crash", FailoverTiming(SEED))
    b = outage_bounds("node-crash", FailoverTiming(dataclasses.replace(SEED, lease_duration_s=5.0)))
    assert b.lo - a.lo == pytest.approx(2.0) and b.hi - a.hi == pytest.approx(2.0)


def test_with_garp_ignored_the_arp_cache_timers_dominate():
    honour = outage_bounds("node-crash", FailoverTiming(SEED, base_reachable_s=30.0))
    ignore = outage_bounds("node-crash", FailoverTiming(SEED, garp="ignore", base_reachable_s=30.0))
    # REACHABLE [15, 45] s, DELAY 5 s, PROBE 3 × 1 s
    assert ignore.lo == pytest.approx(15 - 0.1 + 8 - 0.1) and ignore.hi > 45 + 8
    assert ignore.lo > honour.hi and "GARP ignored" in ignore.derivation


def test_throttling_slows_the_holders_renew_cycle_and_the_candidates_polls():
    free = FailoverTiming(dataclasses.replace(SEED, qps=1000.0, burst=1000))
    busy = FailoverTiming(SEED, held=8, candidate_electors=8)
    assert free.cycle_s < busy.cycle_s == pytest.approx(2 * 8 / 5.0 + sum(busy.request_s(w)[1] for w in (False, True)))
    assert busy.poll_s == pytest.approx(8 / 5.0 + busy.request_s(False)[1])


def test_slower_responder_programming_widens_the_announcement_by_its_bounds():
    slow = DELAYS.replace(responder_program=Constant(0.5))
    a, b = FailoverTiming(SEED).announce_s(), FailoverTiming(SEED, delays=slow).announce_s()
    lo0, hi0 = DELAYS.responder_program.bounds()
    assert b[0] - a[0] == pytest.approx(0.5 - lo0) and b[1] - a[1] == pytest.approx(0.5 - hi0)


def test_nic_down_persists_to_the_end_of_the_loop_and_a_backend_on_a_crashed_node_too():
    nic = outage_bounds("nic-down", FailoverTiming(SEED, remaining_s=10.0, request_timeout_s=0.5))
    assert nic.persists and nic.hi == pytest.approx(10.0) and nic.lo == pytest.approx(10 - 0.1 - 1.0)
    crash = outage_bounds("node-crash", FailoverTiming(SEED, remaining_s=10.0), backend_on_node=True)
    assert crash.persists and "backend lives on the crashed node" in crash.derivation


def test_unknown_fault_kinds_are_refused():
    with pytest.raises(ValueError, match="no failover bounds"):
        outage_bounds("meteor", FailoverTiming(SEED))


def test_central_interval_and_the_prediction_envelope():
    samples = [float(i) for i in range(100)]
    assert central_interval(samples) == (1.0, 98.0)
    b = outage_bounds("node-crash", FailoverTiming(SEED))
    lo, hi = prediction_interval(b, [b.lo + 0.1, b.hi + 1.0], 0.25)
    assert lo == pytest.approx(max(0.0, b.lo - 0.25)) and hi == pytest.approx(b.hi + 1.25)
    with pytest.raises(ValueError):
        central_interval([])
