"""Real traffic through bpf_lxc on one node: policy verdicts, conntrack, events."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol, Verdict

from builders import allow, deny, enforced, open_both_ways, table, unenforced
from conftest import ID_A, ID_B
from datapath.maps import policy as policy_map
from datapath.maps.events import FlowRecord
from datapath.maps.policy import PolicyKey, PolicyValue
from datapath.reconcile import BccMap
from topology import connect, start_server

pytestmark = pytest.mark.datapath

EGRESS, INGRESS = Direction.EGRESS, Direction.INGRESS


def wait_events(dp: Any, want: Callable[[list[FlowRecord]], bool], timeout_s: float = 2.0) -> list[FlowRecord]:
    """Poll the perf buffer until ``want(all records so far)`` or the timeout."""
    got: list[FlowRecord] = []
    deadline = time.monotonic() + timeout_s
    while True:
        got += dp.read_events(timeout_ms=50)
        if want(got) or time.monotonic() > deadline:
            return got


def matching(records: list[FlowRecord], **fields: Any) -> list[FlowRecord]:
    return [r for r in records if all(getattr(r, k) == v for k, v in fields.items())]


@pytest.fixture
def servers(pods):
    """TCP 8080, TCP 8081 and UDP 5353 servers in pod b."""
    _, b = pods
    procs = [start_server(b, "tcp", 8080), start_server(b, "tcp", 8081), start_server(b, "udp", 5353)]
    yield
    for p in procs:
        p.kill()
        p.wait()


def test_allowed_tcp_connect_is_forwarded_and_reported(node_dp, pods, servers):
    a, b = pods
    node_dp.set_policy(table(
        *open_both_ways(ID_A),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 8080, rule=1),)}),
        unenforced(ID_B, EGRESS),
    ))

    assert connect(a, "tcp", b.ip, 8080), "allowed TCP connect a->b:8080 did not complete"

    want = dict(protocol=Protocol.TCP, dst_port=8080, verdict=Verdict.FORWARDED)
    recs = wait_events(node_dp, lambda r: len(matching(r, **want)) >= 2)
    at_b = matching(recs, direction=INGRESS, ep_identity=ID_B, **want)
    at_a = matching(recs, direction=EGRESS, ep_identity=ID_A, **want)
    assert len(at_b) == 1, f"expected one new-flow event at b's ingress, got {recs}"
    assert len(at_a) == 1, f"expected one new-flow event at a's egress, got {recs}"
    ev = at_b[0]
    assert (ev.src_ip, ev.dst_ip, ev.peer_identity, ev.rule_ref) == (a.ip, b.ip, ID_A, 1)
    assert ev.ifindex == node_dp.attached[b.lxc]
    assert not ev.is_reply and ev.drop_reason == DropReason.NONE
    assert not matching(recs, verdict=Verdict.DROPPED), "no packet of an allowed flow may drop"


def test_tcp_to_port_not_allowed_is_dropped_with_policy_denied(node_dp, pods, servers):
    a, b = pods
    node_dp.set_policy(table(
        *open_both_ways(ID_A),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 8080, rule=1),)}),
        unenforced(ID_B, EGRESS),
    ))

    assert not connect(a, "tcp", b.ip, 8081), "TCP to port 8081 passed although only 8080 is allowed"

    recs = wait_events(node_dp, lambda r: bool(matching(r, verdict=Verdict.DROPPED)))
    drops = matching(recs, verdict=Verdict.DROPPED, dst_port=8081)
    assert drops, f"no drop event for a->b:8081, got {recs}"
    assert {(d.direction, d.ep_identity, d.peer_identity, d.drop_reason, d.rule_ref) for d in drops} == {
        (INGRESS, ID_B, ID_A, DropReason.POLICY_DENIED, 0)
    }


def test_explicit_deny_drops_with_denylist_reason(node_dp, pods, servers):
    a, b = pods
    node_dp.set_policy(table(
        *open_both_ways(ID_A),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 8000, 8079, rule=1),
                                        deny(Protocol.TCP, 8080, rule=2),
                                        allow(Protocol.TCP, 8081, 9000, rule=1))}),
        unenforced(ID_B, EGRESS),
    ))

    assert not connect(a, "tcp", b.ip, 8080), "denied port 8080 was reachable"
    assert connect(a, "tcp", b.ip, 8081), "port 8081 (allowed by the range next to the deny) failed"

    recs = wait_events(node_dp, lambda r: bool(matching(r, verdict=Verdict.DROPPED)))
    drops = matching(recs, verdict=Verdict.DROPPED)
    assert drops and all(
        (d.dst_port, d.drop_reason, d.rule_ref) == (8080, DropReason.POLICY_DENY, 2) for d in drops
    ), f"expected denylist drops of :8080 with rule 2, got {drops}"


def test_reply_of_allowed_connection_passes_when_reverse_direction_is_enforced(node_dp, pods, servers):
    a, b = pods
    # a may only send TCP 8080 / UDP 5353 to b; nothing may enter a; b may not send at all.
    node_dp.set_policy(table(
        enforced(ID_A, EGRESS, {ID_B: (allow(Protocol.TCP, 8080, rule=1), allow(Protocol.UDP, 5353, rule=1))}),
        enforced(ID_A, INGRESS),
        unenforced(ID_B, INGRESS),
        enforced(ID_B, EGRESS),
    ))

    assert connect(a, "tcp", b.ip, 8080), "TCP reply b->a was dropped although the connection was allowed"
    assert connect(a, "udp", b.ip, 5353), "UDP reply b->a was dropped although the flow was allowed"

    recs = wait_events(node_dp, lambda r: False, timeout_s=0.3)
    assert not matching(recs, verdict=Verdict.DROPPED), f"replies must not drop: {recs}"
    ct = node_dp.conntrack_entries()
    assert any(k.direction == EGRESS and k.daddr == b.ip and k.dport == 8080 for k in ct), ct
    # a connection opened by b towards a is still denied (b egress and a ingress enforced)
    srv = start_server(a, "tcp", 7070)
    try:
        assert not connect(b, "tcp", a.ip, 7070), "b->a passed although b's egress allows nothing"
    finally:
        srv.kill()
        srv.wait()


def test_icmp_echo_dropped_when_only_tcp80_allowed(node_dp, pods):
    a, b = pods
    node_dp.set_policy(table(
        *open_both_ways(ID_A),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 80, rule=1),)}),
        unenforced(ID_B, EGRESS),
    ))

    assert not a.ping(b.ip), "ping a->b passed although only TCP 80 is allowed"

    recs = wait_events(node_dp, lambda r: bool(matching(r, verdict=Verdict.DROPPED)))
    drops = matching(recs, verdict=Verdict.DROPPED, protocol=Protocol.ICMP)
    assert drops, f"no ICMP drop event, got {recs}"
    d = drops[0]
    assert (d.direction, d.ep_identity, d.drop_reason) == (INGRESS, ID_B, DropReason.POLICY_DENIED)
    assert d.src_port == d.dst_port != 0, "ICMP echo events carry the echo id as both ports"


def test_icmp_echo_allowed_one_way_gets_its_reply(node_dp, pods):
    a, b = pods
    node_dp.set_policy(table(
        unenforced(ID_A, EGRESS), enforced(ID_A, INGRESS),
        enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.ICMP, 0, 65535, rule=3),)}),
        enforced(ID_B, EGRESS),
    ))

    assert a.ping(b.ip), "echo reply b->a dropped although the echo request was allowed"
    assert not b.ping(a.ip), "ping b->a passed although b's egress and a's ingress allow nothing"


def test_unenforced_direction_allows_everything(node_dp, pods, servers):
    a, b = pods
    node_dp.set_policy(table(*open_both_ways(ID_A, ID_B)))

    assert a.ping(b.ip)
    assert connect(a, "tcp", b.ip, 8080)
    assert connect(a, "tcp", b.ip, 8081)
    assert connect(a, "udp", b.ip, 5353)
    recs = wait_events(node_dp, lambda r: len(r) >= 8)
    assert not matching(recs, verdict=Verdict.DROPPED), recs
    assert {r.protocol for r in recs} == {Protocol.ICMP, Protocol.TCP, Protocol.UDP}


def test_missing_policy_entry_is_default_deny(node_dp, pods):
    a, b = pods
    node_dp.set_policy(table(*open_both_ways(ID_A)))  # nothing at all for b

    assert not a.ping(b.ip), "b has no policy entries: the miss must drop"
    recs = wait_events(node_dp, lambda r: bool(matching(r, verdict=Verdict.DROPPED)))
    assert matching(recs, verdict=Verdict.DROPPED, ep_identity=ID_B, drop_reason=DropReason.POLICY_DENIED)


def test_unknown_peer_resolves_to_world_identity(node_dp, pods):
    a, b = pods
    node_dp.set_ipcache({f"{b.ip}/32": ID_B})  # a's address is no longer known
    node_dp.set_policy(table(
        *open_both_ways(ID_A),
        enforced(ID_B, INGRESS, {2: (allow(Protocol.ANY, rule=4),)}),  # reserved:world
        unenforced(ID_B, EGRESS),
    ))

    assert a.ping(b.ip), "traffic from an address missing in ipcache must be seen as world"
    recs = wait_events(node_dp, lambda r: bool(matching(r, ep_identity=ID_B)))
    assert matching(recs, ep_identity=ID_B, peer_identity=2, rule_ref=4, verdict=Verdict.FORWARDED)


def test_redirect_l7_entry_in_map_drops_as_proxy_unsupported(node_dp, pods):
    a, b = pods
    node_dp.set_policy(table(*open_both_ways(ID_A), enforced(ID_B, INGRESS), unenforced(ID_B, EGRESS)))
    # The compiler refuses L7; write the entry directly to prove the kernel side is safe.
    BccMap(node_dp.program.table("policy"), policy_map.CODEC).update(
        PolicyKey.peer_all(ID_B, INGRESS, ID_A), PolicyValue(MapVerdict.REDIRECT_L7, 0, 9)
    )

    assert not a.ping(b.ip), "a REDIRECT_L7 verdict must not forward (no proxy yet)"
    recs = wait_events(node_dp, lambda r: bool(matching(r, verdict=Verdict.DROPPED)))
    assert matching(recs, verdict=Verdict.DROPPED, drop_reason=DropReason.PROXY_UNSUPPORTED, rule_ref=9)


def test_lxc_without_endpoint_entry_passes_unreported(node_dp, pods, servers):
    a, b = pods
    node_dp.set_policy(table())  # no entries: every endpoint would be default-deny
    node_dp.set_endpoints([])

    assert a.ping(b.ip), "packets on an lxc without an endpoint entry must pass"
    assert connect(a, "tcp", b.ip, 8080)
    assert wait_events(node_dp, lambda r: False, timeout_s=0.3) == []


def test_policy_update_applies_to_new_connections(node_dp, pods, servers):
    a, b = pods
    closed = table(*open_both_ways(ID_A), enforced(ID_B, INGRESS), unenforced(ID_B, EGRESS))
    opened = table(*open_both_ways(ID_A), enforced(ID_B, INGRESS, {ID_A: (allow(Protocol.TCP, 8080),)}),
                   unenforced(ID_B, EGRESS))

    node_dp.set_policy(closed)
    assert not connect(a, "tcp", b.ip, 8080)
    res = node_dp.set_policy(opened)
    assert res.changed
    assert connect(a, "tcp", b.ip, 8080), "connect still dropped after the policy allowed it"
    node_dp.set_policy(closed)
    assert not connect(a, "tcp", b.ip, 8080), "connect still allowed after the allow was removed"
