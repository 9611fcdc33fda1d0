"""``lb4_reverse_nat`` hash: rev_nat_index (u16) -> frontend ``struct lb4_reverse_nat``."""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be, port_from_be, port_to_be

MAP_NAME = "lb4_reverse_nat"

KeyC = ctypes.c_uint16  # rev_nat_index, host order; 0 is never used


class Lb4ReverseNatC(ctypes.Structure):
    """``struct lb4_reverse_nat``."""

    _fields_ = [
        ("address_be", ctypes.c_uint32),
        ("port_be", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


@dataclass(frozen=True, order=True)
class RevNatValue:
    ip: ipaddress.IPv4Address
    port: int  # host order


CODEC: MapCodec[int, RevNatValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=KeyC,
    value_type=Lb4ReverseNatC,
    key_to_c=lambda k: KeyC(k),
    key_from_c=lambda c: int(c.value),
    value_to_c=lambda v: Lb4ReverseNatC(address_be=ip_to_be(v.ip), port_be=port_to_be(v.port)),
    value_from_c=lambda c: RevNatValue(ip_from_be(c.address_be), port_from_be(c.port_be)),
)
