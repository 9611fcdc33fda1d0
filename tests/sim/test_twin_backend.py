"""Sim tier: the twin as a Backend — typed observations, determinism, and one
random stream per component (a what-if changes only what it changes)."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from simhelp import inputs, without_wall
from twin.model.objects import Node
from twin.model.observations import FlowRecord, HoldResult, KillRecord, Observations, RequestRecord
from twin.model.run import Backend
from twin.semantics.delays import DELAYS
from twin.semantics.dists import Constant
from twin.semantics.endpoints import kill_predictions
from twin.sim import TwinBackend

pytestmark = pytest.mark.sim


def _events(obs: Observations, name: str, **match) -> list[dict]:
    return [e.as_dict() for e in obs.events if e.event == name and all(e.get(k) == v for k, v in match.items())]


def test_twin_backend_is_a_backend_that_can_always_run():
    b = TwinBackend()
    assert isinstance(b, Backend)
    assert b.name == "twin" and b.unavailable_reason() is None


def test_failover_run_returns_typed_records_with_the_kill_step_and_the_analytical_predictions():
    run = inputs("lb-backend-failover")
    obs = TwinBackend().run(run, seed=3)
    assert obs.backend == "twin" and obs.requests and all(isinstance(r, RequestRecord) for r in obs.requests)
    assert [type(h) for h in obs.holds] == [HoldResult, HoldResult]
    kill_step = next(s.index for s in run.scenario.steps if s.kind == "kill")
    restart_step = next(s.index for s in run.scenario.steps if s.kind == "restart")
    assert [(k.action, k.pod, k.step) for k in obs.kills] == [("kill", "default/webpod1", kill_step),
                                                              ("restart", "default/webpod1", restart_step)]
    assert all(isinstance(k, KillRecord) for k in obs.kills)
    loop = next(s.traffic for s in run.scenario.steps if s.kind == "loop")
    assert obs.predictions == kill_predictions(run.cluster, [("default/webpod1", loop)])
    assert obs.virtual_seconds >= 14.0 and obs.wall_seconds >= 0


def test_deathstar_run_returns_flow_records_keyed_by_probe_and_destination():
    obs = TwinBackend().run(inputs("seed-deathstar-l3l4"), seed=1)
    assert obs.flows and all(isinstance(f, FlowRecord) for f in obs.flows)
    keys = [f.key for f in obs.flows]
    assert len(set(keys)) == len(keys)
    deathstar = sorted(p.key for p in inputs("seed-deathstar-l3l4").cluster.pods if p.key.startswith("default/deathstar"))
    assert len(deathstar) == 2
    assert {f.key: f.verdict for f in obs.flows if f.probe == "xwing-dropped-after-rule1"} == {
        f"xwing-dropped-after-rule1→{d}": "DROPPED" for d in deathstar}


@pytest.mark.parametrize("name", ["lb-backend-failover", "seed-deathstar-l3l4", "seed-service-socket-lb"])
def test_same_seed_gives_identical_observations(name):
    run = inputs(name)
    a, b = TwinBackend().run(run, seed=11), TwinBackend().run(run, seed=11)
    assert without_wall(a.as_dict()) == without_wall(b.as_dict())


def test_another_seed_changes_the_draws():
    run = inputs("lb-backend-failover")
    a, b = TwinBackend().run(run, seed=1), TwinBackend().run(run, seed=2)
    assert [r.backend for r in a.requests] != [r.backend for r in b.requests]


def test_the_delays_the_run_used_are_in_its_event_log():
    slow = DELAYS.replace(agent_regenerate=Constant(0.5))
    obs = TwinBackend(overrides={"agent:k8s-w1": slow}).run(inputs("seed-pod-to-pod"), seed=5)
    assert [e["seed"] for e in _events(obs, "twin-run")] == [5]
    logged = [{k: v for k, v in e.items() if k not in ("t", "event")} for e in _events(obs, "twin-delay")]
    assert logged == DELAYS.describe() + [{"component": "agent:k8s-w1", **d} for d in slow.describe()]
    assert {"component": "agent:k8s-w1", "delay": "agent-regenerate", "dist": "constant", "value": 0.5,
            "origin": "what-if override (model: {'dist': 'uniform', 'lo': 0.01, 'hi': 0.06})"} in logged


def test_slowing_one_node_agent_changes_only_that_agent():
    """A what-if on the agent of k8s-w1 leaves every other component's draws as they were:
    the client's backend choices, the prober's probes, the other agents' regenerations."""
    run = inputs("lb-backend-failover")
    base = TwinBackend().run(run, seed=4)
    slow = DELAYS.replace(agent_regenerate=Constant(0.5))
    what_if = TwinBackend(overrides={"agent:k8s-w1": slow}).run(run, seed=4)
    w1 = lambda obs: _events(obs, "agent-regenerated", node="k8s-w1")  # noqa: E731
    others = lambda obs: [e.as_dict() for e in obs.events  # noqa: E731
                          if e.event != "twin-delay" and e.get("node") != "k8s-w1"]
    assert w1(base) and w1(base) != w1(what_if)  # the override took effect
    assert others(base) == others(what_if)
    assert [r.as_dict() for r in base.requests] == [r.as_dict() for r in what_if.requests]
    assert base.holds == what_if.holds


def test_adding_an_unrelated_node_shifts_no_other_components_draws():
    run = inputs("seed-deathstar-l3l4")
    n0 = run.cluster.nodes[-1]
    extra = Node("k8s-extra", n0.labels, ipaddress.IPv4Address("192.168.10.250"), ipaddress.IPv4Network("10.250.0.0/24"))
    bigger = dataclasses.replace(run, cluster=dataclasses.replace(run.cluster, nodes=run.cluster.nodes + (extra,)),
                                 desired={i: dataclasses.replace(c, nodes=c.nodes + (extra,)) for i, c in run.desired.items()})
    base, more = TwinBackend().run(run, seed=9), TwinBackend().run(bigger, seed=9)
    assert _events(more, "agent-regenerated", node="k8s-extra")  # the new agent runs
    known = lambda obs: [e.as_dict() for e in obs.events if e.get("node") != "k8s-extra"]  # noqa: E731
    assert known(base) == known(more)
    assert [f.as_dict() for f in base.flows] == [f.as_dict() for f in more.flows]
