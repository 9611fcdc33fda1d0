"""``lb4_backends`` hash: backend id (u32) -> ``struct lb4_backend``."""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from twin.model.enums import Protocol

from datapath.constants import BackendState
from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be, port_from_be, port_to_be

MAP_NAME = "lb4_backends"

KeyC = ctypes.c_uint32  # backend id, host order


class Lb4BackendC(ctypes.Structure):
    """``struct lb4_backend``."""

    _fields_ = [
        ("address_be", ctypes.c_uint32),
        ("port_be", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
    ]


@dataclass(frozen=True, order=True)
class BackendValue:
    ip: ipaddress.IPv4Address
    port: int  # host order
    protocol: Protocol
    state: BackendState = BackendState.ACTIVE


def _value_to_c(v: BackendValue) -> Lb4BackendC:
    return Lb4BackendC(address_be=ip_to_be(v.ip), port_be=port_to_be(v.port),
                       proto=int(v.protocol), flags=int(v.state))


def _value_from_c(c: Lb4BackendC) -> BackendValue:
    return BackendValue(ip_from_be(c.address_be), port_from_be(c.port_be), Protocol(c.proto),
                        BackendState(c.flags))


CODEC: MapCodec[int, BackendValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=KeyC,
    value_type=Lb4BackendC,
    key_to_c=lambda k: KeyC(k),
    key_from_c=lambda c: int(c.value),
    value_to_c=_value_to_c,
    value_from_c=_value_from_c,
)
