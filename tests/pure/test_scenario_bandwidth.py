"""Bandwidth Manager scenario steps (throughput, annotate, await of a background
throughput) parsed by the one scenario loader, with errors naming the field, and
the three scenario files of issue 8 loading with what they promise (placement,
desired limits along the run, typo findings)."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.inputs import load_cluster, load_run_inputs
from twin.model.findings import InputError
from twin.model.run import needs_bandwidth
from twin.model.scenario import parse_scenario
from twin.model.yamlsrc import Source
from twin.semantics.bandwidth import egress_limit
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]

HEAD = """scenario: t
manifests: [x.yaml]
steps:
"""


def parse(steps: str):
    return parse_scenario(Source("s.yaml", HEAD + steps))


def errors(steps: str) -> list[str]:
    with pytest.raises(InputError) as exc:
        parse(steps)
    return [f"{f.field}: {f.message}" for f in exc.value.findings]


def test_throughput_step_defaults_to_the_seeds_direction_server_pod_sends():
    sc = parse("  - throughput: {name: t1, from: netperf-client, to: default/netperf-server}\n")
    tp = sc.steps[0].throughput
    assert (tp.src, tp.dst, tp.port, tp.duration_s, tp.parallel, tp.direction, tp.interval_s, tp.background) == \
        ("default/netperf-client", "default/netperf-server", 5201, 5.0, 1, "reverse", 1.0, False)
    assert tp.sender == "default/netperf-server" and tp.receiver == "default/netperf-client"


def test_forward_throughput_makes_the_client_pod_the_sender():
    tp = parse("  - throughput: {name: t1, from: a, to: b, direction: forward, parallel: 4, duration: 3s,"
               " interval: 500ms, port: 6000}\n").steps[0].throughput
    assert tp.sender == "default/a" and tp.receiver == "default/b"
    assert (tp.parallel, tp.duration_s, tp.interval_s, tp.port) == (4, 3.0, 0.5, 6000)


def test_await_of_a_background_throughput_names_it():
    sc = parse("  - throughput: {name: bg, from: a, to: b, background: true}\n"
               "  - await: {throughput: bg}\n")
    assert sc.steps[0].throughput.background and sc.steps[1].kind == "await" and sc.steps[1].name == "bg"


def test_await_of_a_foreground_throughput_is_an_error_naming_the_step():
    errs = errors("  - throughput: {name: fg, from: a, to: b}\n  - await: {throughput: fg}\n")
    assert any(e.startswith("steps[1].await:") and "'fg'" in e for e in errs), errs


@pytest.mark.parametrize("step, field", [
    ("{name: t, from: a, to: b, direction: sideways}", "steps[0].throughput.direction"),
    ("{name: t, from: a, to: b, parallel: 0}", "steps[0].throughput.parallel"),
    ("{name: t, from: a, to: b, parallel: 17}", "steps[0].throughput.parallel"),
    ("{name: t, from: a, to: b, duration: 500ms}", "steps[0].throughput.duration"),
    ("{name: t, from: a, to: b, duration: 2s, interval: 3s}", "steps[0].throughput.interval"),
    ("{name: t, from: a, to: b, port: 70000}", "steps[0].throughput.port"),
    ("{name: t, from: a, to: 'svc:default/x'}", "steps[0].throughput.to"),
    ("{name: t, from: external, to: b}", "steps[0].throughput.from"),
    ("{from: a, to: b}", "steps[0].throughput.name"),
    ("{name: t, from: a, to: b, speed: 10M}", "steps[0].throughput.speed"),
])
def test_bad_throughput_fields_are_errors_naming_the_field(step, field):
    errs = errors(f"  - throughput: {step}\n")
    assert any(e.startswith(field) for e in errs), errs


def test_annotate_step_sets_and_removes_pod_annotations():
    s = parse("  - annotate: {object: Pod/default/netperf-server, set: {kubernetes.io/egress-bandwidth: 5M},"
              " remove: [kubernetes.io/ingress-bandwidth]}\n").steps[0]
    assert s.kind == "annotate" and s.label.kind == "Pod" and s.label.key == "default/netperf-server"
    assert s.label.set == (("kubernetes.io/egress-bandwidth", "5M"),)
    assert s.label.remove == ("kubernetes.io/ingress-bandwidth",)


@pytest.mark.parametrize("step, field", [
    ("{object: Service/default/x, set: {a: b}}", "steps[0].annotate.object"),
    ("{object: Pod/default/x}", "steps[0].annotate"),
])
def test_bad_annotate_steps_are_errors_naming_the_field(step, field):
    errs = errors(f"  - annotate: {step}\n")
    assert any(e.split(":")[0] == field for e in errs), errs


def test_rate_tolerance_outside_0_to_1_is_an_error_naming_the_setting():
    with pytest.raises(InputError) as exc:
        parse_scenario(Source("s.yaml", "scenario: t\nmanifests: [x.yaml]\nsettings: {rate_tolerance: 1.5}\n"
                                        "steps:\n  - wait: 1s\n"))
    assert any(f.field == "settings.rate_tolerance" for f in exc.value.findings)


def _limits_along(inputs, pod: str) -> list:
    out = []
    for step in inputs.scenario.steps:
        if step.kind == "throughput":
            cluster = inputs.cluster
            for s in inputs.scenario.steps[:step.index]:
                cluster = inputs.desired.get(s.index, cluster)
            lim = egress_limit(cluster.pod(step.throughput.sender), cluster.values)
            out.append((step.name, lim.rate_bps if lim else None, cluster.pod(step.throughput.sender).node
                        == cluster.pod(step.throughput.receiver).node))
    return out


def test_seed_bandwidth_places_the_client_across_nodes_and_the_second_client_beside_the_server():
    inputs = load_run_inputs(str(ROOT / "scenarios/seed-bandwidth.yaml"))
    nodes = {p.key: p.node for p in inputs.cluster.pods}
    assert nodes["default/netperf-server"] != nodes["default/netperf-client"]
    assert nodes["default/netperf-server"] == nodes["default/netperf-client-same-node"]
    assert needs_bandwidth(inputs)
    assert inputs.scenario.settings.rate_tolerance == 0.05
    # the sender's enforced wire rate when each throughput step starts (10M → 5M → 20M, then 20M while
    # the annotation changes to 10M, then 10M but on one node)
    assert _limits_along(inputs, "default/netperf-server") == [
        ("cross-node-10M", 10_000_000, False), ("cross-node-5M", 5_000_000, False),
        ("cross-node-20M", 20_000_000, False), ("across-change-20M-to-10M", 20_000_000, False),
        ("same-node-unlimited", 10_000_000, True)]


def test_rate_limit_sharing_has_one_limited_and_one_unlimited_sender_on_one_node():
    inputs = load_run_inputs(str(ROOT / "scenarios/rate-limit-sharing.yaml"))
    c = inputs.cluster
    assert c.pod("default/limited-sender").node == c.pod("default/unlimited-sender").node
    assert egress_limit(c.pod("default/limited-sender"), c.values).rate_bps == 10_000_000
    assert egress_limit(c.pod("default/unlimited-sender"), c.values) is None
    par = [s.throughput.parallel for s in inputs.scenario.steps if s.kind == "throughput"]
    assert par == [1, 2, 4]


def test_rate_limit_typos_each_get_a_finding_and_no_enforced_limit():
    inputs = load_run_inputs(str(ROOT / "scenarios/rate-limit-typos.yaml"))
    c = inputs.cluster
    typos = {"default/typo-mbps": "10Mbps", "default/typo-lower-mi": "10mi", "default/typo-negative": "-5M",
             "default/typo-zero": "0"}
    for pod, raw in typos.items():
        lim = egress_limit(c.pod(pod), c.values)
        assert lim.raw == raw and not lim.enforced and lim.rate_bps is None
    found = {f.object.split()[-1] for f in ClusterView(load_cluster(
        [str(ROOT / "examples/bandwidth/typos.yaml")], str(ROOT / "examples/values/seed.yaml"))).findings
        if "egress-bandwidth" in f.field}
    assert found == set(typos)
