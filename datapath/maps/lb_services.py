"""``lb4_services`` hash: (frontend, backend slot) -> ``struct lb4_service``.

Slot ``LBSlot.MASTER`` (0) is the service itself: ``count`` active backends
and its ``rev_nat_index``.  Slots ``1..count`` each hold one active backend id.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.enums import Protocol

from datapath.constants import LBSlot
from datapath.maps._codec import IP, PORT, U8, U16, U32, Field, MapCodec, Struct, enum, map_codec, pad

MAP_NAME = "lb4_services"


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


LB4_KEY = Struct("lb4_key", [
    Field("address", U32, "address", IP), Field("dport", U16, "port", PORT), Field("backend_slot", U16, "slot"),
    Field("proto", U8, "protocol", enum(Protocol)), pad("pad", U8 * 3),
], ServiceKey)
LB4_SERVICE = Struct("lb4_service", [
    Field("backend_id", U32, "backend_id"), Field("count", U16, "count"), Field("rev_nat_index", U16, "rev_nat_index"),
], ServiceValue)
Lb4KeyC, Lb4ServiceC = LB4_KEY.ctype, LB4_SERVICE.ctype

CODEC: MapCodec[ServiceKey, ServiceValue] = map_codec(MAP_NAME, LB4_KEY, LB4_SERVICE)
