"""Inputs Kubernetes or Cilium accept without a word: the loader says so, at the
field's line (errors for what cannot work, warnings for what is ignored)."""
from __future__ import annotations

import pytest

from twin.model import limits
from twin.model.load.values import parse_duration
from twinhelp import load, load_errors, only_error, text, warnings_of

pytestmark = pytest.mark.pure

NODE = "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}}}\n"


def test_two_nodes_with_the_same_name_are_an_error_at_the_second():
    f = only_error(load_errors(NODE.format(name="n1", cidr="172.16.0.0/24") + "---\n"
                               + NODE.format(name="n1", cidr="172.16.1.0/24")))
    assert (f.field, f.line) == ("metadata.name", 8) and "duplicate Node" in f.message


@pytest.mark.parametrize("cidr,overlaps", [("0.0.0.0/0", "service CIDR"), ("192.168.10.0/28", "node network"),
                                           ("172.16.0.0/16", "node n0's pod CIDR")])
def test_a_pod_cidr_overlapping_anything_else_is_an_error(cidr, overlaps):
    f = only_error(load_errors(NODE.format(name="n0", cidr="172.16.0.0/24") + "---\n" + NODE.format(name="n1", cidr=cidr)))
    assert f.field == "spec.podCIDR" and overlaps in f.message


def test_duplicate_keys_in_a_mapping_are_an_error_naming_both_lines():
    f = only_error(load_errors("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nkind: Namespace\n"))
    assert (f.field, f.line) == ("kind", 4) and "first at line 2" in f.message


def test_a_readiness_probe_naming_an_undefined_port_is_an_error():
    f = only_error(load_errors(text("""
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - {name: c, image: i, ports: [{containerPort: 80, name: web}], readinessProbe: {httpGet: {port: wbe}}}
        """)))
    assert f.field == "spec.containers[0].readinessProbe.httpGet.port" and "'wbe'" in f.message


def test_a_readiness_probe_naming_a_defined_port_loads():
    c = load(text("""
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - {name: c, image: i, ports: [{containerPort: 80, name: web}], readinessProbe: {httpGet: {port: web}}}
        """))
    assert c.pods[0].containers[0].readiness.port == "web"


@pytest.mark.parametrize("field,value", [("sessionAffinity", "ClientIP"), ("internalTrafficPolicy", "Local"),
                                         ("publishNotReadyAddresses", "true"),
                                         ("loadBalancerSourceRanges", "[10.0.0.0/8]")])
def test_service_fields_the_twin_does_not_model_are_warnings(field, value):
    c = load(f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  ports: [{{port: 80}}]\n  {field}: {value}\n")
    [w] = warnings_of(c.findings, "Service default/s", f"spec.{field}")
    assert w.line == 6 and "not modelled" in w.message


def test_a_host_network_pod_is_a_warning():
    c = load("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: i}]\n")
    [w] = warnings_of(c.findings, "Pod default/p", "spec.hostNetwork")
    assert w.line == 5


def test_an_explicit_null_is_a_field_left_out():
    c = load("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, targetPort: null, protocol: null}]\n")
    sp = c.services[0].ports[0]
    assert (sp.target_port, sp.protocol) == (80, "TCP")


def test_replicas_above_the_limit_are_an_error_naming_it():
    f = only_error(load_errors(text(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: d}}
        spec:
          replicas: {limits.MAX_REPLICAS + 1}
          selector: {{matchLabels: {{app: d}}}}
          template: {{metadata: {{labels: {{app: d}}}}, spec: {{containers: [{{name: c, image: i}}]}}}}
        """)))
    assert f.field == "spec.replicas" and "MAX_REPLICAS" in f.message


def test_a_pool_block_larger_than_the_limit_is_an_error_naming_it():
    fs = load_errors("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\n"
                     "spec:\n  blocks: [{cidr: 10.0.0.0/8}]\n")
    assert any("MAX_POOL_ADDRESSES" in f.message and f.field == "spec.blocks[0].cidr" for f in fs)


@pytest.mark.parametrize("text_", ["1e44h", "99999999999999999999999999999999h", "169h", "-1s", "1 s", "s"])
def test_durations_that_are_not_go_durations_or_exceed_the_limit_are_refused(text_):
    with pytest.raises(ValueError):
        parse_duration(text_)


def test_durations_within_the_limit_parse():
    assert parse_duration("1m30s") == 90.0 and parse_duration("168h") == limits.MAX_DURATION_S


def test_a_boolean_where_a_values_section_belongs_is_an_error_and_the_section_reads_as_unset():
    fs = load_errors("", values="l2announcements: true\nsocketLB: [x]\n")
    assert {f.field for f in fs} == {"l2announcements", "socketLB"}
