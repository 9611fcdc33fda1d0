"""Timing model of the twin: where virtual time goes, with injected randomness.

All durations in seconds.  Randomness comes from one seeded ``random.Random``
so a run is deterministic for a given seed.  The numbers are the twin's
prediction and are compared with the real side by the harness, with
tolerances; they are not tuned to make a test pass.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    #: one-way packet latency between pods on the same node (veth + BPF)
    same_node_s: float = 30e-6
    #: one-way latency between pods on different nodes (plus the LAN bridge)
    cross_node_s: float = 80e-6
    #: an HTTP server's time to answer
    server_s: float = 0.5e-3
    #: the API server's time to accept an object (apply/delete)
    api_s: float = 5e-3
    #: an agent's time from the API event to its maps being updated
    #: (watch delivery + policy regeneration), uniform in [min, max]
    agent_min_s: float = 10e-3
    agent_max_s: float = 60e-3

    def agent_delay(self, rng: random.Random) -> float:
        return rng.uniform(self.agent_min_s, self.agent_max_s)

    def rtt(self, same_node: bool) -> float:
        return 2 * (self.same_node_s if same_node else self.cross_node_s)
