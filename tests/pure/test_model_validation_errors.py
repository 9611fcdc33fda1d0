"""Bad inputs: every error names the file, the object, the field path and the line."""
from __future__ import annotations

import pytest

from twinhelp import SEED_DIR, SEED_VALUES, load_errors, only_error, run_twin, text

pytestmark = pytest.mark.pure


def cnp_text(spec_body: str, name: str = "r") -> str:
    """A CNP whose `spec:` is on line 5; spec_body is indented under it."""
    return text("""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: {name}
        spec:
        """).format(name=name) + "\n".join("  " + line for line in text(spec_body).splitlines()) + "\n"


PORT_SPEC = """
endpointSelector:
  matchLabels:
    app: web
ingress:
- fromEndpoints:
  - matchLabels:
      app: client
  toPorts:
  - ports:
    - port: {port}
      protocol: {proto}{extra}
"""


def port_cnp(port='"80"', proto="TCP", extra="") -> str:
    return cnp_text(PORT_SPEC.format(port=port, proto=proto, extra=extra))


CASES = {
    # id: (manifest text, object, field, line, message fragment)
    "unknown_field": (
        text("""
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers:
          - name: c
            image: i
            imagePolicy: Always
        """), "Pod default/p", "spec.containers[0].imagePolicy", 9, "unknown field 'imagePolicy'"),
    "port_out_of_range": (port_cnp('"99999"'), "CiliumNetworkPolicy default/r",
                          "spec.ingress[0].toPorts[0].ports[0].port", 15, "99999"),
    "port_bad_name": (port_cnp('"http-"'), "CiliumNetworkPolicy default/r",
                      "spec.ingress[0].toPorts[0].ports[0].port", 15, "port name"),
    "endport_below_port": (port_cnp("8080", extra="\n      endPort: 8000"), "CiliumNetworkPolicy default/r",
                           "spec.ingress[0].toPorts[0].ports[0].endPort", 17, "8000"),
    "l7_on_udp": (port_cnp('"53"', "UDP", "\n    rules:\n      http:\n      - method: GET"),
                  "CiliumNetworkPolicy default/r", "spec.ingress[0].toPorts[0].ports[0].protocol", 16, "TCP"),
    "rule_without_sections": (cnp_text("endpointSelector: {}\ndescription: nothing"),
                              "CiliumNetworkPolicy default/r", "spec", 5,
                              "at least one of ingress, ingressDeny, egress, egressDeny"),
    "empty_ingress_list": (cnp_text("endpointSelector: {}\ningress: []"),
                           "CiliumNetworkPolicy default/r", "spec", 5, "ingress present but empty"),
    "both_selectors": (cnp_text("endpointSelector: {}\nnodeSelector: {}\ningress:\n- {}"),
                       "CiliumNetworkPolicy default/r", "spec", 5, "both endpointSelector and nodeSelector"),
    "unknown_kind": (text("""
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: cm
        """), "ConfigMap cm", "kind", 2, "unsupported kind 'ConfigMap'"),
    "wrong_api_version": (text("""
        apiVersion: cilium.io/v1
        kind: CiliumNetworkPolicy
        metadata:
          name: r
        spec:
          endpointSelector: {}
          ingress:
          - {}
        """), "CiliumNetworkPolicy default/r", "apiVersion", 1, "cilium.io/v2"),
    "bad_match_expression_operator": (
        cnp_text("endpointSelector:\n  matchExpressions:\n  - key: app\n    operator: Equals\n    values: [web]\ningress:\n- {}"),
        "CiliumNetworkPolicy default/r", "spec.endpointSelector.matchExpressions[0].operator", 9, "Equals"),
    "duplicate_pod": (text("""
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c, image: i}]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c, image: i}]
        """), "Pod default/p", "metadata.name", 11, "duplicate Pod default/p"),
    "service_without_ports": (text("""
        apiVersion: v1
        kind: Service
        metadata:
          name: s
        spec:
          selector: {app: web}
        """), "Service default/s", "spec.ports", 5, "at least one port"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_error_names_file_object_field_and_line(case):
    manifest, obj, field, line, fragment = CASES[case]
    findings = load_errors(manifest, names=(f"{case}.yaml",))
    f = only_error(findings, field)
    assert f.file == f"{case}.yaml"
    assert f.object == obj
    assert f.line == line, f.render()
    assert fragment in f.message
    rendered = f.render()
    assert rendered.startswith(f"{case}.yaml:{line}: error: {obj} {field}".replace(" spec:", " spec:"))


def test_yaml_syntax_error_names_file_and_line():
    findings = load_errors("apiVersion: v1\nkind: Pod\nmetadata: {name: [p\n  x: 1\n", names=("broken.yaml",))
    f = only_error(findings)
    assert f.file == "broken.yaml"
    assert "YAML syntax error" in f.message
    assert f.line == 4


def test_values_file_with_bad_duration_names_values_file_field_and_line():
    values = text("""
        l2announcements:
          enabled: true
          leaseDuration: 3 sec
        """)
    findings = load_errors("", values=values)
    f = only_error(findings, "l2announcements.leaseDuration")
    assert (f.file, f.object, f.line) == ("values.yaml", "values", 3)
    assert "3 sec" in f.message


def test_values_file_with_wrong_type_is_an_error():
    findings = load_errors("", values="bandwidthManager:\n  enabled: yes please\n")
    f = only_error(findings, "bandwidthManager.enabled")
    assert f.line == 2


def test_all_errors_of_a_file_are_reported_not_just_the_first():
    findings = load_errors(CASES["service_without_ports"][0] + "---\n" + CASES["unknown_kind"][0])
    assert {f.field for f in findings} == {"spec.ports", "kind"}


def test_l7_rules_in_deny_section_are_rejected():
    manifest = cnp_text(PORT_SPEC.replace("ingress:", "ingressDeny:").format(
        port='"80"', proto="TCP", extra="\n    rules:\n      http:\n      - method: GET"))
    f = only_error(load_errors(manifest), "spec.ingressDeny[0].toPorts[0].rules")
    assert "deny" in f.message


def test_named_port_with_endport_is_rejected():
    f = only_error(load_errors(port_cnp("http", extra="\n      endPort: 90")))
    assert f.field == "spec.ingress[0].toPorts[0].ports[0].endPort"


def test_unknown_entity_is_rejected():
    manifest = cnp_text("endpointSelector: {}\ningress:\n- fromEntities: [everyone]")
    f = only_error(load_errors(manifest), "spec.ingress[0].fromEntities[0]")
    assert "everyone" in f.message and f.line == 8


def test_unsupported_cilium_field_is_rejected_with_a_clear_message():
    manifest = cnp_text("endpointSelector: {}\ningress:\n- fromCIDR: [10.0.0.0/8]")
    f = only_error(load_errors(manifest), "spec.ingress[0].fromCIDR")
    assert "does not model" in f.message


def test_bad_operator_value_combinations_are_rejected():
    manifest = cnp_text("endpointSelector:\n  matchExpressions:\n  - key: app\n    operator: In\ningress:\n- {}")
    f = only_error(load_errors(manifest))
    assert f.field == "spec.endpointSelector.matchExpressions[0].values"
    manifest = cnp_text("endpointSelector:\n  matchExpressions:\n  - key: app\n    operator: Exists\n    values: [x]\ningress:\n- {}")
    assert only_error(load_errors(manifest)).field == "spec.endpointSelector.matchExpressions[0].values"


# ------------------------------------------------------------------ CLI exit codes

def write(tmp_path, name: str, content: str):
    p = tmp_path / name
    p.write_text(content)
    return p


def test_twin_validate_exits_2_and_prints_the_located_error(tmp_path):
    bad = write(tmp_path, "bad.yaml", port_cnp('"99999"'))
    r = run_twin("validate", bad)
    assert r.returncode == 2
    assert f"{bad}:15: error: CiliumNetworkPolicy default/r spec.ingress[0].toPorts[0].ports[0].port" in r.stdout


def test_twin_validate_exits_2_on_a_bad_values_file(tmp_path):
    vals = write(tmp_path, "values.yaml", "l2announcements:\n  leaseRetryPeriod: fast\n")
    r = run_twin("validate", SEED_DIR / "pods.yaml", "--values", vals)
    assert r.returncode == 2
    assert "l2announcements.leaseRetryPeriod" in r.stdout


def test_twin_validate_exits_1_with_strict_on_warnings_and_0_without(tmp_path):
    # a pod whose bandwidth annotation does not parse: Cilium applies no limit, the twin warns
    man = write(tmp_path, "bw.yaml", text("""
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
          annotations:
            kubernetes.io/egress-bandwidth: 10 Mbit
        spec:
          containers: [{name: c, image: i}]
        """))
    vals = write(tmp_path, "values.yaml", "bandwidthManager:\n  enabled: true\n")
    r = run_twin("validate", man, "--values", vals)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{man}:1: warning: Pod default/p metadata.annotations[kubernetes.io/egress-bandwidth]" in r.stdout
    r = run_twin("validate", man, "--values", vals, "--strict")
    assert r.returncode == 1
    # the seed's L2 policy selects no service: also a warning
    assert run_twin("validate", SEED_DIR / "l2.yaml", "--values", SEED_VALUES, "--strict").returncode == 1


def test_twin_validate_exits_0_with_strict_when_there_is_nothing_to_say(tmp_path):
    good = write(tmp_path, "good.yaml", (SEED_DIR / "pods.yaml").read_text())
    r = run_twin("validate", good, "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stdout


def test_twin_validate_exits_2_on_a_missing_file(tmp_path):
    r = run_twin("validate", tmp_path / "nope.yaml")
    assert r.returncode == 2
