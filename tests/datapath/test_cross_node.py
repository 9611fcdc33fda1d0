"""Two nodes, each with its own BPF object and conntrack, pods on different nodes."""
from __future__ import annotations

import ipaddress

import pytest

from twin.model.enums import Direction, Protocol

from builders import allow, enforced, table
from conftest import ID_A, ID_B, require_kernel
from datapath.node import EndpointSpec, NodeDatapath
from topology import Topology, connect, start_server

pytestmark = pytest.mark.datapath

EGRESS, INGRESS = Direction.EGRESS, Direction.INGRESS


@pytest.fixture
def two_nodes():
    require_kernel()
    t = Topology()
    try:
        n1, n2 = t.add_node("n1"), t.add_node("n2")
        t.link_nodes(n1, "192.168.77.1", n2, "192.168.77.2")
        a = t.add_pod("a", "10.200.0.1", node=n1)
        b = t.add_pod("b", "10.201.0.2", node=n2)
        t.route(n1, "10.201.0.0/24", "192.168.77.2")
        t.route(n2, "10.200.0.0/24", "192.168.77.1")
        yield t, (n1, a), (n2, b)
    finally:
        t.destroy()


def test_cross_node_connection_checks_both_policies_and_replies_pass(two_nodes):
    t, (n1, a), (n2, b) = two_nodes
    ipcache = {ipaddress.IPv4Network("10.200.0.1/32"): ID_A, ipaddress.IPv4Network("10.201.0.2/32"): ID_B}
    # a may open TCP 8080 to b; b accepts it; every other direction is default-deny.
    policy = table(
        enforced(ID_A, EGRESS, {ID_B: (allow(Protocol.TCP, 8080, rule=1),)}),
        enforced(ID_A, INGRESS),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 8080, rule=2),)}),
        enforced(ID_B, EGRESS),
    )
    with NodeDatapath(n1) as dp1, NodeDatapath(n2) as dp2:
        dp1.attach([a.lxc])
        dp2.attach([b.lxc])
        dp1.set_endpoints([EndpointSpec(a.lxc, ID_A, a.ip)])
        dp2.set_endpoints([EndpointSpec(b.lxc, ID_B, b.ip)])
        for dp in (dp1, dp2):
            dp.set_ipcache(ipcache)
            dp.set_policy(policy)
        srv = start_server(b, "tcp", 8080)
        srv2 = start_server(b, "tcp", 8081)
        try:
            assert connect(a, "tcp", b.ip, 8080), "cross-node allowed connection failed (reply dropped?)"
            assert not connect(a, "tcp", b.ip, 8081), "cross-node connection to a non-allowed port passed"
        finally:
            srv.kill(); srv2.kill()

        ct1 = {(k.direction, k.dport) for k in dp1.conntrack_entries()}
        ct2 = {(k.direction, k.dport) for k in dp2.conntrack_entries()}
        assert (EGRESS, 8080) in ct1 and (INGRESS, 8080) not in ct1, ct1
        assert (INGRESS, 8080) in ct2 and (EGRESS, 8080) not in ct2, ct2
        # node 1 forwarded a->b:8081 (a's egress allows only 8080? no: 8081 drops at a's egress)
        drops1 = [r for r in dp1.read_events(100) if r.verdict.name == "DROPPED"]
        assert drops1 and all(r.direction == EGRESS and r.dst_port == 8081 for r in drops1)
