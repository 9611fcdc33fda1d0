"""Bandwidth quantities, LB-IPAM allocation and L2 announcement candidates."""
from __future__ import annotations

import ipaddress

import pytest

from twinhelp import SEED_DIR, SEED_VALUES, ClusterView, docs_text, load, pod
from twin.model.objects import IPBlock
from twin.semantics.bandwidth import parse_quantity
from twin.semantics.lbipam import block_addresses

pytestmark = pytest.mark.pure


@pytest.mark.parametrize("raw,bps", [
    ("10M", 10_000_000), ("10Mi", 10_485_760), ("1.5G", 1_500_000_000), ("100k", 100_000),
    ("1e6", 1_000_000), ("1E3", 1_000), ("2Gi", 2 * 2**30), ("1000", 1000), (" 5M ", 5_000_000),
    ("0.5k", 500), ("1500m", 2), (".5M", 500_000), ("1T", 10**12),
])
def test_bandwidth_quantities_are_bits_per_second(raw, bps):
    assert parse_quantity(raw) == bps


@pytest.mark.parametrize("raw", ["10 Mbit", "10MB", "ten", "", "M", "1.2.3", "10mi", "10K", "1e", "--1"])
def test_bad_bandwidth_quantities_raise_value_error(raw):
    with pytest.raises(ValueError):
        parse_quantity(raw)


# ------------------------------------------------------------------ LB-IPAM

def net(c: str) -> IPBlock:
    return IPBlock(cidr=ipaddress.IPv4Network(c))


def strs(addrs) -> list[str]:
    return [str(a) for a in addrs]


def test_cidr_block_skips_first_and_last_unless_allowed():
    assert strs(block_addresses(net("10.0.0.0/29"), False)) == [f"10.0.0.{i}" for i in range(1, 7)]
    assert strs(block_addresses(net("10.0.0.0/29"), True)) == [f"10.0.0.{i}" for i in range(0, 8)]
    assert strs(block_addresses(net("10.0.0.0/30"), False)) == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("allow", [False, True])
def test_slash_31_and_slash_32_use_every_address(allow):
    assert strs(block_addresses(net("10.0.0.4/31"), allow)) == ["10.0.0.4", "10.0.0.5"]
    assert strs(block_addresses(net("10.0.0.9/32"), allow)) == ["10.0.0.9"]


@pytest.mark.parametrize("allow", [False, True])
def test_start_stop_ranges_use_every_address_inclusive(allow):
    b = IPBlock(start=ipaddress.IPv4Address("10.0.0.0"), stop=ipaddress.IPv4Address("10.0.0.3"))
    assert strs(block_addresses(b, allow)) == ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]


def pool(name: str, blocks: list, allow: str | None = None, selector: dict | None = None) -> dict:
    spec: dict = {"blocks": blocks}
    if allow:
        spec["allowFirstLastIPs"] = allow
    if selector:
        spec["serviceSelector"] = selector
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": name},
            "spec": spec}


def lb(name: str, labels: dict | None = None, lb_ip: str | None = None, ann: dict | None = None,
       etp: str | None = None, ext: list | None = None, stype: str = "LoadBalancer") -> dict:
    d: dict = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"type": stype, "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    if labels:
        d["metadata"]["labels"] = labels
    if ann:
        d["metadata"]["annotations"] = ann
    if lb_ip:
        d["spec"]["loadBalancerIP"] = lb_ip
    if etp:
        d["spec"]["externalTrafficPolicy"] = etp
    if ext:
        d["spec"]["externalIPs"] = ext
    return d


def alloc(*docs, values=None) -> dict:
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}), *docs), values=values))
    return {k: strs(ips) for k, ips in v.allocation.ips.items()}


def test_allocation_follows_manifest_order_of_services():
    got = alloc(pool("p", [{"cidr": "10.1.0.0/29"}]), lb("zeta"), lb("alpha"), lb("mid"))
    assert got == {"default/zeta": ["10.1.0.1"], "default/alpha": ["10.1.0.2"], "default/mid": ["10.1.0.3"]}


def test_allow_first_last_yes_hands_out_the_network_address_first():
    got = alloc(pool("p", [{"cidr": "10.1.0.0/30"}], "Yes"), lb("a"), lb("b"), lb("c"), lb("d"), lb("e"))
    assert got == {"default/a": ["10.1.0.0"], "default/b": ["10.1.0.1"], "default/c": ["10.1.0.2"],
                   "default/d": ["10.1.0.3"]}


def test_pool_blocks_are_used_in_order_and_exhaustion_leaves_services_without_ip():
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}),
                                   pool("p", [{"cidr": "10.1.0.8/32"}, {"start": "10.1.0.20", "stop": "10.1.0.21"}]),
                                   lb("a"), lb("b"), lb("c"), lb("d"))))
    assert {k: strs(i) for k, i in v.allocation.ips.items()} == {
        "default/a": ["10.1.0.8"], "default/b": ["10.1.0.20"], "default/c": ["10.1.0.21"]}
    assert v.allocation.reasons == {"default/d": "out_of_ips"}


def test_service_selector_on_pools_routes_services_to_their_pool():
    got = alloc(pool("blue", [{"cidr": "10.1.0.0/30"}], selector={"matchLabels": {"color": "blue"}}),
                pool("red", [{"cidr": "10.2.0.0/30"}],
                     selector={"matchExpressions": [{"key": "color", "operator": "In", "values": ["red"]}]}),
                pool("by-name", [{"cidr": "10.3.0.0/30"}],
                     selector={"matchLabels": {"io.kubernetes.service.name": "named"}}),
                lb("r", {"color": "red"}), lb("b", {"color": "blue"}), lb("named"), lb("none"))
    assert got == {"default/r": ["10.2.0.1"], "default/b": ["10.1.0.1"], "default/named": ["10.3.0.1"]}


def test_requested_load_balancer_ip_is_honoured_when_free_in_a_matching_pool():
    got = alloc(pool("p", [{"cidr": "10.1.0.0/29"}]), lb("a"), lb("want5", lb_ip="10.1.0.5"), lb("b"),
                lb("outside", lb_ip="10.9.9.9"), lb("taken", lb_ip="10.1.0.5"))
    assert got == {"default/a": ["10.1.0.1"], "default/want5": ["10.1.0.5"], "default/b": ["10.1.0.2"]}


def test_lb_ipam_ips_annotation_requests_addresses():
    got = alloc(pool("p", [{"cidr": "10.1.0.0/29"}]), lb("a", ann={"io.cilium/lb-ipam-ips": "10.1.0.3,10.1.0.4"}))
    assert got == {"default/a": ["10.1.0.3", "10.1.0.4"]}


def test_disabled_pool_allocates_nothing_and_other_load_balancer_classes_are_skipped():
    p = pool("p", [{"cidr": "10.1.0.0/29"}])
    p["spec"]["disabled"] = True
    assert alloc(p, lb("a")) == {}
    other = lb("b")
    other["spec"]["loadBalancerClass"] = "example.com/other"
    assert alloc(pool("q", [{"cidr": "10.1.0.0/29"}]), other) == {}


def test_cluster_ip_services_get_no_lb_ip():
    assert alloc(pool("p", [{"cidr": "10.1.0.0/29"}]), lb("c", stype="ClusterIP")) == {}


# ------------------------------------------------------------------ L2 announcements

def l2policy(service_selector=None, node_selector=None, interfaces=None, lb_ips=True, ext_ips=False) -> dict:
    spec: dict = {"loadBalancerIPs": lb_ips, "externalIPs": ext_ips}
    if service_selector is not None:
        spec["serviceSelector"] = service_selector
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if interfaces is not None:
        spec["interfaces"] = interfaces
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": "l2"},
            "spec": spec}


L2_ON = "l2announcements: {enabled: true}\nexternalIPs: {enabled: true}\n"
NOT_CP = {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}


def announcements(*docs, values=L2_ON, pod_node="k8s-w1"):
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}, node=pod_node), pool("p", [{"cidr": "10.10.200.0/29"}]), *docs),
                         values=values))
    return v.announcements


def test_seed_service_labelled_blue_is_announced_by_workers_only():
    text = (SEED_DIR / "l2.yaml").read_text()
    labelled = text.replace("metadata:\n  name: svc1\n", "metadata:\n  name: svc1\n  labels:\n    color: blue\n")
    assert labelled != text
    c = load(labelled, (SEED_DIR / "pods.yaml").read_text(), values=SEED_VALUES.read_text())
    v = ClusterView(c)
    a = v.announcements["default/svc1"]
    assert a.announced and a.reason == ""
    assert a.candidate_nodes == ("k8s-w1", "k8s-w2")
    assert [str(i) for i in a.ips] == ["10.10.200.1"]
    assert a.lease == "cilium-l2announce-default-svc1"
    assert a.interfaces == {"k8s-w1": ("ens5",), "k8s-w2": ("ens5",)}
    assert not v.announcements["default/svc2"].announced
    s = {x["name"]: x for x in v.show()["services"]}
    assert s["svc1"]["l2"]["announced"] is True and s["svc1"]["l2"]["candidate_nodes"] == ["k8s-w1", "k8s-w2"]


def test_service_is_announced_only_if_selected_l2_enabled_and_it_has_an_ip():
    blue = {"matchLabels": {"color": "blue"}}
    a = announcements(l2policy(blue), lb("blue", {"color": "blue"}), lb("red", {"color": "red"}))
    assert a["default/blue"].announced
    assert not a["default/red"].announced and "no CiliumL2AnnouncementPolicy" in a["default/red"].reason
    a = announcements(l2policy(blue), lb("blue", {"color": "blue"}), values="l2announcements: {enabled: false}\n")
    assert not a["default/blue"].announced and "enabled is false" in a["default/blue"].reason
    a = announcements(l2policy(blue), lb("blue", {"color": "blue"}, stype="ClusterIP"))
    assert not a["default/blue"].announced and "no external or LoadBalancer IP" in a["default/blue"].reason


def test_policy_without_service_selector_selects_every_service():
    a = announcements(l2policy(), lb("x"), lb("y"))
    assert a["default/x"].announced and a["default/y"].announced


def test_external_ips_are_announced_only_when_the_policy_and_values_enable_them():
    svc = lb("e", stype="ClusterIP", ext=["192.168.10.50"])
    a = announcements(l2policy(lb_ips=False, ext_ips=True), svc)
    assert a["default/e"].announced and [str(i) for i in a["default/e"].ips] == ["192.168.10.50"]
    a = announcements(l2policy(lb_ips=False, ext_ips=True), svc, values="l2announcements: {enabled: true}\n")
    assert not a["default/e"].announced
    a = announcements(l2policy(lb_ips=True, ext_ips=False), svc)
    assert not a["default/e"].announced


def test_node_selector_excludes_the_control_plane():
    a = announcements(l2policy(node_selector=NOT_CP), lb("x"))
    assert a["default/x"].candidate_nodes == ("k8s-w1", "k8s-w2")
    a = announcements(l2policy(), lb("x"))
    assert a["default/x"].candidate_nodes == ("k8s-s", "k8s-w1", "k8s-w2")


def node(name: str, ifaces: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}, "annotations": {"twin.dev/interfaces": ifaces}}}


def test_interface_regexes_pick_candidate_nodes_and_interfaces():
    nodes = [node("n1", "ens5,eth1"), node("n2", "eth0"), node("n3", "bond0,ens6")]
    a = announcements(*nodes, l2policy(interfaces=["^ens[0-9]+"]), lb("x"), pod_node="n2")["default/x"]
    assert a.candidate_nodes == ("n1", "n3")
    assert a.interfaces == {"n1": ("ens5",), "n3": ("ens6",)}
    a = announcements(*nodes, l2policy(interfaces=["^eth", "bond"]), lb("x"), pod_node="n2")["default/x"]
    assert a.interfaces == {"n1": ("eth1",), "n2": ("eth0",), "n3": ("bond0",)}
    a = announcements(*nodes, l2policy(interfaces=["^wlan"]), lb("x"), pod_node="n2")["default/x"]
    assert not a.announced and "no candidate node" in a.reason


def test_external_traffic_policy_local_limits_candidates_to_nodes_with_backends():
    a = announcements(l2policy(), lb("x", etp="Local"))["default/x"]
    assert a.candidate_nodes == ("k8s-w1",)  # the only backend pod runs on k8s-w1
