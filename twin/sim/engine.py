"""``simulate()``: the twin's older entry point, kept for callers that pass the
scenario, cluster and applies separately and read plain dicts (the harness
runner until it calls :class:`~twin.sim.backend.TwinBackend` directly)."""
from __future__ import annotations

from dataclasses import dataclass, field

from twin.model.objects import Cluster, NetworkPolicy
from twin.model.observations import FlowRecord
from twin.model.run import RunInputs
from twin.model.scenario import Scenario
from twin.sim.backend import TwinBackend
from twin.sim.world import SimConfig


@dataclass
class SimResult:
    flows: list[FlowRecord] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # time-ordered log
    traffic: list[dict] = field(default_factory=list)  # one row per request through a service
    holds: list[dict] = field(default_factory=list)  # check results of long-lived connections
    syscalls: list[dict] = field(default_factory=list)
    kills: list[dict] = field(default_factory=list)  # kill/restart times
    predictions: list[dict] = field(default_factory=list)
    end_time: float = 0.0


def simulate(scenario: Scenario, cluster: Cluster, applies: dict[int, list[NetworkPolicy]],
             config: SimConfig = SimConfig()) -> SimResult:
    """Run a scenario in virtual time.  ``applies`` maps an apply step's index to its policies."""
    inputs = RunInputs.plan(scenario, cluster, applies)
    obs = TwinBackend(config.delays, dict(config.overrides)).run(inputs, config.seed)
    d = obs.as_dict()
    return SimResult(flows=list(obs.flows), events=d["events"], traffic=d["traffic"], holds=d["holds"],
                     syscalls=d["syscalls"], kills=d["kills"], predictions=obs.predictions,
                     end_time=obs.virtual_seconds or 0.0)
