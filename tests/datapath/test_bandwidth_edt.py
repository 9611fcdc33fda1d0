"""The host program's EDT variant (Cilium's, for kernels with sch_fq) passes the
verifier here and, run with BPF_PROG_TEST_RUN, stamps the departure times a
rate implies (edt_sched_departure): each packet of a limited pod leaves
wire_len * 1e9 / bytes_per_s after the previous one, a departure beyond the
2 s horizon is dropped, other sources pass untouched.  The HTB variant sets
skb->priority to the pod's class."""
from __future__ import annotations

import ctypes
import ipaddress
import os

import pytest

from conftest import require_kernel
from prog_run import SYS_BPF, BPF_PROG_TEST_RUN, TC_ACT_SHOT, BpfAttrTest, tcp_syn
from datapath.constants import BW_TIME_HORIZON_NS, NSEC_PER_SEC, BandwidthMode
from datapath.maps import bandwidth as bw_pods
from datapath.maps.bandwidth import BwInfo

pytestmark = pytest.mark.datapath

POD, OTHER = "10.200.0.1", "10.200.0.7"
TC_ACT_UNSPEC = -1 & 0xFFFFFFFF


class SkBuff(ctypes.Structure):
    """``struct __sk_buff`` (uapi/linux/bpf.h, kernel >= 5.18) up to hwtstamp."""

    _fields_ = [(n, ctypes.c_uint32) for n in (
        "len", "pkt_type", "mark", "queue_mapping", "protocol", "vlan_present", "vlan_tci", "vlan_proto",
        "priority", "ingress_ifindex", "ifindex", "tc_index")] + [("cb", ctypes.c_uint32 * 5)] + \
        [(n, ctypes.c_uint32) for n in ("hash", "tc_classid", "data", "data_end", "napi_id", "family",
                                        "remote_ip4", "local_ip4")] + \
        [("remote_ip6", ctypes.c_uint32 * 4), ("local_ip6", ctypes.c_uint32 * 4)] + \
        [(n, ctypes.c_uint32) for n in ("remote_port", "local_port", "data_meta")] + \
        [("flow_keys", ctypes.c_uint64), ("tstamp", ctypes.c_uint64), ("wire_len", ctypes.c_uint32),
         ("gso_segs", ctypes.c_uint32), ("sk", ctypes.c_uint64), ("gso_size", ctypes.c_uint32),
         ("tstamp_type", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3), ("hwtstamp", ctypes.c_uint64)]


assert ctypes.sizeof(SkBuff) == 192 and SkBuff.tstamp.offset == 152

_libc = ctypes.CDLL(None, use_errno=True)


def run(prog_fd: int, packet: bytes, *, wire_len: int, tstamp: int = 0) -> tuple[int, SkBuff]:
    """Run once with ``ctx_in``; returns (tc action, ``ctx_out``)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    ctx_in, ctx_out = SkBuff(wire_len=wire_len, tstamp=tstamp), SkBuff()
    attr = BpfAttrTest(prog_fd=prog_fd, data_size_in=len(packet), data_size_out=len(data_out),
                       data_in=ctypes.addressof(data_in), data_out=ctypes.addressof(data_out), repeat=1,
                       ctx_size_in=ctypes.sizeof(ctx_in), ctx_size_out=ctypes.sizeof(ctx_out),
                       ctx_in=ctypes.addressof(ctx_in), ctx_out=ctypes.addressof(ctx_out))
    if _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN failed: {os.strerror(err)}")
    return int(attr.retval), ctx_out


def program(mode: BandwidthMode, entries: dict[str, BwInfo]):
    from datapath.loader import HostProgram

    prog = HostProgram(bandwidth_mode=mode)
    table = prog.table(bw_pods.MAP_NAME)
    for ip, info in entries.items():
        table[bw_pods.CODEC.key_to_c(ipaddress.IPv4Address(ip))] = bw_pods.CODEC.value_to_c(info)
    return prog


def test_edt_variant_stamps_departures_at_the_pods_rate_and_drops_beyond_the_horizon():
    require_kernel()
    bps, wire = 100_000, 1514
    # 15.14 ms per full-size frame: far longer than a syscall, so the queue builds
    # ahead of now; 20 frames stay well inside the 2 s horizon
    delay = wire * NSEC_PER_SEC // bps
    with program(BandwidthMode.EDT, {POD: BwInfo(bps, BW_TIME_HORIZON_NS, 0)}) as prog:
        fd = prog.to_netdev.fd
        pkt = tcp_syn(POD, 40000, "10.201.0.2", 5201)
        rc, first = run(fd, pkt, wire_len=wire)
        # the first packet of an idle pod leaves now: t_last = now, no stamp
        assert rc == TC_ACT_UNSPEC and first.tstamp == 0
        stamps = []
        for _ in range(20):
            rc, out = run(fd, pkt, wire_len=wire)
            assert rc == TC_ACT_UNSPEC
            stamps.append(out.tstamp)
        # back-to-back packets: each departs exactly `delay` after the previous one
        assert all(b - a == delay for a, b in zip(stamps, stamps[1:])), stamps
        # a packet of another source is left alone
        rc, out = run(fd, tcp_syn(OTHER, 40000, "10.201.0.2", 5201), wire_len=wire)
        assert (rc, out.tstamp) == (TC_ACT_UNSPEC, 0)

    slow = 1000  # bytes/s: a full-size frame takes 1.514 s, so the third is beyond the 2 s horizon
    with program(BandwidthMode.EDT, {POD: BwInfo(slow, BW_TIME_HORIZON_NS, 0)}) as prog:
        fd = prog.to_netdev.fd
        pkt = tcp_syn(POD, 40000, "10.201.0.2", 5201)
        verdicts = [run(fd, pkt, wire_len=wire)[0] for _ in range(3)]
        assert verdicts == [TC_ACT_UNSPEC, TC_ACT_UNSPEC, TC_ACT_SHOT]


def test_htb_variant_puts_a_limited_pods_packets_into_its_class():
    require_kernel()
    cid = 0xCB0003
    with program(BandwidthMode.HTB, {POD: BwInfo(125_000, BW_TIME_HORIZON_NS, cid)}) as prog:
        fd = prog.to_netdev.fd
        rc, out = run(fd, tcp_syn(POD, 40000, "10.201.0.2", 5201), wire_len=1514)
        assert (rc, out.priority, out.tstamp) == (TC_ACT_UNSPEC, cid, 0)
        rc, out = run(fd, tcp_syn(OTHER, 40000, "10.201.0.2", 5201), wire_len=1514)
        assert (rc, out.priority) == (TC_ACT_UNSPEC, 0)


@pytest.mark.parametrize("mode", list(BandwidthMode), ids=lambda m: m.name)
def test_bw_pods_codec_matches_the_compiled_map_in_both_variants(mode):
    require_kernel()
    from bcc.table import BPF_MAP_TYPE_HASH
    from datapath.constants import BW_MAP_SIZE
    from test_map_layouts import assert_layout_matches

    with program(mode, {}) as prog:
        table = prog.table(bw_pods.MAP_NAME)
        assert_layout_matches(table, bw_pods.CODEC)
        assert (table.ttype, table.max_entries) == (BPF_MAP_TYPE_HASH, BW_MAP_SIZE)
