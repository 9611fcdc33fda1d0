"""``endpoints`` map: lxc ifindex (u32) -> ``struct endpoint_info``."""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be

MAP_NAME = "endpoints"

KeyC = ctypes.c_uint32  # ifindex, host order


class EndpointInfoC(ctypes.Structure):
    """``struct endpoint_info``."""

    _fields_ = [
        ("ep_identity", ctypes.c_uint32),
        ("ep_ip_be", ctypes.c_uint32),
    ]


@dataclass(frozen=True, order=True)
class EndpointValue:
    identity: int
    ip: ipaddress.IPv4Address


def _value_to_c(v: EndpointValue) -> EndpointInfoC:
    return EndpointInfoC(ep_identity=v.identity, ep_ip_be=ip_to_be(v.ip))


def _value_from_c(c: EndpointInfoC) -> EndpointValue:
    return EndpointValue(identity=c.ep_identity, ip=ip_from_be(c.ep_ip_be))


CODEC: MapCodec[int, EndpointValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=KeyC,
    value_type=EndpointInfoC,
    key_to_c=lambda k: KeyC(k),
    key_from_c=lambda c: int(c.value),
    value_to_c=_value_to_c,
    value_from_c=_value_from_c,
)
