"""Helpers for the sim tier: load a scenario's run inputs, and compare observations."""
from __future__ import annotations

from pathlib import Path

from harness.inputs import load_run_inputs
from twin.model.run import RunInputs

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
SEED_SCENARIOS = ("seed-pod-to-pod", "seed-service-socket-lb", "seed-deathstar-l3l4", "lb-backend-failover")


def inputs(name: str) -> RunInputs:
    loaded = load_run_inputs(str(SCENARIOS / f"{name}.yaml"))
    return RunInputs.plan(loaded.scenario, loaded.cluster, loaded.applies)


def without_wall(d: dict) -> dict:
    """An observation's JSON form without the only field that is not a function of the seed."""
    return {k: v for k, v in d.items() if k != "wall_seconds"}
