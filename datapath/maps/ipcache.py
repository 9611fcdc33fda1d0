"""``ipcache`` LPM trie: IPv4 prefix -> security identity (miss = WORLD)."""
from __future__ import annotations

import ipaddress

from datapath.maps._codec import IP, U32, Field, MapCodec, Single, Struct, map_codec

MAP_NAME = "ipcache"


IPCACHE_KEY = Struct("ipcache_key", [Field("prefixlen", U32, "prefixlen"), Field("ip", U32, "network_address", IP)],
                     lambda prefixlen, network_address: ipaddress.IPv4Network((network_address, prefixlen)))
IPCACHE_VALUE = Single("ipcache_value", Field("identity", U32))
IpcacheKeyC, IpcacheValueC = IPCACHE_KEY.ctype, IPCACHE_VALUE.ctype

CODEC: MapCodec[ipaddress.IPv4Network, int] = map_codec(MAP_NAME, IPCACHE_KEY, IPCACHE_VALUE)
