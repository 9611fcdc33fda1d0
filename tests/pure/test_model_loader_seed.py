"""Loading the seed manifests: no errors, deterministic names, scheduling, addresses, LB-IPAM, L2."""
from __future__ import annotations

import ipaddress
import re

import pytest

from twinhelp import (L3L4, L7, SEED_DIR, SEED_VALUES, ClusterView, file_source, load, pod, docs_text,
                      seed_cluster, seed_sources, warnings_of)
from twin.model.build import build_cluster

pytestmark = pytest.mark.pure

SEED_FILES = sorted(SEED_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SEED_FILES + [L3L4, L7], ids=lambda p: p.name)
def test_each_seed_manifest_loads_alone_without_errors(path):
    cluster = build_cluster([file_source(path)], file_source(SEED_VALUES))
    errors = [f for f in cluster.findings if f.severity.value == "error"]
    assert errors == []


@pytest.mark.parametrize("policy", [L3L4, L7], ids=lambda p: p.name)
def test_whole_seed_with_each_policy_loads_with_the_expected_objects(policy):
    c = seed_cluster(policy)
    assert not [f for f in c.findings if f.severity.value == "error"]
    assert {p.name for p in c.pods if not p.name.startswith("deathstar-")} == {
        "netpod", "webpod1", "webpod2", "tiefighter", "xwing", "netperf-server", "netperf-client"}
    assert len([p for p in c.pods if p.owner == "Deployment/deathstar"]) == 2
    assert {s.key for s in c.services} == {"default/svc", "default/svc1", "default/svc2", "default/svc3",
                                           "default/deathstar"}
    assert [p.key for p in c.policies] == ["default/rule1"]
    assert [n.name for n in c.nodes] == ["k8s-s", "k8s-w1", "k8s-w2"]


def test_seed_values_are_read():
    v = seed_cluster().values
    assert v.bandwidth_manager is True
    assert v.external_ips is True
    assert v.l2.enabled is True
    assert (v.l2.lease_duration_s, v.l2.renew_deadline_s, v.l2.retry_period_s) == (3.0, 1.0, pytest.approx(0.2))


def test_deployment_pod_names_are_deterministic_and_shaped_like_kubernetes():
    a = [p.name for p in seed_cluster().pods if p.owner]
    b = [p.name for p in seed_cluster(L7).pods if p.owner]
    assert a == b
    assert len(set(a)) == 2
    for name in a:
        assert re.fullmatch(r"deathstar-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
    # the middle part is the pod-template-hash label
    for p in seed_cluster().pods:
        if p.owner:
            assert dict(p.labels)["pod-template-hash"] == p.name.split("-")[1]


def test_changing_the_deployment_template_changes_the_pod_template_hash():
    base = (SEED_DIR / "http-sw-app.yaml").read_text()
    changed = base.replace("image: docker.io/cilium/starwars", "image: docker.io/cilium/starwars:v2")
    assert changed != base
    n1 = sorted(p.name for p in load(base).pods if p.owner)
    n2 = sorted(p.name for p in load(changed).pods if p.owner)
    assert {n.split("-")[1] for n in n1} != {n.split("-")[1] for n in n2}


def test_scheduler_keeps_unpinned_pods_off_the_tainted_control_plane():
    c = seed_cluster()
    unpinned = [p for p in c.pods if p.name not in ("netpod", "webpod1", "webpod2")]
    assert unpinned
    assert all(p.node != "k8s-s" for p in unpinned)
    assert c.pod("default/netpod").node == "k8s-s"  # nodeName bypasses the taint


def test_pod_tolerating_the_control_plane_taint_may_land_there():
    p = pod("tolerant", node=None)
    p["spec"]["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                 "effect": "NoSchedule"}]
    c = load(docs_text(p))
    assert c.pod("default/tolerant").node == "k8s-s"  # fewest pods, first in order


def test_netperf_anti_affinity_puts_client_and_server_on_different_nodes():
    c = seed_cluster()
    server, client = c.pod("default/netperf-server"), c.pod("default/netperf-client")
    assert server.node != client.node
    assert {server.node, client.node} <= {"k8s-w1", "k8s-w2"}
    # also when the bandwidth file is loaded alone (both workers empty)
    c2 = build_cluster([file_source(SEED_DIR / "bandwidth.yaml")])
    assert c2.pod("default/netperf-server").node != c2.pod("default/netperf-client").node


def test_unsatisfiable_anti_affinity_is_an_error():
    server = pod("s0", {"app": "srv"}, node=None)
    others = []
    for i in range(3):
        p = pod(f"c{i}", {"app": "srv"}, node=None)
        p["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "srv"}}, "topologyKey": "kubernetes.io/hostname"}]}}
        others.append(p)
    from twin.model.findings import InputError
    with pytest.raises(InputError) as exc:
        load(docs_text(server, *others))
    assert any("no node fits" in f.message for f in exc.value.findings)


def test_pod_ips_are_unique_and_inside_their_node_pod_cidr():
    c = seed_cluster(L3L4)
    ips = [p.ip for p in c.pods]
    assert len(set(ips)) == len(ips)
    for p in c.pods:
        cidr = c.node(p.node).pod_cidr
        assert p.ip in cidr
        assert p.ip not in (cidr.network_address, cidr.network_address + 1, cidr.broadcast_address)
    assert c.pod("default/netpod").ip == ipaddress.IPv4Address("172.16.0.10")


def test_node_pod_cidrs_do_not_overlap():
    nodes = seed_cluster().nodes
    for a in nodes:
        for b in nodes:
            if a is not b:
                assert not a.pod_cidr.overlaps(b.pod_cidr)


def test_cluster_ips_are_in_the_service_cidr_and_distinct():
    c = seed_cluster()
    ips = [s.cluster_ip for s in c.services]
    assert len(set(ips)) == len(ips)
    assert all(ip in c.service_cidr for ip in ips)


def test_lb_ipam_gives_svc1_svc2_svc3_the_first_three_usable_addresses():
    v = ClusterView(seed_cluster())
    ips = {k: [str(i) for i in v] for k, v in v.allocation.ips.items()}
    assert ips == {"default/svc1": ["10.10.200.1"], "default/svc2": ["10.10.200.2"],
                   "default/svc3": ["10.10.200.3"]}
    assert v.allocation.conflicting == ()


def test_seed_l2_policy_warns_that_it_selects_no_service_and_nothing_is_announced():
    v = ClusterView(seed_cluster())
    w = warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy policy1", "spec.serviceSelector")
    assert len(w) == 1
    assert "selects no service" in w[0].message
    assert w[0].file.endswith("l2.yaml")
    assert not any(a.announced for a in v.announcements.values())
    assert v.announcements["default/svc1"].reason == ("no CiliumL2AnnouncementPolicy selects the service "
                                                      "(policy1 selects color=blue)")


def test_seed_has_no_warnings_other_than_the_l2_selector():
    v = ClusterView(seed_cluster(L3L4))
    assert [(f.object, f.field) for f in v.all_findings()] == [("CiliumL2AnnouncementPolicy policy1",
                                                               "spec.serviceSelector")]


def test_seed_bandwidth_annotation_limits_netperf_server_to_10_mbit():
    v = ClusterView(seed_cluster())
    assert v.egress_bandwidth(v.cluster.pod("default/netperf-server")) == (10_000_000, "")
    assert v.egress_bandwidth(v.cluster.pod("default/netperf-client")) == (None, "")


def test_service_backends_follow_the_selector():
    from twin.semantics.services import backends
    c = seed_cluster()
    svc = c.service("default/deathstar")
    assert sorted(b.pod.name for b in backends(c, svc, svc.ports[0])) == sorted(
        p.name for p in c.pods if p.owner == "Deployment/deathstar")
    svc = c.service("default/svc")
    assert sorted(b.address for b in backends(c, svc, svc.ports[0])) == ["172.16.1.10:80", "172.16.2.10:80"]
