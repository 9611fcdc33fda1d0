"""Pure: PolicyTable / ipcache / endpoints -> desired map entries (no kernel)."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol
from twin.semantics.tables import L4Entry

from builders import allow, deny, enforced, table, unenforced
from datapath.compile import (
    LocalEndpoint, compile_endpoints, compile_ipcache, compile_policy, policy_dump_lines,
    port_range_prefixes,
)
from datapath.errors import DatapathError, PolicyCompileError, UnsupportedPolicyError
from datapath.maps import policy as pmap
from datapath.maps.policy import PolicyKey, PolicyValue

IN, OUT = Direction.INGRESS, Direction.EGRESS


def covered(prefixes: list[tuple[int, int]]) -> list[int]:
    ports: list[int] = []
    for port, bits in prefixes:
        size = 1 << (16 - bits)
        assert port % size == 0, f"prefix {port}/{bits} is not aligned"
        ports += range(port, port + size)
    return ports


def test_port_range_compiles_to_minimal_prefixes():
    assert port_range_prefixes(80, 80) == [(80, 16)]
    assert port_range_prefixes(0, 65535) == [(0, 0)]
    assert port_range_prefixes(8080, 8083) == [(8080, 14)]
    assert port_range_prefixes(1, 65535) == [(1, 16), (2, 15), (4, 14), (8, 13), (16, 12), (32, 11),
                                            (64, 10), (128, 9), (256, 8), (512, 7), (1024, 6),
                                            (2048, 5), (4096, 4), (8192, 3), (16384, 2), (32768, 1)]
    assert port_range_prefixes(1000, 1999) == [(1000, 13), (1008, 12), (1024, 7), (1536, 8),
                                              (1792, 9), (1920, 10), (1984, 12)]


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_prefixes_cover_exactly_the_range_without_overlap(x, y):
    lo, hi = min(x, y), max(x, y)
    prefixes = port_range_prefixes(lo, hi)
    assert covered(prefixes) == list(range(lo, hi + 1))
    assert len(prefixes) <= 30  # at most 2 * (16 - 1) blocks for any 16-bit range


def test_invalid_port_range_is_refused():
    with pytest.raises(PolicyCompileError, match="invalid port range"):
        port_range_prefixes(10, 9)


def test_unenforced_direction_compiles_to_one_allow_all_entry():
    entries = compile_policy(table(unenforced(300, IN)))
    assert entries == {PolicyKey(300, IN, pmap.PREFIX_DIRECTION): PolicyValue(MapVerdict.ALLOW)}


def test_protocol_any_compiles_to_the_l3_only_entry():
    entries = compile_policy(table(enforced(300, IN, {2: (allow(Protocol.ANY, rule=5),)})))
    assert entries == {PolicyKey(300, IN, 96, 2): PolicyValue(MapVerdict.ALLOW, 0, 5)}


def test_l4_range_and_deny_keep_their_reason_and_rule():
    entries = compile_policy(table(enforced(300, OUT, {
        301: (allow(Protocol.TCP, 8000, 8079, rule=1), deny(Protocol.TCP, 8080, rule=2)),
        302: (L4Entry(Protocol.UDP, 53, 53, MapVerdict.DENY, DropReason.NONE, 7),),
    })))
    assert entries[PolicyKey(300, OUT, 128, 301, 6, 8080)] == PolicyValue(MapVerdict.DENY, 181, 2)
    assert entries[PolicyKey(300, OUT, 112 + 10, 301, 6, 8000)] == PolicyValue(MapVerdict.ALLOW, 0, 1)
    # a DENY without a reason gets the denylist reason
    assert entries[PolicyKey(300, OUT, 128, 302, 17, 53)] == PolicyValue(MapVerdict.DENY, DropReason.POLICY_DENY, 7)
    assert policy_dump_lines(entries)[0].startswith("/122 ep=300 egress peer=301 proto=6 port=8000/10")


def test_enforced_direction_without_peers_compiles_to_nothing():
    assert compile_policy(table(enforced(300, IN))) == {}


def test_endpoints_without_any_policy_get_allow_all():
    entries = compile_policy(table(enforced(300, IN)), endpoint_identities=[300, 400])
    assert set(entries) == {PolicyKey(300, OUT, 64), PolicyKey(400, IN, 64), PolicyKey(400, OUT, 64)}


def test_redirect_l7_is_refused_with_a_clear_error():
    t = table(enforced(300, IN, {301: (L4Entry(Protocol.TCP, 80, 80, MapVerdict.REDIRECT_L7),)}))
    with pytest.raises(UnsupportedPolicyError, match="L7 proxy") as exc:
        compile_policy(t)
    assert isinstance(exc.value, NotImplementedError) and isinstance(exc.value, DatapathError)


def test_overlapping_entries_with_different_verdicts_are_refused():
    t = table(enforced(300, IN, {301: (allow(Protocol.TCP, 80), deny(Protocol.TCP, 80))}))
    with pytest.raises(PolicyCompileError, match="overlapping"):
        compile_policy(t)


def test_duplicate_direction_table_is_refused():
    with pytest.raises(PolicyCompileError, match="twice"):
        compile_policy(table(enforced(300, IN), unenforced(300, IN)))


def test_ipcache_and_endpoints_compile_and_validate():
    assert compile_ipcache({"10.0.0.0/24": 5, ipaddress.IPv4Network("10.0.1.7/32"): 6}) == {
        ipaddress.IPv4Network("10.0.0.0/24"): 5, ipaddress.IPv4Network("10.0.1.7/32"): 6,
    }
    with pytest.raises(PolicyCompileError, match="not an IPv4 network"):
        compile_ipcache({"10.0.0.1/24": 5})
    ip = ipaddress.IPv4Address("10.0.0.1")
    assert compile_endpoints([LocalEndpoint(7, 300, ip)])[7].identity == 300
    with pytest.raises(PolicyCompileError, match="used twice"):
        compile_endpoints([LocalEndpoint(7, 300, ip), LocalEndpoint(7, 301, ip)])


def test_policy_codec_round_trips_and_puts_port_in_network_order():
    key = PolicyKey.port_prefix(300, OUT, 301, 6, 8080, 16)
    c = pmap.CODEC.key_to_c(key)
    assert bytes(c)[-2:] == (8080).to_bytes(2, "big")
    assert pmap.CODEC.decode_key(c) == key
    with pytest.raises(ValueError):
        PolicyKey(300, OUT, 100)
