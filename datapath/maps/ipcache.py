"""``ipcache`` LPM trie: IPv4 prefix -> security identity (miss = WORLD)."""
from __future__ import annotations

import ctypes
import ipaddress

from datapath.maps._codec import MapCodec, ip_from_be, ip_to_be

MAP_NAME = "ipcache"


class IpcacheKeyC(ctypes.Structure):
    """``struct ipcache_key``."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("ip_be", ctypes.c_uint32),
    ]


class IpcacheValueC(ctypes.Structure):
    """``struct ipcache_value``."""

    _fields_ = [("identity", ctypes.c_uint32)]


def _key_to_c(net: ipaddress.IPv4Network) -> IpcacheKeyC:
    return IpcacheKeyC(prefixlen=net.prefixlen, ip_be=ip_to_be(net.network_address))


def _key_from_c(c: IpcacheKeyC) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((ip_from_be(c.ip_be), c.prefixlen))


CODEC: MapCodec[ipaddress.IPv4Network, int] = MapCodec(
    map_name=MAP_NAME,
    key_type=IpcacheKeyC,
    value_type=IpcacheValueC,
    key_to_c=_key_to_c,
    key_from_c=_key_from_c,
    value_to_c=lambda v: IpcacheValueC(identity=v),
    value_from_c=lambda c: int(c.identity),
)
