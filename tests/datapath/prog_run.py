"""BPF_PROG_TEST_RUN via the bpf(2) syscall (libbcc does not export it)."""
from __future__ import annotations

import ctypes
import os
import socket
import struct

SYS_BPF = 321  # x86_64
BPF_PROG_TEST_RUN = 10
TC_ACT_OK, TC_ACT_SHOT = 0, 2


class BpfAttrTest(ctypes.Structure):
    """The ``test`` member of ``union bpf_attr``."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def prog_test_run(prog_fd: int, packet: bytes) -> int:
    """Run the program once on ``packet``; returns its return code (the tc action)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    attr = BpfAttrTest(
        prog_fd=prog_fd, data_size_in=len(packet), data_size_out=len(data_out),
        data_in=ctypes.addressof(data_in), data_out=ctypes.addressof(data_out), repeat=1,
    )
    rc = _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN failed: {os.strerror(err)}")
    return int(attr.retval)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4_packet(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    """An Ethernet + IPv4 frame carrying ``l4`` (L4 checksums are not needed)."""
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", 0x0800)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return eth + hdr + l4


def tcp_syn(src: str, sport: int, dst: str, dport: int) -> bytes:
    return ipv4_packet(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0))


def tcp_synack(src: str, sport: int, dst: str, dport: int) -> bytes:
    return ipv4_packet(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 7, 2, 0x50, 0x12, 65535, 0, 0))


def icmp_echo(src: str, dst: str, ident: int, reply: bool = False) -> bytes:
    return ipv4_packet(src, dst, 1, struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, 1) + b"x" * 8)


def arp_request() -> bytes:
    return b"\xff" * 6 + b"\x02\0\0\0\0\x01" + struct.pack("!H", 0x0806) + b"\0" * 28
