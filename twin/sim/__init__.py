"""The twin: a SimPy discrete-event model of the cluster in virtual time, built
from components (API server, node agents, the endpoint pipeline, clients)."""
from twin.sim.backend import TwinBackend
from twin.sim.world import SimConfig

__all__ = ["SimConfig", "TwinBackend"]
