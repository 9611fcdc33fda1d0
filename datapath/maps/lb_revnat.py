"""``lb4_reverse_nat`` hash: rev_nat_index (u16) -> frontend ``struct lb4_reverse_nat``."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, PORT, U16, U32, Field, MapCodec, Scalar, Struct, map_codec, pad

MAP_NAME = "lb4_reverse_nat"


@dataclass(frozen=True, order=True)
class RevNatValue:
    ip: ipaddress.IPv4Address
    port: int  # host order


KEY = Scalar(U16)  # rev_nat_index, host order; 0 is never used
LB4_REVERSE_NAT = Struct("lb4_reverse_nat", [
    Field("address", U32, "ip", IP), Field("port", U16, "port", PORT), pad("pad", U16),
], RevNatValue)
KeyC, Lb4ReverseNatC = KEY.ctype, LB4_REVERSE_NAT.ctype

CODEC: MapCodec[int, RevNatValue] = map_codec(MAP_NAME, KEY, LB4_REVERSE_NAT)
