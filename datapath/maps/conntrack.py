"""``conntrack`` LRU hash: direction-scoped 5-tuple -> connection state."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.enums import Direction

from datapath.maps._codec import U8, U16, U32, U64, Field, MapCodec, Struct, enum, five_tuple, map_codec, pad

MAP_NAME = "conntrack"


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


CT_KEY = Struct("ct_key", [*five_tuple(), Field("direction", U8, "direction", enum(Direction)), pad("pad", U16)], CtKey)
CT_VALUE = Struct("ct_value", [Field("last_seen_ns", U64, "last_seen_ns"), Field("rule_ref", U32, "rule_ref"),
                               Field("packets", U32, "packets")], CtValue)
CtKeyC, CtValueC = CT_KEY.ctype, CT_VALUE.ctype

CODEC: MapCodec[CtKey, CtValue] = map_codec(MAP_NAME, CT_KEY, CT_VALUE)
