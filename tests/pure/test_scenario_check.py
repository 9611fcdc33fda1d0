"""Scenarios against their cluster (check_scenario), limits, and the one loader
of a run's inputs (load_run_inputs): problems are input errors naming the
scenario file, the step's line and field, before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.inputs import load_run_inputs
from twin.model import limits
from twin.model.findings import InputError
from twin.model.scenario import parse_scenario
from twin.model.scenario_check import check_scenario
from twin.model.yamlsrc import Source
from twinhelp import ROOT, SEED_DIR, load, seed_cluster, text, warnings_of

pytestmark = pytest.mark.pure

HEAD = f"""scenario: t
manifests: [{SEED_DIR}/pods.yaml, {SEED_DIR}/service.yaml]
steps:
"""


def scenario(steps: str, name: str = "s.yaml"):
    return parse_scenario(Source(name, HEAD + steps))


def findings(steps: str):
    sc = scenario(steps)
    return check_scenario(sc, seed_cluster())


def fields(fs):
    return {f.field for f in fs}


def test_a_valid_service_scenario_has_no_findings():
    assert findings("""\
  - hold: {name: h, from: default/netpod, to: svc:default/svc, port: 80, backend: default/webpod2}
  - requests: {name: r, from: netpod, to: svc:default/svc, port: 80, count: 3}
  - kill: {pod: default/webpod1}
  - restart: {pod: default/webpod1}
""") == []


def test_unknown_pods_and_services_are_errors_naming_step_field_and_line():
    fs = findings("""\
  - requests: {name: r, from: default/ghost, to: svc:default/nope, port: 80, count: 3}
  - probe: {name: p, from: default/netpod, to: default/phantom, port: 80}
""")
    assert fields(fs) == {"steps[0].requests.from", "steps[0].requests.to", "steps[1].probe.to"}
    assert all(f.file == "s.yaml" and f.severity.value == "error" for f in fs)
    assert {f.line for f in fs} == {4, 5}


def test_a_port_the_service_does_not_have_is_an_error_listing_its_ports():
    [f] = findings("  - requests: {name: r, from: default/netpod, to: svc:default/svc, port: 8080, count: 3}\n")
    assert f.field == "steps[0].requests.port" and "80/TCP" in f.message


def test_udp_requests_to_a_tcp_only_port_are_an_error():
    [f] = findings("  - requests: {name: r, from: default/netpod, to: svc:default/svc, port: 80, kind: udp, count: 3}\n")
    assert "no port 80/UDP" in f.message


def test_restart_without_kill_and_double_kill_are_errors():
    fs = findings("""\
  - restart: {pod: default/webpod1}
  - kill: {pod: default/webpod2}
  - kill: {pod: default/webpod2}
""")
    assert fields(fs) == {"steps[0].restart.pod", "steps[2].kill.pod"}


def test_killing_a_pod_no_service_selects_is_an_error():
    [f] = findings("  - kill: {pod: default/netpod}\n")
    assert "not a backend" in f.message


def test_a_bare_hold_backend_names_the_pod_in_default_as_both_backends_read_it():
    sc = scenario("  - hold: {name: h, from: netpod, to: svc:svc, port: 80, backend: webpod2}\n")
    assert sc.steps[0].hold.backend == "default/webpod2"
    assert check_scenario(sc, seed_cluster()) == []


def test_hold_on_a_pod_the_service_does_not_select_is_an_error():
    [f] = findings("  - hold: {name: h, from: default/netpod, to: svc:default/svc, port: 80, backend: default/netpod}\n")
    assert f.field == "steps[0].hold.backend"


@pytest.mark.parametrize("step,field", [
    ("  - requests: {name: r, from: a, to: svc:default/svc, count: 100000000}\n", "steps[0].requests.count"),
    ("  - requests: {name: r, from: a, to: svc:default/svc, count: -1}\n", "steps[0].requests.count"),
    ("  - requests: {name: r, from: a, to: svc:default/svc, count: 0}\n", "steps[0].requests.count"),
    ("  - probe: {name: p, from: a, to: b, count: 100000000}\n", "steps[0].probe.count"),
    ("  - loop: {name: l, from: a, to: svc:default/svc, interval: 1ms, duration: 200h}\n", "steps[0].loop"),
    ("  - loop: {name: l, from: a, to: svc:default/svc, interval: 0s, duration: 2s}\n", "steps[0].loop.interval"),
    ("  - wait: 1e44h\n", "steps[0].wait"),
    ("  - wait: 99999999999999999999999999999h\n", "steps[0].wait"),
    ("  - hold: {name: h, from: a, to: svc:default/svc, port: 70000, backend: b}\n", "steps[0].hold.port"),
])
def test_counts_ports_and_durations_outside_the_limits_are_errors(step, field):
    with pytest.raises(InputError) as exc:
        scenario(step)
    assert field in fields(exc.value.findings)


def test_the_limits_are_named_in_the_message():
    with pytest.raises(InputError) as exc:
        scenario("  - requests: {name: r, from: a, to: svc:default/svc, count: 100000000}\n")
    assert "MAX_REQUESTS" in exc.value.findings[0].message
    with pytest.raises(InputError) as exc:
        scenario("  - wait: 1000h\n")
    assert "MAX_DURATION_S" in exc.value.findings[0].message and 1000 * 3600 > limits.MAX_DURATION_S


def test_a_non_number_chi2_alpha_is_an_error_not_a_type_error():
    with pytest.raises(InputError) as exc:
        parse_scenario(Source("s.yaml", HEAD.replace("steps:", "settings: {chi2_alpha: [1]}\nsteps:") + "  - wait: 1s\n"))
    assert fields(exc.value.findings) == {"settings.chi2_alpha"}


def test_load_run_inputs_names_the_apply_step_and_line_of_a_bad_policy_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}}\n")
    sc = tmp_path / "s.yaml"
    sc.write_text(HEAD + "  - wait: 1s\n  - apply: bad.yaml\n")
    with pytest.raises(InputError) as exc:
        load_run_inputs(str(sc))
    first = exc.value.findings[0]
    assert (first.file, first.line, first.field) == (str(sc), 5, "steps[1].apply")
    assert any(f.file == str(bad) for f in exc.value.findings[1:])


def test_load_run_inputs_plans_the_desired_cluster_after_each_change_step():
    inputs = load_run_inputs(str(ROOT / "scenarios" / "seed-deathstar-l3l4.yaml"))
    applies = [s for s in inputs.scenario.steps if s.kind == "apply"]
    assert applies and all(inputs.after(s).policies for s in applies)


def test_named_ports_nobody_defines_are_warnings_at_their_line():
    cluster = load(text("""
        apiVersion: v1
        kind: Pod
        metadata: {name: web, labels: {app: web}}
        spec:
          nodeName: k8s-w1
          containers:
          - name: c
            image: i
            ports: [{containerPort: 80, name: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports:
          - port: 80
            targetPort: htp
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: p}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          ingress:
          - toPorts:
            - ports: [{port: http}, {port: grpc}]
        """))
    w = warnings_of(cluster.findings)
    by_obj = {(f.object, f.field): f for f in w}
    svc = by_obj[("Service default/web", "spec.ports[0].targetPort")]
    assert svc.line == 18 and "htp" in svc.message
    cnp = by_obj[("CiliumNetworkPolicy default/p", "spec.ingress[0].toPorts[0].ports[1].port")]
    assert cnp.line == 27 and "grpc" in cnp.message
    assert ("CiliumNetworkPolicy default/p", "spec.ingress[0].toPorts[0].ports[0].port") not in by_obj


def test_corpus_directory_exists_next_to_this_test():
    assert (Path(__file__).parent / "corpus" / "README.md").is_file()


def test_pinging_a_service_is_an_error():
    [f] = findings("  - probe: {name: p, from: default/netpod, to: svc:default/svc, kind: ping}\n")
    assert f.field == "steps[0].probe.kind"


def test_each_kill_is_paired_with_the_loop_running_at_that_point():
    from twin.model.scenario import kill_loops
    sc = scenario("""\
  - kill: {pod: default/webpod1}
  - loop: {name: l1, from: netpod, to: svc:svc, port: 80, duration: 2s}
  - kill: {pod: default/webpod2}
  - await: {loop: l1}
  - restart: {pod: default/webpod1}
""")
    assert [(pod, loop.name if loop else None) for pod, loop in kill_loops(sc)] == [
        ("default/webpod1", None), ("default/webpod2", "l1")]
