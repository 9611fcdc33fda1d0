"""``conntrack`` LRU hash: direction-scoped 5-tuple -> connection state."""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

from twin.model.enums import Direction

from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be, port_from_be, port_to_be

MAP_NAME = "conntrack"


class CtKeyC(ctypes.Structure):
    """``struct ct_key``."""

    _fields_ = [
        ("saddr_be", ctypes.c_uint32),
        ("daddr_be", ctypes.c_uint32),
        ("sport_be", ctypes.c_uint16),
        ("dport_be", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class CtValueC(ctypes.Structure):
    """``struct ct_value``."""

    _fields_ = [
        ("last_seen_ns", ctypes.c_uint64),
        ("rule_ref", ctypes.c_uint32),
        ("packets", ctypes.c_uint32),
    ]


@dataclass(frozen=True, order=True)
class CtKey:
    saddr: ipaddress.IPv4Address
    daddr: ipaddress.IPv4Address
    sport: int  # host order; ICMP echo id for ICMP echo
    dport: int
    protocol: int
    direction: Direction


@dataclass(frozen=True, order=True)
class CtValue:
    last_seen_ns: int
    rule_ref: int
    packets: int


def _key_to_c(k: CtKey) -> CtKeyC:
    return CtKeyC(
        saddr_be=ip_to_be(k.saddr), daddr_be=ip_to_be(k.daddr),
        sport_be=port_to_be(k.sport), dport_be=port_to_be(k.dport),
        protocol=k.protocol, direction=int(k.direction),
    )


def _key_from_c(c: CtKeyC) -> CtKey:
    return CtKey(
        ip_from_be(c.saddr_be), ip_from_be(c.daddr_be),
        port_from_be(c.sport_be), port_from_be(c.dport_be),
        int(c.protocol), Direction(c.direction),
    )


CODEC: MapCodec[CtKey, CtValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=CtKeyC,
    value_type=CtValueC,
    key_to_c=_key_to_c,
    key_from_c=_key_from_c,
    value_to_c=lambda v: CtValueC(last_seen_ns=v.last_seen_ns, rule_ref=v.rule_ref, packets=v.packets),
    value_from_c=lambda c: CtValue(int(c.last_seen_ns), int(c.rule_ref), int(c.packets)),
)
