"""The twin's delays: named distributions, defined once, read by both the
simulation and the analytical intervals (pure code, so the pure tier)."""
from __future__ import annotations

import random
import statistics

import pytest

from twin.model.objects import ProbeSpec
from twin.semantics.delays import DELAYS, Delays
from twin.semantics.dists import Constant, Empirical, LogNormal, Uniform, describe
from twin.semantics.endpoints import PipelineTiming, outage_interval, removal_interval

pytestmark = pytest.mark.pure
SPEC = ProbeSpec("tcpSocket", 80, period_s=1.0, timeout_s=1.0, failure_threshold=3, success_threshold=1)


def test_lognormal_from_median_and_p99_has_that_median_and_p99():
    d = LogNormal(median=0.02, p99=0.1)
    assert d.quantile(0.5) == pytest.approx(0.02) and d.quantile(0.99) == pytest.approx(0.1)
    rng = random.Random(3)
    draws = sorted(d.sample(rng) for _ in range(20000))
    assert statistics.median(draws) == pytest.approx(0.02, rel=0.05)
    assert draws[int(0.99 * len(draws))] == pytest.approx(0.1, rel=0.1)
    lo, hi = d.bounds()
    assert 0 < lo < 0.02 < 0.1 < hi


def test_constant_draws_nothing_from_the_stream_and_uniform_draws_once():
    rng = random.Random(1)
    state = rng.getstate()
    assert Constant(0.5).sample(rng) == 0.5 and rng.getstate() == state
    x = Uniform(0.1, 0.2).sample(rng)
    assert 0.1 <= x <= 0.2 and random.Random(1).uniform(0.1, 0.2) == x


def test_empirical_draws_only_its_samples_and_is_bounded_by_them():
    d = Empirical((0.003, 0.001, 0.002))
    rng = random.Random(2)
    assert {d.sample(rng) for _ in range(100)} == {0.001, 0.002, 0.003}
    assert d.bounds() == (0.001, 0.003)
    assert describe(d) == {"dist": "empirical", "n": 3, "min": 0.001, "median": 0.002, "max": 0.003}


@pytest.mark.parametrize("make", [lambda: Uniform(0.2, 0.1), lambda: Uniform(-1, 1), lambda: Constant(float("inf")),
                                  lambda: LogNormal(0.1, 0.05), lambda: Empirical(())])
def test_impossible_parameters_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_every_delay_has_a_distinct_name_and_says_where_its_number_comes_from():
    names = [d.name for d in DELAYS.all()]
    assert len(set(names)) == len(names) == 18
    for d in DELAYS.all():
        assert d.origin.startswith(("assumption", "measured")), d


def test_a_what_if_replaces_one_delay_and_says_so():
    what_if = DELAYS.replace(kubelet_status=Uniform(1.0, 2.0))
    assert what_if.kubelet_status.dist == Uniform(1.0, 2.0) and what_if.kubelet_status.origin.startswith("what-if")
    assert [d for d in what_if.all() if d.name != "kubelet-status"] == [d for d in DELAYS.all() if d.name != "kubelet-status"]
    with pytest.raises(ValueError, match="no delay named 'kubelet'"):
        DELAYS.replace(kubelet=Constant(1.0))


def test_the_analytical_intervals_take_their_bounds_from_the_same_delay_definitions():
    assert PipelineTiming().agent_s == DELAYS.agent_regenerate.bounds() == (0.01, 0.06)
    assert PipelineTiming().refused_probe_s == DELAYS.probe_refused.bounds()
    slower = Delays().replace(kubelet_status=Uniform(1.0, 2.0))
    lo, hi = removal_interval(SPEC)
    lo2, hi2 = removal_interval(SPEC, PipelineTiming(slower))
    assert lo2 - lo == pytest.approx(1.0 - 0.005) and hi2 - hi == pytest.approx(2.0 - 0.03)
    assert outage_interval(SPEC, 0.1, 0.5, PipelineTiming(slower))[1] == pytest.approx(hi2)
