"""``lb4_sock_revnat`` LRU hash: (socket cookie, backend) -> frontend.

Written by connect4/sendmsg4 on every translation; read by recvmsg4 and
getpeername4 to report the frontend instead of the backend.  The datapath
owns it: Python only reads it (and may flush it).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, PORT, U16, U32, U64, Field, MapCodec, Struct, map_codec, pad

MAP_NAME = "lb4_sock_revnat"


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


SOCK_REVNAT_KEY = Struct("lb4_sock_revnat_key", [
    Field("cookie", U64, "cookie"), Field("address", U32, "backend_ip", IP), Field("port", U16, "backend_port", PORT),
    pad("pad", U16),
], SockRevNatKey)
SOCK_REVNAT_VALUE = Struct("lb4_sock_revnat_value", [
    Field("address", U32, "frontend_ip", IP), Field("port", U16, "frontend_port", PORT),
    Field("rev_nat_index", U16, "rev_nat_index"),
], SockRevNatValue)
SockRevNatKeyC, SockRevNatValueC = SOCK_REVNAT_KEY.ctype, SOCK_REVNAT_VALUE.ctype

CODEC: MapCodec[SockRevNatKey, SockRevNatValue] = map_codec(MAP_NAME, SOCK_REVNAT_KEY, SOCK_REVNAT_VALUE)
