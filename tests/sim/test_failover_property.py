"""Sim tier, property: LB failover (scenarios/lb-backend-failover.yaml) over many seeds.

For every seed the twin's own run must fall inside the analytical intervals
it predicts (``twin.semantics.endpoints``, from the same delay definitions):

* hard bounds (hold for every draw): no request fails before the kill; every
  failure is a refused connection to the killed backend; the removal (kill →
  the last node agent without the backend) lies in ``removal_interval``; the
  keep-alive connection to the other backend survives;
* the outage (kill → last failed request) lies in ``outage_interval``.  Its
  lower bound holds with probability ≥ 1 − MISS_PROBABILITY per run (the last
  requests before the removal may all have picked the live backend); the
  seeds are Hypothesis' fixed sequence (``derandomize``), so the run is
  reproducible.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simhelp import inputs
from twin.semantics.endpoints import readiness_probe, removal_interval
from twin.sim import TwinBackend

pytestmark = pytest.mark.sim
RUN = inputs("lb-backend-failover")
KILLED, OTHER = "default/webpod1", "default/webpod2"


def _removal(obs, kill_t: float) -> float:
    """Kill → the last node agent that has the not-ready endpoints."""
    version = next(e.get("version") for e in obs.events
                   if e.event == "api" and e.get("what") == f"endpoints {KILLED} not-ready")
    first = {}
    for e in obs.sorted_events():
        if e.event == "agent-regenerated" and e.get("version") >= version:
            first.setdefault(e.get("node"), e.t)
    assert set(first) == {n.name for n in RUN.cluster.nodes}, "an agent never removed the backend"
    return max(first.values()) - kill_t


@settings(max_examples=200, deadline=None, derandomize=True)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_failover_outage_and_removal_fall_inside_the_predicted_intervals_and_the_hold_survives(seed):
    obs = TwinBackend().run(RUN, seed)
    (pred,) = obs.predictions
    kill, restart = obs.kills
    assert (kill.action, kill.pod, restart.action) == ("kill", KILLED, "restart")
    client = [r for r in obs.requests if r.name == "client"]
    assert client and all(r.outcome == "answered" for r in client if r.t < kill.t)
    failed = [r for r in client if kill.t <= r.t < restart.t and r.outcome != "answered"]
    assert failed and all((r.backend, r.outcome) == (KILLED, "refused") for r in failed)
    rlo, rhi = removal_interval(readiness_probe(RUN.cluster.pod(KILLED)))
    assert rlo <= _removal(obs, kill.t) <= rhi
    lo, hi = pred["outage_s"]
    assert lo <= failed[-1].t - kill.t <= hi
    assert [(h.backend, h.state) for h in obs.holds] == [(OTHER, "alive"), (OTHER, "alive")]
