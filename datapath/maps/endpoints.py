"""``endpoints`` map: lxc ifindex (u32) -> ``struct endpoint_info``."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, U32, Field, MapCodec, Scalar, Struct, map_codec

MAP_NAME = "endpoints"


@dataclass(frozen=True, order=True)
class EndpointValue:
    identity: int
    ip: ipaddress.IPv4Address


KEY = Scalar(U32)  # lxc ifindex, host order
ENDPOINT_INFO = Struct("endpoint_info", [Field("ep_identity", U32, "identity"), Field("ep_ip", U32, "ip", IP)],
                       EndpointValue)
KeyC, EndpointInfoC = KEY.ctype, ENDPOINT_INFO.ctype

CODEC: MapCodec[int, EndpointValue] = map_codec(MAP_NAME, KEY, ENDPOINT_INFO)
