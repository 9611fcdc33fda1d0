"""identity_of_ip answers what the node's ipcache says, without building the ipcache."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from tests.pure.twinhelp import seed_cluster
from twin.semantics.identity import Identities
from twin.model.enums import ReservedIdentity

pytestmark = pytest.mark.pure

CLUSTER = seed_cluster()
IDS = Identities(CLUSTER)
NODES = [n.name for n in CLUSTER.nodes]
KNOWN = [p.ip for p in CLUSTER.pods] + [n.ip for n in CLUSTER.nodes]


def _from_ipcache(ip, node: str) -> int:
    return IDS.ipcache(node).get(ipaddress.IPv4Network(f"{ip}/32"), int(ReservedIdentity.WORLD))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(KNOWN), st.ip_addresses(v=4),
                 st.integers(0, 3 * 256 - 1).map(lambda i: ipaddress.IPv4Address("172.16.0.0") + i)),
       st.sampled_from(NODES))
def test_identity_of_ip_equals_the_nodes_ipcache_entry(ip, node):
    assert IDS.identity_of_ip(ip, node) == _from_ipcache(ip, node)


def test_a_nodes_own_address_is_host_there_and_remote_node_elsewhere():
    a, b = CLUSTER.nodes[0], CLUSTER.nodes[1]
    assert IDS.identity_of_ip(a.ip, a.name) == int(ReservedIdentity.HOST)
    assert IDS.identity_of_ip(a.ip, b.name) == int(ReservedIdentity.REMOTE_NODE)
