"""The Python ctypes layouts mirror the structs of the compiled BPF object."""
from __future__ import annotations

import ctypes

import pytest

from conftest import require_kernel
from datapath.maps import (
    conntrack, endpoints, events, ipcache, lb_backends, lb_revnat, lb_services, policy, sock_revnat,
)
from datapath.maps._codec import layout

pytestmark = pytest.mark.datapath

CODECS = [endpoints.CODEC, ipcache.CODEC, policy.CODEC, conntrack.CODEC]
LB_CODECS = [lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC, sock_revnat.CODEC]


@pytest.fixture(scope="module")
def program():
    require_kernel()
    from datapath.loader import NodeProgram

    with NodeProgram() as prog:
        yield prog


@pytest.fixture(scope="module")
def sock_program():
    require_kernel()
    from datapath.loader import SockProgram

    with SockProgram() as prog:
        yield prog


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.map_name)
def test_map_layouts_match_bpf_object(program, codec):
    assert_layout_matches(program.table(codec.map_name), codec)


@pytest.mark.parametrize("codec", LB_CODECS, ids=lambda c: c.map_name)
def test_lb_map_layouts_match_bpf_sock_object(sock_program, codec):
    assert_layout_matches(sock_program.table(codec.map_name), codec)


def test_lb_map_types_and_sizes_match_the_design(sock_program):
    from bcc.table import BPF_MAP_TYPE_HASH as HASH, BPF_MAP_TYPE_LRU_HASH as LRU_HASH

    from datapath.constants import LB_MAP_SIZES

    expected = {"lb4_services": (HASH, "SERVICES"), "lb4_backends": (HASH, "BACKENDS"),
                "lb4_reverse_nat": (HASH, "REVNAT"), "lb4_sock_revnat": (LRU_HASH, "SOCK_REVNAT")}
    for name, (map_type, size) in expected.items():
        table = sock_program.table(name)
        assert table.ttype == map_type, f"{name} has the wrong map type"
        assert table.max_entries == LB_MAP_SIZES[size], f"{name} max_entries differs from LB_MAP_SIZES"


def assert_layout_matches(table, codec) -> None:
    assert ctypes.sizeof(codec.key_type) == ctypes.sizeof(table.Key), f"{codec.map_name} key size differs"
    assert ctypes.sizeof(codec.value_type) == ctypes.sizeof(table.Leaf), f"{codec.map_name} value size differs"
    assert layout(codec.key_type) == layout(table.Key), f"{codec.map_name} key field offsets differ"
    assert layout(codec.value_type) == layout(table.Leaf), f"{codec.map_name} value field offsets differ"
    for ours, theirs in ((codec.key_type, table.Key), (codec.value_type, table.Leaf)):
        if hasattr(theirs, "_fields_"):
            assert [f[0].removesuffix("_be") for f in ours._fields_] == [f[0] for f in theirs._fields_], \
                f"{codec.map_name}: field names differ (byte-order suffix aside)"


_C_SCALARS = {"__u8": ctypes.c_uint8, "__u16": ctypes.c_uint16, "__u32": ctypes.c_uint32,
              "__u64": ctypes.c_uint64}


def bcc_event_struct(program) -> type[ctypes.Structure]:
    """A ctypes struct built from the field list bcc reports for ``events``."""
    from bcc import libbcc

    table = program.table("events")
    module, name = program.bpf.module, table._name
    fields = []
    for i in range(libbcc.lib.bpf_perf_event_fields(module, name)):
        fname, ftype = libbcc.lib.bpf_perf_event_field(module, name, i).decode().split("#")
        fields.append((fname, _C_SCALARS[ftype]))
    return type("BccFlowEvent", (ctypes.Structure,), {"_fields_": fields})


def test_flow_event_layout_matches_bpf_object(program):
    bcc_event = bcc_event_struct(program)
    assert ctypes.sizeof(events.FlowEventC) == ctypes.sizeof(bcc_event)
    assert layout(events.FlowEventC) == layout(bcc_event)
    assert [f[0].removesuffix("_be") for f in events.FlowEventC._fields_] == [
        f[0] for f in bcc_event._fields_
    ], "field names differ (byte-order suffix aside)"


def test_python_layouts_have_the_documented_sizes():
    """Pure check of the contract sizes from the design (no kernel needed)."""
    assert ctypes.sizeof(policy.PolicyKeyC) == 4 + 16
    assert policy.PolicyKeyC.dport_be.offset == 4 + 14
    assert ctypes.sizeof(conntrack.CtKeyC) == 16
    assert ctypes.sizeof(events.FlowEventC) == 48
    assert ctypes.sizeof(lb_services.Lb4KeyC) == 12 and ctypes.sizeof(lb_services.Lb4ServiceC) == 8
    assert ctypes.sizeof(lb_backends.Lb4BackendC) == 8
    assert ctypes.sizeof(lb_revnat.Lb4ReverseNatC) == 8
    assert ctypes.sizeof(sock_revnat.SockRevNatKeyC) == 16 and ctypes.sizeof(sock_revnat.SockRevNatValueC) == 8
