"""``lb4_services`` hash: (frontend, backend slot) -> ``struct lb4_service``.

Slot ``LBSlot.MASTER`` (0) is the service itself: ``count`` active backends
and its ``rev_nat_index``.  Slots ``1..count`` each hold one active backend id.
"""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from twin.model.enums import Protocol

from datapath.constants import LBSlot
from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be, port_from_be, port_to_be

MAP_NAME = "lb4_services"


class Lb4KeyC(ctypes.Structure):
    """``struct lb4_key``."""

    _fields_ = [
        ("address_be", ctypes.c_uint32),
        ("dport_be", ctypes.c_uint16),
        ("backend_slot", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class Lb4ServiceC(ctypes.Structure):
    """``struct lb4_service``."""

    _fields_ = [
        ("backend_id", ctypes.c_uint32),
        ("count", ctypes.c_uint16),
        ("rev_nat_index", ctypes.c_uint16),
    ]


@dataclass(frozen=True, order=True)
class ServiceKey:
    """A frontend and a slot; sorts by frontend, then slot."""

    address: ipaddress.IPv4Address
    port: int  # host order
    protocol: Protocol
    slot: int

    @property
    def is_master(self) -> bool:
        return self.slot == LBSlot.MASTER

    def master(self) -> "ServiceKey":
        return ServiceKey(self.address, self.port, self.protocol, int(LBSlot.MASTER))


@dataclass(frozen=True, order=True)
class ServiceValue:
    """Master: ``backend_id == 0``, ``count``, ``rev_nat_index``; slot: ``backend_id`` only."""

    backend_id: int
    count: int
    rev_nat_index: int


def _key_to_c(k: ServiceKey) -> Lb4KeyC:
    return Lb4KeyC(
        address_be=ip_to_be(k.address), dport_be=port_to_be(k.port),
        backend_slot=k.slot, proto=int(k.protocol),
    )


def _key_from_c(c: Lb4KeyC) -> ServiceKey:
    return ServiceKey(ip_from_be(c.address_be), port_from_be(c.dport_be), Protocol(c.proto), c.backend_slot)


CODEC: MapCodec[ServiceKey, ServiceValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=Lb4KeyC,
    value_type=Lb4ServiceC,
    key_to_c=_key_to_c,
    key_from_c=_key_from_c,
    value_to_c=lambda v: Lb4ServiceC(backend_id=v.backend_id, count=v.count, rev_nat_index=v.rev_nat_index),
    value_from_c=lambda c: ServiceValue(c.backend_id, c.count, c.rev_nat_index),
)
