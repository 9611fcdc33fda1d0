"""The real side's network: the model's cluster built from namespaces and veths.

Two halves: :mod:`harness.topology.plan` computes every name, MAC, address,
route, neighbour entry, sysctl and command from a cluster and a run id
(pure, tested without root); :mod:`harness.topology.build` applies a plan
with Mininet hosts and tears it down again (:class:`RealTopology`).
"""
from __future__ import annotations

from harness.errors import TopologyError
from harness.topology.build import REPO_ROOT, ExecResult, RealTopology
from harness.topology.plan import APISERVER, TopologyPlan, lxc_name, plan_topology

__all__ = ["RealTopology", "ExecResult", "TopologyError", "APISERVER", "lxc_name", "REPO_ROOT", "TopologyPlan", "plan_topology"]
