"""What the twin's components share in one run: the SimPy environment, the
observation log, the delays (with per-component what-ifs), a stream per
component, and which servers are up."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

import simpy

from twin.model.observations import Observations
from twin.model.run import RunInputs
from twin.semantics.delays import DELAYS, Delays
from twin.sim.streams import stream


@dataclass(frozen=True)
class SimConfig:
    """How the twin runs: the seed, the delays, and per-component what-ifs.

    ``overrides`` maps ``"<kind>:<name>"`` (e.g. ``"agent:k8s-w1"``,
    ``"prober:default/webpod1"``) to the delays that one component uses
    instead of ``delays``.  The analytical predictions use ``delays``.
    """

    seed: int = 1
    delays: Delays = DELAYS
    overrides: Mapping[str, Delays] = field(default_factory=dict)


class Servers:
    """Which pods' servers are up (kill/restart steps flip them)."""

    def __init__(self):
        self.dead: set[str] = set()

    def alive(self, pod: str) -> bool:
        return pod not in self.dead


class World:
    def __init__(self, inputs: RunInputs, config: SimConfig):
        self.inputs, self.config = inputs, config
        self.scenario = inputs.scenario
        self.env = simpy.Environment()
        self.obs = Observations("twin")
        self.servers = Servers()

    def log(self, name: str, **fields) -> None:
        self.obs.log(self.env.now, name, **fields)

    def delays(self, kind: str, name: str) -> Delays:
        return self.config.overrides.get(f"{kind}:{name}", self.config.delays)

    def stream(self, kind: str, name: str) -> random.Random:
        return stream(self.config.seed, kind, name)


class Component:
    """A part of the twin with its own name, delays and random stream."""

    kind = "component"

    def __init__(self, world: World, name: str):
        self.world, self.env, self.name = world, world.env, name
        self.delays = world.delays(self.kind, name)
        self.rng = world.stream(self.kind, name)
