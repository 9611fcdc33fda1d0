"""What both backends share for one run: the inputs, the Backend protocol and
the one step dispatch.

A backend (the SimPy twin, the real datapath) implements :class:`Backend`;
the harness runs it and compares the :class:`~twin.model.observations.Observations`
it returns.  Inside a backend, the scenario's steps are walked by
:func:`dispatch`, which calls the handler's ``on_<kind>`` method for each step
kind, so the list of step kinds and what each means exists once.  The twin's
handlers are SimPy generators (the caller ``yield from``s the result); the
real side's handlers block.

Cluster changes along a run (``apply``/``delete`` steps) are computed once,
here, into :attr:`RunInputs.desired`: the cluster as the API server holds it
after each such step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from twin.model.findings import InputError, error
from twin.model.objects import EGRESS_ANNOTATION, Cluster, NetworkPolicy
from twin.model.observations import Observations
from twin.model.scenario import STEP_KINDS, Scenario, Step


@dataclass(frozen=True)
class RunInputs:
    """A loaded scenario, its cluster, the policies each ``apply`` step adds and
    the desired cluster after every ``apply``/``delete`` step."""

    scenario: Scenario
    cluster: Cluster
    applies: dict[int, list[NetworkPolicy]] = field(default_factory=dict)
    desired: dict[int, Cluster] = field(default_factory=dict)

    @classmethod
    def plan(cls, scenario: Scenario, cluster: Cluster, applies: dict[int, list[NetworkPolicy]],
             file: str = "") -> "RunInputs":
        """Compute the desired cluster after each change step; a ``delete`` of a
        policy that does not exist at that point is an input error naming the step."""
        desired: dict[int, Cluster] = {}
        current = cluster
        for step in scenario.steps:
            if step.kind == "apply":
                for pol in applies.get(step.index, ()):
                    current = current.with_policy(pol)
                desired[step.index] = current
            elif step.kind in ("label", "annotate"):  # metadata of an object: kubectl label / annotate
                lb = step.label
                change = current.with_labels if step.kind == "label" else current.with_annotations
                try:
                    current = change(lb.kind, lb.key, dict(lb.set), lb.remove)
                except KeyError:
                    raise InputError([error(f"Scenario {scenario.name}", f"steps[{step.index}].{step.kind}.object",
                                            f"{lb.kind}/{lb.key} does not exist", file or scenario.file,
                                            step.line)]) from None
                desired[step.index] = current
            elif step.kind == "delete":
                _, ns, name = step.target.split("/")
                try:
                    current = current.without_policy(f"{ns}/{name}")
                except KeyError:
                    raise InputError([error(f"Scenario {scenario.name}", f"steps[{step.index}].delete",
                                            f"{step.target} does not exist at this point of the scenario",
                                            file or scenario.file, step.line)]) from None
                desired[step.index] = current
        return cls(scenario, cluster, dict(applies), desired)

    def after(self, step: Step) -> Cluster:
        """The desired cluster after an ``apply``/``delete`` step."""
        return self.desired[step.index]


@runtime_checkable
class Backend(Protocol):
    """One way of running a scenario: ``twin`` (virtual time) or ``real`` (this kernel)."""

    name: str

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine, or None when it can."""
        ...

    def run(self, inputs: RunInputs, seed: int) -> Observations:
        """Run every step of the scenario and return what was observed."""
        ...


class StepHandler(Protocol):
    """One method per step kind (see ``STEP_KINDS``); :func:`dispatch` calls them."""

    def on_probe(self, step: Step) -> Any: ...
    def on_apply(self, step: Step) -> Any: ...
    def on_delete(self, step: Step) -> Any: ...
    def on_wait(self, step: Step) -> Any: ...
    def on_note(self, step: Step) -> Any: ...
    def on_requests(self, step: Step) -> Any: ...
    def on_loop(self, step: Step) -> Any: ...
    def on_await(self, step: Step) -> Any: ...
    def on_hold(self, step: Step) -> Any: ...
    def on_check(self, step: Step) -> Any: ...
    def on_kill(self, step: Step) -> Any: ...
    def on_restart(self, step: Step) -> Any: ...
    def on_syscalls(self, step: Step) -> Any: ...
    def on_label(self, step: Step) -> Any: ...
    def on_arping(self, step: Step) -> Any: ...
    def on_fault(self, step: Step) -> Any: ...
    def on_annotate(self, step: Step) -> Any: ...
    def on_throughput(self, step: Step) -> Any: ...


def dispatch(handler: StepHandler, step: Step) -> Any:
    """Call ``handler.on_<step.kind>(step)`` and return what it returns."""
    if step.kind not in STEP_KINDS:
        raise ValueError(f"unknown step kind {step.kind!r}")
    return getattr(handler, f"on_{step.kind}")(step)


def needs_l2(scenario: Scenario, cluster: Cluster) -> bool:
    """Whether a run needs the L2 machinery (API server with Leases, electors,
    ARP responders, the external host's ARP): L2 announcements are enabled and a
    step uses them, or some LoadBalancer service could be announced."""
    if not cluster.values.l2.enabled:
        return False
    return bool(cluster.l2_policies) or any(s.kind in ("arping", "fault") for s in scenario.steps)


def needs_services(scenario: Scenario) -> bool:
    """Whether a run needs the endpoint pipeline and service traffic machinery."""
    return any(s.kind in ("requests", "loop", "hold", "kill", "restart", "syscalls") for s in scenario.steps)


def needs_bandwidth(inputs: RunInputs) -> bool:
    """Whether a run needs the Bandwidth Manager machinery (the limiter on each node's
    native device, iperf3 servers): ``bandwidthManager.enabled`` and a ``throughput`` or
    ``annotate`` step, or a pod with an egress annotation at any point of the run."""
    if not inputs.cluster.values.bandwidth_manager:
        return False
    if any(s.kind in ("throughput", "annotate") for s in inputs.scenario.steps):
        return True
    return any(p.annotation(EGRESS_ANNOTATION) is not None
               for c in (inputs.cluster, *inputs.desired.values()) for p in c.pods)
