"""``host_ifaces`` hash: ifindex -> the LAN interface's MAC and the node's IP
(what the host program puts in ARP replies, and the SNAT source address)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import IP, U8, U16, U32, Conv, Field, MapCodec, Scalar, Struct, map_codec, pad

MAP_NAME = "host_ifaces"
#: max_entries (-DHOST_IFACES_MAP_SIZE)
MAP_SIZE = 64

MacBytes = U8 * 6


def mac_to_c(mac: str) -> object:
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a 6-byte MAC address")
    return MacBytes(*raw)


def mac_from_c(c: object) -> str:
    return ":".join(f"{b:02x}" for b in bytes(c))  # type: ignore[call-overload]


MAC = Conv(mac_to_c, mac_from_c)


@dataclass(frozen=True, order=True)
class HostIface:
    mac: str  # aa:bb:cc:dd:ee:ff
    node_ip: ipaddress.IPv4Address


KEY = Scalar(U32)  # ifindex
HOST_IFACE = Struct("host_iface", [Field("mac", MacBytes, "mac", MAC), pad("pad", U16),
                                   Field("node_ip", U32, "node_ip", IP)], HostIface)
KeyC, HostIfaceC = KEY.ctype, HOST_IFACE.ctype

CODEC: MapCodec[int, HostIface] = map_codec(MAP_NAME, KEY, HOST_IFACE)
