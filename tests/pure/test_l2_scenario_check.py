"""L2 steps of a scenario checked against its cluster before anything runs:
label, arping, fault and traffic from the external host, each problem an
error naming the step's field and line, with the semantics' reason."""
from __future__ import annotations

import pytest

from twin.model.scenario import parse_scenario
from twin.model.scenario_check import check_scenario
from twin.model.yamlsrc import Source
from twin.semantics.l2 import scenario_l2_state
from twinhelp import SEED_DIR, SEED_VALUES, seed_cluster

pytestmark = pytest.mark.pure

HEAD = f"""scenario: t
manifests: [{SEED_DIR}]
values: {SEED_VALUES}
steps:
"""


def findings(steps: str, cluster=None):
    sc = parse_scenario(Source("s.yaml", HEAD + steps))
    return check_scenario(sc, cluster or seed_cluster(), scenario_l2_state)


def by_field(fs):
    return {f.field: f for f in fs}


def test_the_seed_walkthrough_labels_then_arpings_and_cuts_off_the_holder_without_findings():
    assert findings("""\
  - arping: {name: before, service: default/svc1, expect: none}
  - label: {object: Service/default/svc1, set: {color: blue}}
  - arping: {name: after, service: default/svc1, expect: holder}
  - loop: {name: l, from: external, to: svc:default/svc1, port: 80, duration: 5s}
  - fault: {kind: partition, holder_of: default/svc1}
  - fault: {kind: heal, node: k8s-w1}
""") == []


def test_labelling_an_object_that_does_not_exist_names_the_step_and_line():
    [f] = findings("  - label: {object: Service/default/ghost, set: {color: blue}}\n")
    assert f.field == "steps[0].label.object" and f.line == 5 and "Service/default/ghost does not exist" in f.message
    [f] = findings("  - label: {object: Node/k8s-w9, set: {a: b}}\n")
    assert "k8s-w1" in f.message  # lists the nodes there are


def test_arping_a_service_that_is_not_load_balancer_is_an_error():
    [f] = findings("  - arping: {name: a, service: default/deathstar}\n")
    assert f.field == "steps[0].arping.service" and "not LoadBalancer" in f.message


def test_arping_a_load_balancer_service_without_ip_is_an_error_with_lb_ipam_reason(tmp_path):
    # the seed's /29 pool holds 6 addresses and svc1-3 take 3: four more services exhaust it
    extra = tmp_path / "more.yaml"
    extra.write_text("".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: x{i}}}
spec: {{type: LoadBalancer, selector: {{app: webpod}}, ports: [{{port: 80}}]}}
""" for i in range(4)))
    fs = findings("  - arping: {name: a, service: default/x3}\n", seed_cluster(extra))
    [f] = fs
    assert f.field == "steps[0].arping.service"
    assert "no LoadBalancer IP" in f.message and "out_of_ips" in f.message


def test_expecting_the_holder_of_a_service_nobody_announces_is_an_error_with_the_reason():
    [f] = findings("  - arping: {name: a, service: default/svc1, expect: holder}\n")
    assert f.field == "steps[0].arping.expect"
    assert "not announced" in f.message and "policy1 selects color=blue" in f.message


def test_arping_expect_must_be_holder_none_or_a_node():
    [f] = findings("  - arping: {name: a, ip: 10.10.200.1, expect: k8s-w7}\n")
    assert f.field == "steps[0].arping.expect" and "k8s-w1" in f.message


def test_fault_on_an_unknown_node_is_an_error():
    [f] = findings("  - fault: {kind: node-crash, node: k8s-w7}\n")
    assert f.field == "steps[0].fault.node"


def test_fault_at_the_holder_of_a_service_not_announced_at_that_point_names_the_reason():
    fs = findings("""\
  - fault: {kind: partition, holder_of: default/svc1}
  - label: {object: Service/default/svc1, set: {color: blue}}
  - fault: {kind: agent-kill, holder_of: default/svc1}
  - label: {object: Service/default/svc1, remove: [color]}
  - fault: {kind: agent-kill, holder_of: default/svc1}
""")
    assert set(by_field(fs)) == {"steps[0].fault.holder_of", "steps[4].fault.holder_of"}
    assert all("not announced at this point" in f.message and "color=blue" in f.message for f in fs)


def test_faults_in_a_cluster_with_l2_disabled_are_errors(tmp_path):
    from twinhelp import load
    from pathlib import Path
    texts = [p.read_text() for p in sorted(Path(SEED_DIR).glob("*.yaml"))]
    cluster = load(*texts, values="l2announcements: {enabled: false}\n")
    fs = findings("  - fault: {kind: agent-kill, node: k8s-w1}\n", cluster)
    [f] = fs
    assert f.field == "steps[0].fault.kind" and "disabled" in f.message


def test_heal_of_a_node_never_partitioned_is_an_error():
    [f] = findings("  - fault: {kind: heal, node: k8s-w1}\n")
    assert f.field == "steps[0].fault.node" and "nothing to heal" in f.message


def test_traffic_from_the_external_host_needs_a_service_with_an_lb_ip():
    fs = findings("""\
  - requests: {name: r, from: external, to: svc:default/deathstar, port: 80, count: 3}
  - loop: {name: l, from: external, to: svc:default/svc2, port: 80, duration: 2s}
""")
    f = by_field(fs)
    assert set(f) == {"steps[0].requests.to"} and "not LoadBalancer" in f["steps[0].requests.to"].message


def test_without_the_semantics_the_checks_that_need_them_are_skipped_and_the_others_run():
    sc = parse_scenario(Source("s.yaml", HEAD + """\
  - arping: {name: a, service: default/svc1, expect: holder}
  - fault: {kind: partition, node: k8s-w7}
"""))
    [f] = check_scenario(sc, seed_cluster())
    assert f.field == "steps[1].fault.node"


def test_loading_a_run_reports_l2_step_errors_as_input_errors_naming_file_and_line(tmp_path):
    from harness.inputs import load_run_inputs
    from twin.model.findings import InputError
    f = tmp_path / "s.yaml"
    f.write_text(HEAD + """\
  - label: {object: Service/default/nope, set: {color: blue}}
  - fault: {kind: partition, holder_of: default/svc2}
""")
    with pytest.raises(InputError) as exc:
        load_run_inputs(str(f))
    got = {(x.field, x.line) for x in exc.value.findings}
    assert got == {("steps[0].label.object", 5), ("steps[1].fault.holder_of", 6)}
    assert all(x.file == str(f) for x in exc.value.findings)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SERVICES = st.sampled_from(["default/svc1", "default/svc2", "default/deathstar", "default/ghost", "svc1", "kube-system/svc1"])
NODES = st.sampled_from(["k8s-s", "k8s-w1", "k8s-w2", "k8s-w9"])
LABELS = st.dictionaries(st.sampled_from(["color", "zone", "node-role.kubernetes.io/control-plane"]),
                         st.sampled_from(["blue", "red", ""]), min_size=1, max_size=2)
STEP = st.one_of(
    st.builds(lambda o, s: {"label": {"object": f"Service/{o}", "set": s}}, SERVICES, LABELS),
    st.builds(lambda n, r: {"label": {"object": f"Node/{n}", "remove": r}}, NODES, st.lists(st.sampled_from(["color", "zone"]), min_size=1)),
    st.builds(lambda s, e: {"arping": {"name": "a", "service": s, **({"expect": e} if e else {})}}, SERVICES,
              st.sampled_from([None, "holder", "none", "k8s-w1", "k8s-w9"])),
    st.builds(lambda ip, e: {"arping": {"name": "a", "ip": ip, "expect": e}}, st.sampled_from(["10.10.200.1", "10.10.200.9"]),
              st.sampled_from(["holder", "none"])),
    st.builds(lambda k, n: {"fault": {"kind": k, "node": n}}, st.sampled_from(["partition", "heal", "node-crash", "nic-down"]), NODES),
    st.builds(lambda k, s: {"fault": {"kind": k, "holder_of": s}}, st.sampled_from(["partition", "heal", "agent-kill"]), SERVICES),
    st.builds(lambda s: {"requests": {"name": "r", "from": "external", "to": f"svc:{s}", "port": 80, "count": 2}}, SERVICES),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=6))
def test_any_sequence_of_l2_steps_is_checked_without_an_exception(steps):
    import yaml

    from twin.model.findings import InputError
    from twin.model.run import RunInputs
    # give each named step a distinct name (duplicates are a parse error, not what this explores)
    for i, s in enumerate(steps):
        for body in s.values():
            if "name" in body:
                body["name"] = f"n{i}"
    text = HEAD + "".join("  - " + yaml.safe_dump(s, default_flow_style=True) for s in steps)
    try:
        sc = parse_scenario(Source("s.yaml", text))
    except InputError:
        return
    cluster = seed_cluster()
    fs = check_scenario(sc, cluster, scenario_l2_state)
    assert all(f.file == "s.yaml" and f.field.startswith("steps[") for f in fs)
    if not fs:
        RunInputs.plan(sc, cluster, {}, "s.yaml")  # a scenario the checks pass plans without an error
