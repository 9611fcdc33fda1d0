"""The Python codecs of the host program's maps mirror the compiled bpf_host structs."""
from __future__ import annotations

import pytest

from conftest import require_kernel
from test_map_layouts import assert_layout_matches
from datapath.maps import bandwidth, host_ifaces, l2_responder, lb_backends, lb_revnat, lb_services, ns_nat

pytestmark = pytest.mark.datapath

CODECS = [l2_responder.CODEC, host_ifaces.CODEC, ns_nat.CODEC, ns_nat.REMOTE_CODEC,
          lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC, bandwidth.CODEC]


@pytest.fixture(scope="module")
def host_program():
    require_kernel()
    from datapath.loader import HostProgram

    with HostProgram() as prog:
        yield prog


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.map_name)
def test_host_map_layouts_match_bpf_host_object(host_program, codec):
    assert_layout_matches(host_program.table(codec.map_name), codec)


def test_host_map_types_and_sizes(host_program):
    from bcc.table import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH as HASH, BPF_MAP_TYPE_LRU_HASH as LRU_HASH

    from datapath.constants import BW_MAP_SIZE

    expected = {"l2_responder": (HASH, l2_responder.MAP_SIZE), "host_ifaces": (HASH, host_ifaces.MAP_SIZE),
                "ns_nat": (LRU_HASH, ns_nat.MAP_SIZE), "ns_remote_backends": (HASH, ns_nat.REMOTE_MAP_SIZE),
                "host_stats": (BPF_MAP_TYPE_ARRAY, len(ns_nat.HostCounter)),
                "bw_pods": (HASH, BW_MAP_SIZE)}
    for name, (map_type, size) in expected.items():
        table = host_program.table(name)
        assert (table.ttype, table.max_entries) == (map_type, size), name


def test_codecs_round_trip_through_the_kernel_maps(host_program):
    import ipaddress

    from datapath.reconcile import BccMap

    key = l2_responder.L2ResponderKey(ipaddress.IPv4Address("10.10.200.1"), 7)
    m = BccMap(host_program.table("l2_responder"), l2_responder.CODEC)
    m.update(key, 5)
    assert m.items() == [(key, 5)]
    h = BccMap(host_program.table("host_ifaces"), host_ifaces.CODEC)
    val = host_ifaces.HostIface("02:ab:cd:ef:01:23", ipaddress.IPv4Address("192.168.10.101"))
    h.update(7, val)
    assert h.items() == [(7, val)]
    raw = bytes(host_program.table("host_ifaces")[host_ifaces.KeyC(7)])
    assert raw[:6] == bytes.fromhex("02abcdef0123") and raw[8:12] == bytes([192, 168, 10, 101])
