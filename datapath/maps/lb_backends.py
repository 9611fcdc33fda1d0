"""``lb4_backends`` hash: backend id (u32) -> ``struct lb4_backend``."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twin.model.enums import Protocol

from datapath.constants import BackendState
from datapath.maps._codec import IP, PORT, U8, U16, U32, Field, MapCodec, Scalar, Struct, enum, map_codec

MAP_NAME = "lb4_backends"


@dataclass(frozen=True, order=True)
class BackendValue:
    ip: ipaddress.IPv4Address
    port: int  # host order
    protocol: Protocol
    state: BackendState = BackendState.ACTIVE


KEY = Scalar(U32)  # backend id, host order
LB4_BACKEND = Struct("lb4_backend", [
    Field("address", U32, "ip", IP), Field("port", U16, "port", PORT),
    Field("proto", U8, "protocol", enum(Protocol)), Field("flags", U8, "state", enum(BackendState)),
], BackendValue)
KeyC, Lb4BackendC = KEY.ctype, LB4_BACKEND.ctype

CODEC: MapCodec[int, BackendValue] = map_codec(MAP_NAME, KEY, LB4_BACKEND)
