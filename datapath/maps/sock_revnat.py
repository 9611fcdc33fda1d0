"""``lb4_sock_revnat`` LRU hash: (socket cookie, backend) -> frontend.

Written by connect4/sendmsg4 on every translation; read by recvmsg4 and
getpeername4 to report the frontend instead of the backend.  The datapath
owns it: Python only reads it (and may flush it).
"""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be, port_from_be, port_to_be

MAP_NAME = "lb4_sock_revnat"


class SockRevNatKeyC(ctypes.Structure):
    """``struct lb4_sock_revnat_key``."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("address_be", ctypes.c_uint32),
        ("port_be", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class SockRevNatValueC(ctypes.Structure):
    """``struct lb4_sock_revnat_value``."""

    _fields_ = [
        ("address_be", ctypes.c_uint32),
        ("port_be", ctypes.c_uint16),
        ("rev_nat_index", ctypes.c_uint16),
    ]


@dataclass(frozen=True, order=True)
class SockRevNatKey:
    cookie: int
    backend_ip: ipaddress.IPv4Address
    backend_port: int  # host order


@dataclass(frozen=True, order=True)
class SockRevNatValue:
    frontend_ip: ipaddress.IPv4Address
    frontend_port: int  # host order
    rev_nat_index: int


CODEC: MapCodec[SockRevNatKey, SockRevNatValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=SockRevNatKeyC,
    value_type=SockRevNatValueC,
    key_to_c=lambda k: SockRevNatKeyC(cookie=k.cookie, address_be=ip_to_be(k.backend_ip),
                                      port_be=port_to_be(k.backend_port)),
    key_from_c=lambda c: SockRevNatKey(c.cookie, ip_from_be(c.address_be), port_from_be(c.port_be)),
    value_to_c=lambda v: SockRevNatValueC(address_be=ip_to_be(v.frontend_ip),
                                          port_be=port_to_be(v.frontend_port),
                                          rev_nat_index=v.rev_nat_index),
    value_from_c=lambda c: SockRevNatValue(ip_from_be(c.address_be), port_from_be(c.port_be),
                                           c.rev_nat_index),
)
