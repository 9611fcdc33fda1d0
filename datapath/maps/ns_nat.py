"""``ns_nat`` LRU hash: the host program's north-south connections, one entry
per direction (see ``bpf/lib/nodeport.h``), and ``ns_remote_backends``:
backend IP -> its node's IP (connections to it are SNATed)."""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from datapath.maps._codec import (
    IP, PORT, U8, U16, U32, U64, Field, MapCodec, Scalar, Single, Struct, enum as enum_conv, five_tuple, map_codec,
    pad,
)

MAP_NAME = "ns_nat"
REMOTE_MAP_NAME = "ns_remote_backends"
#: max_entries (-DNS_NAT_MAP_SIZE, -DNS_REMOTE_MAP_SIZE)
MAP_SIZE = 65536
REMOTE_MAP_SIZE = 65536

#: SNAT source ports for remote backends: above Linux's default ephemeral
#: range (32768-60999), so they never collide with the node's own sockets.
NAT_PORT_MIN = 61000
NAT_PORT_MAX = 65535
#: random ports tried per new connection before it is dropped (ports exhausted)
NAT_PORT_TRIES = 8


class NatDir(enum.IntEnum):
    """``ns_nat_key.dir``."""

    FWD = 0  # client -> frontend, LAN ingress
    REV_EGRESS = 1  # local backend -> client, LAN egress
    REV_INGRESS = 2  # remote backend -> node_ip:nat_port, LAN ingress


class HostCounter(enum.IntEnum):
    """Indexes of the ``host_stats`` array (u64 counters the host program bumps)."""

    NS_NEW_LOCAL = 0  # new connections to a local backend
    NS_NEW_REMOTE = 1  # new connections to a remote backend (SNATed)
    NS_DROP_NO_BACKEND = 2  # packets to a frontend without an active backend
    NS_DROP_NAT_PORTS = 3  # new remote connections dropped: no free NAT port found
    NS_DROP_REWRITE = 4  # packets dropped because the kernel refused a rewrite


STATS_MAP_NAME = "host_stats"


@dataclass(frozen=True, order=True)
class NatKey:
    saddr: ipaddress.IPv4Address
    daddr: ipaddress.IPv4Address
    sport: int  # host order
    dport: int
    protocol: int
    dir: NatDir


@dataclass(frozen=True, order=True)
class NatEntry:
    """Rewrites to apply (0.0.0.0 / port 0: leave that field)."""

    to_saddr: ipaddress.IPv4Address
    to_daddr: ipaddress.IPv4Address
    to_sport: int
    to_dport: int
    packets: int = 0
    last_seen_ns: int = 0


NS_NAT_KEY = Struct("ns_nat_key", [*five_tuple(), Field("dir", U8, "dir", enum_conv(NatDir)), pad("pad", U16)],
                    NatKey)
NS_NAT_ENTRY = Struct("ns_nat_entry", [
    Field("to_saddr", U32, "to_saddr", IP), Field("to_daddr", U32, "to_daddr", IP),
    Field("to_sport", U16, "to_sport", PORT), Field("to_dport", U16, "to_dport", PORT),
    Field("packets", U32, "packets"), Field("last_seen_ns", U64, "last_seen_ns"),
], NatEntry)
NsNatKeyC, NsNatEntryC = NS_NAT_KEY.ctype, NS_NAT_ENTRY.ctype

CODEC: MapCodec[NatKey, NatEntry] = map_codec(MAP_NAME, NS_NAT_KEY, NS_NAT_ENTRY)

REMOTE_KEY = Scalar(U32, IP)  # backend IP, network order
NS_REMOTE_BACKEND = Single("ns_remote_backend", Field("node_ip", U32, "node_ip", IP))
REMOTE_CODEC: MapCodec[ipaddress.IPv4Address, ipaddress.IPv4Address] = map_codec(
    REMOTE_MAP_NAME, REMOTE_KEY, NS_REMOTE_BACKEND)
