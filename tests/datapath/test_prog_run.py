"""BPF_PROG_TEST_RUN on crafted packets: the program alone, no namespaces.

Run in the test process's netns, the skb's device is loopback (ifindex 1),
so the setup step registers the endpoint under ifindex 1.
"""
from __future__ import annotations

import ipaddress

import pytest

from twin.model.enums import Direction, DropReason, Protocol

from builders import allow, enforced, table
from conftest import ID_A, ID_B, require_kernel
from datapath.maps import endpoints, ipcache
from datapath.maps.endpoints import EndpointValue
from datapath.maps.events import EventReader
from datapath.reconcile import BccMap, reconcile
from datapath.compile import compile_ipcache, compile_policy
from datapath.maps import policy as policy_map
from prog_run import TC_ACT_OK, TC_ACT_SHOT, arp_request, icmp_echo, prog_test_run, tcp_syn, tcp_synack

pytestmark = pytest.mark.datapath

A, B = "10.0.0.1", "10.0.0.2"
LO_IFINDEX = 1


@pytest.fixture
def program():
    require_kernel()
    from datapath.loader import NodeProgram

    with NodeProgram() as prog:
        # endpoint a sits behind the (test-run) device; b is a remote peer
        BccMap(prog.table("endpoints"), endpoints.CODEC).update(
            LO_IFINDEX, EndpointValue(ID_A, ipaddress.IPv4Address(A)))
        reconcile(compile_ipcache({f"{A}/32": ID_A, f"{B}/32": ID_B}), BccMap(prog.table("ipcache"), ipcache.CODEC))
        yield prog


def set_policy(prog, t) -> None:
    reconcile(compile_policy(t), BccMap(prog.table("policy"), policy_map.CODEC))


def test_syn_to_allowed_port_passes_and_synack_reply_passes(program):
    set_policy(program, table(
        enforced(ID_A, Direction.EGRESS, {ID_B: (allow(Protocol.TCP, 80, rule=1),)}),
        enforced(ID_A, Direction.INGRESS),
    ))
    events = EventReader(program.bpf)

    assert prog_test_run(program.from_container.fd, tcp_syn(A, 40000, B, 80)) == TC_ACT_OK, \
        "SYN to allowed port 80 was not passed"
    assert prog_test_run(program.to_container.fd, tcp_synack(B, 80, A, 40000)) == TC_ACT_OK, \
        "SYN-ACK reply was dropped although a's ingress only needs conntrack"
    assert prog_test_run(program.to_container.fd, tcp_syn(B, 80, A, 40001)) == TC_ACT_SHOT, \
        "a new connection into a passed although a's ingress allows nothing"

    recs = events.poll(100)
    assert [(r.direction, r.verdict.name, r.drop_reason) for r in recs] == [
        (Direction.EGRESS, "FORWARDED", DropReason.NONE),
        (Direction.INGRESS, "DROPPED", DropReason.POLICY_DENIED),
    ], "expected one new-flow event and one drop event (none for the reply)"


def test_icmp_echo_is_dropped_when_only_tcp80_is_allowed(program):
    set_policy(program, table(enforced(ID_A, Direction.EGRESS, {ID_B: (allow(Protocol.TCP, 80),)})))
    assert prog_test_run(program.from_container.fd, icmp_echo(A, B, 77)) == TC_ACT_SHOT


def test_non_ipv4_passes_untouched(program):
    set_policy(program, table(enforced(ID_A, Direction.EGRESS), enforced(ID_A, Direction.INGRESS)))
    assert prog_test_run(program.from_container.fd, arp_request()) == TC_ACT_OK
    assert prog_test_run(program.to_container.fd, arp_request()) == TC_ACT_OK
