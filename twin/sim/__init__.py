"""The twin: a SimPy discrete-event model of the cluster in virtual time."""
from twin.sim.engine import SimConfig, SimResult, simulate

__all__ = ["SimConfig", "SimResult", "simulate"]
