"""The twin as a :class:`~twin.model.run.Backend`: the SimPy run, as typed observations."""
from __future__ import annotations

import time

from twin.model.observations import Event, HoldResult, KillRecord, Observations, RequestRecord, SyscallFacts
from twin.model.run import RunInputs
from twin.sim.engine import SimConfig, simulate
from twin.sim.services import predictions


class TwinBackend:
    name = "twin"

    def unavailable_reason(self) -> None:
        return None

    def run(self, inputs: RunInputs, seed: int) -> Observations:
        t0 = time.perf_counter()
        res = simulate(inputs.scenario, inputs.cluster, inputs.applies, SimConfig(seed=seed))
        steps = inputs.scenario.steps
        loops = [s.traffic for s in steps if s.kind == "loop"]
        changes = [s.index for s in steps if s.kind in ("kill", "restart")]  # the sim logs them in step order
        return Observations(
            backend=self.name, flows=list(res.flows),
            events=[Event(e["t"], e["event"], {k: v for k, v in e.items() if k not in ("t", "event")}) for e in res.events],
            requests=[RequestRecord(**r) for r in res.traffic],
            holds=[HoldResult(**h) for h in res.holds],
            syscalls=[SyscallFacts(**{**s, "capture_ips": tuple(s.get("capture_ips", ()))}) for s in res.syscalls],
            kills=[KillRecord(k["t"], k["action"], k["pod"], step) for k, step in zip(res.kills, changes)],
            predictions=predictions(inputs.cluster, [(s.pod, loops[0] if loops else None)
                                                     for s in steps if s.kind == "kill"]),
            virtual_seconds=round(res.end_time, 6), wall_seconds=round(time.perf_counter() - t0, 3))
