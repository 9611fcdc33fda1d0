"""Pure tier: the twin's rate model (twin.semantics.rates) against the calibration
profile's own samples — no particular numbers of the profile are assumed."""
from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings, strategies as st

from twin.calibration import load_bandwidth_profile
from twin.semantics.bandwidth import EgressLimit, egress_limit, tcp_payload_fraction
from twin.semantics.rates import efficiency, interval_bounds, jain, predict_throughput

pytestmark = pytest.mark.pure

PROFILE = load_bandwidth_profile()
LIMITS = sorted({p.limit_bps for p in PROFILE.limited if p.parallel == 1})


def limit(bps: int) -> EgressLimit:
    return EgressLimit(str(bps), bps, bps // 8, True)


class _Pod:
    def __init__(self, value):
        self.value = value

    def annotation(self, name):
        return self.value


class _Values:
    def __init__(self, enabled=True):
        self.bandwidth_manager = enabled


def _inside(r) -> bool:
    return r.lo <= r.bps * (1 + 1e-12) and (r.hi is None or r.bps <= r.hi * (1 + 1e-12))


@settings(max_examples=150, deadline=None)
@given(bps=st.integers(100_000, 10**10), parallel=st.integers(1, 8), same=st.booleans(),
       duration=st.floats(1, 60), unlimited=st.booleans())
def test_every_point_prediction_lies_inside_its_own_interval(bps, parallel, same, duration, unlimited):
    p = predict_throughput(None if unlimited else limit(bps), same, parallel, duration, PROFILE)
    assert _inside(p.goodput) and _inside(p.interval)
    assert len(p.streams) == parallel and all(_inside(s) for s in p.streams)
    assert math.isclose(sum(s.bps for s in p.streams), p.goodput.bps, rel_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(a=st.integers(100_000, 5 * 10**9), factor=st.floats(1.01, 50))
def test_goodput_grows_with_the_limit(a, factor):
    b = int(a * factor)
    pa, pb = (predict_throughput(limit(x), False, 1, PROFILE.duration_s, PROFILE) for x in (a, b))
    assert pa.goodput.bps < pb.goodput.bps


@pytest.mark.parametrize("bps", LIMITS)
def test_at_a_calibrated_limit_the_point_is_its_mean_and_the_interval_the_pooled_relative_spread(bps):
    pt = next(p for p in PROFILE.limited if p.limit_bps == bps and p.parallel == 1)
    p = predict_throughput(limit(bps), False, 1, PROFILE.duration_s, PROFILE)
    mean = sum(pt.goodput_bps) / len(pt.goodput_bps)
    assert math.isclose(p.goodput.bps, mean)
    assert all(p.goodput.lo <= x * (1 + 1e-9) and x <= p.goodput.hi * (1 + 1e-9) for x in pt.goodput_bps)
    devs = [x / (sum(q.goodput_bps) / len(q.goodput_bps)) - 1 for q in PROFILE.limited for x in q.goodput_bps]
    assert math.isclose(p.goodput.lo / mean - 1, min(devs)) and math.isclose(p.goodput.hi / mean - 1, max(devs))
    assert not p.extrapolated and f"calibrated at {bps / 1e6:g}M" in p.basis and "(n-1)/(n+1)" in p.basis


def test_between_two_calibrated_limits_the_efficiency_is_interpolated_in_log_limit():
    a, b = LIMITS[1], LIMITS[2]
    mid = int(round(math.sqrt(a * b)))
    ea, eb, em = (efficiency(PROFILE, x) for x in (a, b, mid))
    assert math.isclose(em.point, (ea.point + eb.point) / 2, rel_tol=1e-4)
    assert "interpolated" in em.how and not em.extrapolated


def test_limits_beyond_the_calibration_are_marked_extrapolated():
    for bps in (LIMITS[0] // 2, LIMITS[-1] * 3):
        p = predict_throughput(limit(bps), False, 1, PROFILE.duration_s, PROFILE)
        assert p.extrapolated and "EXTRAPOLATED" in p.basis
    inside = predict_throughput(limit(int(math.sqrt(LIMITS[0] * LIMITS[1]))), False, 1, PROFILE.duration_s, PROFILE)
    assert not inside.extrapolated and "EXTRAPOLATED" not in inside.basis


def test_the_point_is_the_limit_times_the_payload_fraction_times_the_efficiency():
    bps = LIMITS[len(LIMITS) // 2]
    p = predict_throughput(limit(bps), False, 1, PROFILE.duration_s, PROFILE, mtu=9000)
    e = efficiency(PROFILE, bps)
    assert math.isclose(p.goodput.bps, bps * tcp_payload_fraction(9000) * e.point)
    assert "MTU 9000" in p.basis


@pytest.mark.parametrize("raw,enabled", [("0", True), ("7", True), ("-5M", True), ("10Mbps", True),
                                         ("10mi", True), ("10M", False)])
def test_annotations_cilium_does_not_enforce_predict_the_unlimited_interval(raw, enabled):
    lim = egress_limit(_Pod(raw), _Values(enabled))
    assert lim is not None and not lim.enforced
    p = predict_throughput(lim, False, 1, 5, PROFILE)
    free = predict_throughput(None, False, 1, 5, PROFILE)
    assert p.limit_bps is None and p.goodput == free.goodput and p.interval == free.interval
    assert "not enforced" in p.basis and "unlimited" in p.basis


def test_a_limited_pod_talking_to_a_pod_on_its_own_node_is_not_limited():
    p = predict_throughput(limit(10_000_000), True, 1, 5, PROFILE)
    free = predict_throughput(None, True, 1, 5, PROFILE)
    assert p.limit_bps is None and p.same_node and p.goodput == free.goodput
    assert "one node" in p.basis


def test_an_unlimited_path_without_calibration_is_bounded_below_only():
    prof = dataclasses.replace(PROFILE, unlimited=())
    p = predict_throughput(None, False, 1, 5, prof)
    top = max((q for q in prof.limited if q.parallel == 1), key=lambda q: q.limit_bps)
    assert p.goodput.lo == max(top.goodput_bps) and p.goodput.hi is None
    assert "unlimited, no calibration for this path" in p.basis


@pytest.mark.parametrize("parallel", [2, 4, 3])
def test_parallel_streams_share_the_limit_so_their_sum_is_about_one_streams_goodput(parallel):
    for bps in LIMITS:
        one = predict_throughput(limit(bps), False, 1, 5, PROFILE).goodput.bps
        many = predict_throughput(limit(bps), False, parallel, 5, PROFILE)
        assert abs(many.goodput.bps / one - 1) < 0.05
        assert math.isclose(sum(s.bps for s in many.streams), many.goodput.bps)


def test_calibrated_parallel_points_report_jains_fairness_of_the_calibration():
    pts = [p for p in PROFILE.limited if p.parallel > 1 and p.streams_bps]
    if not pts:
        pytest.skip("the profile has no parallel calibration")
    pt = pts[0]
    p = predict_throughput(limit(pt.limit_bps), False, pt.parallel, PROFILE.duration_s, PROFILE)
    expected = sum(jain(r) for r in pt.streams_bps) / len(pt.streams_bps)
    assert math.isclose(p.fairness, expected) and "Jain's fairness index" in p.basis
    assert 1 / pt.parallel <= p.fairness <= 1


def test_jains_index_is_one_for_equal_shares_and_one_over_n_for_one_taker():
    assert jain([3, 3, 3]) == 1 and math.isclose(jain([5, 0, 0, 0]), 0.25)


def test_other_durations_move_the_startup_excess_as_one_over_t():
    from twin.semantics.rates import startup_excess_bps
    bps = LIMITS[0]
    pt = next(p for p in PROFILE.limited if p.limit_bps == bps and p.parallel == 1)
    cal = predict_throughput(limit(bps), False, 1, PROFILE.duration_s, PROFILE).goodput
    long_ = predict_throughput(limit(bps), False, 1, PROFILE.duration_s * 4, PROFILE).goodput
    assert math.isclose(cal.bps - long_.bps, startup_excess_bps(PROFILE, pt) * 0.75, rel_tol=1e-6)
    assert long_.lo <= long_.bps <= long_.hi
    assert "scales as 1/T" in predict_throughput(limit(bps), False, 1, 20, PROFILE).basis


def test_sampling_intervals_cover_the_run_and_the_last_one_may_be_short():
    assert interval_bounds(5, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert interval_bounds(2.5, 1) == [(0, 1), (1, 2), (2, 2.5)]


def test_a_measurement_agrees_when_inside_the_interval_widened_by_the_tolerance():
    from twin.model.observations import Rate
    from twin.semantics.rates import rate_agrees
    r = Rate(100.0, 90.0, 110.0)
    assert rate_agrees(86.0, r, 0.05) and not rate_agrees(85.0, r, 0.05)
    assert rate_agrees(115.0, r, 0.05) and not rate_agrees(116.0, r, 0.05)
    assert rate_agrees(1e12, Rate(90.0, 90.0, None), 0.05) and not rate_agrees(80.0, Rate(90.0, 90.0, None), 0.05)


def test_limit_of_applies_the_same_semantics_as_a_pods_annotation():
    from twin.semantics.bandwidth import limit_of
    assert limit_of("10M").rate_bps == 10_000_000 and limit_of("10Mi").rate_bps == 10_485_760
    assert not limit_of("-5M").enforced and not limit_of("10Mbps").enforced
    assert not limit_of("10M", bandwidth_manager=False).enforced
    assert limit_of("10M") == egress_limit(_Pod("10M"), _Values(True))
