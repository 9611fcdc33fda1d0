"""Pure: what the host program on a node's LAN interface holds, compiled from
the semantics (north-south frontends, SNAT for remote backends, ARP responder
entries for held leases)."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from twinhelp import seed_cluster
from datapath.compile_ns import compile_north_south, ns_dump_lines, plan_host
from datapath.errors import LBCompileError
from twin.model.enums import Protocol
from twin.semantics.lb import lb_table
from twin.semantics.tables import LBBackend, LBService, LBTable

pytestmark = pytest.mark.pure

SVC1_LEASE = "cilium-l2announce-default-svc1"
LB1 = ipaddress.IPv4Address("10.10.200.1")


@pytest.fixture(scope="module")
def seed():
    return seed_cluster()


@pytest.fixture(scope="module")
def blue(seed):
    """The seed after its walkthrough's `label` step: svc1 carries color: blue."""
    return seed.with_labels("Service", "default/svc1", {"color": "blue"})


def test_seed_north_south_maps_on_w1_hold_only_lb_frontends_and_snat_the_w2_backend(seed):
    maps = compile_north_south(lb_table(seed), seed, "k8s-w1")
    assert ns_dump_lines(maps) == [
        "svc 10.10.200.1:80/TCP slot=0 count=2 revnat=1",
        "svc 10.10.200.1:80/TCP slot=1 backend=1",
        "svc 10.10.200.1:80/TCP slot=2 backend=2",
        "svc 10.10.200.2:80/TCP slot=0 count=2 revnat=2",
        "svc 10.10.200.2:80/TCP slot=1 backend=1",
        "svc 10.10.200.2:80/TCP slot=2 backend=2",
        "svc 10.10.200.3:80/TCP slot=0 count=2 revnat=3",
        "svc 10.10.200.3:80/TCP slot=1 backend=1",
        "svc 10.10.200.3:80/TCP slot=2 backend=2",
        "backend 1 172.16.1.10:80/TCP ACTIVE",
        "backend 2 172.16.2.10:80/TCP ACTIVE",
        "revnat 1 10.10.200.1:80",
        "revnat 2 10.10.200.2:80",
        "revnat 3 10.10.200.3:80",
        "remote 172.16.2.10 via node 192.168.10.102",
    ]


def test_the_remote_backends_depend_on_the_receiving_node(seed):
    table = lb_table(seed)
    assert dict(compile_north_south(table, seed, "k8s-w2").remote) == {
        ipaddress.IPv4Address("172.16.1.10"): ipaddress.IPv4Address("192.168.10.101")}
    on_s = compile_north_south(table, seed, "k8s-s").remote  # the control plane has no webpod
    assert set(on_s) == {ipaddress.IPv4Address("172.16.1.10"), ipaddress.IPv4Address("172.16.2.10")}


def test_cluster_ips_are_not_north_south_frontends(seed):
    maps = compile_north_south(lb_table(seed), seed, "k8s-w1")
    cluster_ips = {s.frontend_ip for s in lb_table(seed).services if s.kind == "ClusterIP"}
    assert cluster_ips and not cluster_ips & {k.address for k in maps.lb.services}


def test_terminating_backends_are_in_no_slot_and_a_frontend_without_active_backend_has_count_zero(seed):
    be1 = LBBackend(ipaddress.IPv4Address("172.16.1.10"), 80, Protocol.TCP, "default/webpod1", "terminating")
    fe = LBService("default/svc1", LB1, 80, Protocol.TCP, "LoadBalancer", (be1,))
    maps = compile_north_south(LBTable((fe,)), seed, "k8s-w1")
    assert ns_dump_lines(maps) == [
        "svc 10.10.200.1:80/TCP slot=0 count=0 revnat=1",
        "backend 1 172.16.1.10:80/TCP TERMINATING",
        "revnat 1 10.10.200.1:80",
    ]


def test_unknown_node_or_backend_pod_is_a_clear_error(seed):
    with pytest.raises(LBCompileError, match="node 'nope'"):
        compile_north_south(lb_table(seed), seed, "nope")
    be = LBBackend(ipaddress.IPv4Address("172.16.1.99"), 80, Protocol.TCP, "default/ghost", "active")
    fe = LBService("default/svc1", LB1, 80, Protocol.TCP, "LoadBalancer", (be,))
    with pytest.raises(LBCompileError, match="default/ghost"):
        compile_north_south(LBTable((fe,)), seed, "k8s-w1")


def test_without_an_announced_service_no_responder_but_the_uplink_still_carries_the_program(seed):
    plan = plan_host(seed, "k8s-w1", {SVC1_LEASE})  # the seed as written: nothing is blue
    assert plan.interfaces == ("ens5",) and plan.responders == frozenset()
    assert {fe.frontend_ip for fe in plan.frontends} == {LB1, LB1 + 1, LB1 + 2}


def test_the_lease_holder_answers_for_the_services_ips_on_its_selected_interfaces(blue):
    plan = plan_host(blue, "k8s-w1", {SVC1_LEASE})
    assert plan.responders == {(LB1, "ens5")}
    assert plan.node_ip == ipaddress.IPv4Address("192.168.10.101")
    assert plan_host(blue, "k8s-w1", set()).responders == frozenset()


def test_a_node_that_is_no_candidate_answers_nothing_even_holding_the_lease(blue):
    # the control plane is excluded by the policy's nodeSelector
    assert plan_host(blue, "k8s-s", {SVC1_LEASE}).responders == frozenset()


def test_every_selected_interface_of_the_node_gets_an_entry(blue):
    nodes = tuple(dataclasses.replace(n, interfaces=("ens5", "ens6", "eth1")) if n.name == "k8s-w2" else n
                  for n in blue.nodes)
    c = dataclasses.replace(blue, nodes=nodes)
    plan = plan_host(c, "k8s-w2", {SVC1_LEASE})
    assert plan.interfaces == ("ens5", "ens6")  # ^ens[0-9]+ does not select eth1
    assert plan.responders == {(LB1, "ens5"), (LB1, "ens6")}


def test_gratuitous_arp_frame_is_a_broadcast_request_with_sender_ip_equal_to_target_ip():
    from datapath.garp import GarpError, garp_frame

    mac = bytes.fromhex("02abcdef0123")
    frame = garp_frame(mac, LB1)
    assert len(frame) == 42
    assert frame[0:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[0:8] == bytes([0, 1, 8, 0, 6, 4, 0, 1])  # Ethernet/IPv4, request
    assert arp[8:14] == mac and arp[14:18] == LB1.packed  # sender
    assert arp[18:24] == b"\x00" * 6 and arp[24:28] == LB1.packed  # target: the same IP
    with pytest.raises(GarpError):
        garp_frame(b"\x01\x02", LB1)
