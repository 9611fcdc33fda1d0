"""``bw_pods`` hash: pod IPv4 -> its egress limit (``struct bw_info``,
bpf/lib/bandwidth.h; Cilium's ``cilium_throttle`` EDT map plus the HTB class).

``t_last`` (the EDT departure time of the pod's last packet) is written by the
program only: the codec writes it as zero and does not read it, so a changed
limit restarts the pod's pacing from now, as Cilium's agent does."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, U32, U64, Field, MapCodec, Scalar, Struct, map_codec, pad

MAP_NAME = "bw_pods"


@dataclass(frozen=True, order=True)
class BwInfo:
    bytes_per_s: int
    horizon_ns: int  # EDT drop horizon
    classid: int  # HTB leaf class, major << 16 | minor (0 under EDT)


KEY = Scalar(U32, IP)
BW_INFO = Struct("bw_info", [Field("bps", U64, "bytes_per_s"), pad("t_last", U64),
                             Field("t_horizon_drop", U64, "horizon_ns"), Field("classid", U32, "classid"),
                             pad("pad", U32)], BwInfo)
KeyC, BwInfoC = KEY.ctype, BW_INFO.ctype

CODEC: MapCodec[ipaddress.IPv4Address, BwInfo] = map_codec(MAP_NAME, KEY, BW_INFO)
