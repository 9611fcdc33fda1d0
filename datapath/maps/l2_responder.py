"""``l2_responder`` hash: (IP, ifindex) -> ARP replies sent (Cilium's
``cilium_l2_responder_v4``).  An entry makes the host program answer ARP
who-has IP on that interface; the counter is the program's own evidence."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, U32, U64, Field, MapCodec, Single, Struct, map_codec

MAP_NAME = "l2_responder"
#: max_entries (-DL2_RESPONDER_MAP_SIZE)
MAP_SIZE = 4096


@dataclass(frozen=True, order=True)
class L2ResponderKey:
    ip: ipaddress.IPv4Address
    ifindex: int


L2_RESPONDER_KEY = Struct("l2_responder_key", [Field("ip", U32, "ip", IP), Field("ifindex", U32, "ifindex")],
                          L2ResponderKey)
L2_RESPONDER_STATS = Single("l2_responder_stats", Field("responses_sent", U64))
L2ResponderKeyC, L2ResponderStatsC = L2_RESPONDER_KEY.ctype, L2_RESPONDER_STATS.ctype

CODEC: MapCodec[L2ResponderKey, int] = map_codec(MAP_NAME, L2_RESPONDER_KEY, L2_RESPONDER_STATS)
