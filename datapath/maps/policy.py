"""``policy`` LPM trie: (endpoint, direction, peer, protocol, port prefix) -> verdict.

Key data (16 bytes after ``prefixlen``): ep_identity u32, direction u8,
pad[3], peer_identity u32, protocol u8, pad u8, dport u16 (network order).
Prefix lengths: 64 = allow-all for an unenforced direction, 96 = L3-only
peer, 112 + p = protocol with a p-bit port prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

from twin.model.enums import Direction, MapVerdict

from datapath.maps._codec import PORT, U8, U16, U32, Field, MapCodec, Struct, enum, map_codec, pad

MAP_NAME = "policy"

PREFIX_DIRECTION = 64
PREFIX_PEER = 96
PREFIX_PROTOCOL = 112
PREFIX_FULL = 128


@dataclass(frozen=True, order=True)
class PolicyKey:
    """A policy map key; fields beyond ``prefixlen`` must be 0.

    Build with :meth:`direction_all`, :meth:`peer_all` or :meth:`port_prefix`.
    """

    ep_identity: int
    direction: Direction
    prefixlen: int
    peer_identity: int = 0
    protocol: int = 0
    port: int = 0  # host order; only the first prefixlen - 112 bits count

    def __post_init__(self) -> None:
        if not PREFIX_DIRECTION <= self.prefixlen <= PREFIX_FULL or self.prefixlen in range(
            PREFIX_DIRECTION + 1, PREFIX_PEER
        ) or self.prefixlen in range(PREFIX_PEER + 1, PREFIX_PROTOCOL):
            raise ValueError(f"policy key prefixlen {self.prefixlen} is not 64, 96 or 112..128")
        if self.prefixlen < PREFIX_PEER and self.peer_identity:
            raise ValueError(f"{self}: peer_identity set beyond prefixlen")
        if self.prefixlen < PREFIX_PROTOCOL and (self.protocol or self.port):
            raise ValueError(f"{self}: protocol/port set beyond prefixlen")
        port_bits = max(0, self.prefixlen - PREFIX_PROTOCOL)
        if self.port & ((1 << (16 - port_bits)) - 1):
            raise ValueError(f"{self}: port has bits set beyond the {port_bits}-bit prefix")

    @classmethod
    def direction_all(cls, ep_identity: int, direction: Direction) -> "PolicyKey":
        return cls(ep_identity, Direction(direction), PREFIX_DIRECTION)

    @classmethod
    def peer_all(cls, ep_identity: int, direction: Direction, peer: int) -> "PolicyKey":
        return cls(ep_identity, Direction(direction), PREFIX_PEER, peer)

    @classmethod
    def port_prefix(
        cls, ep_identity: int, direction: Direction, peer: int, protocol: int,
        port: int, port_bits: int,
    ) -> "PolicyKey":
        return cls(
            ep_identity, Direction(direction), PREFIX_PROTOCOL + port_bits, peer, protocol, port
        )


@dataclass(frozen=True, order=True)
class PolicyValue:
    verdict: MapVerdict
    drop_reason: int = 0
    rule_ref: int = 0


POLICY_KEY = Struct("policy_key", [
    Field("prefixlen", U32, "prefixlen"), Field("ep_identity", U32, "ep_identity"),
    Field("direction", U8, "direction", enum(Direction)), pad("pad0", U8 * 3),
    Field("peer_identity", U32, "peer_identity"), Field("protocol", U8, "protocol"), pad("pad1", U8),
    Field("dport", U16, "port", PORT),
], PolicyKey)
POLICY_VALUE = Struct("policy_value", [
    Field("verdict", U8, "verdict", enum(MapVerdict)), pad("pad", U8),
    Field("drop_reason", U16, "drop_reason"), Field("rule_ref", U32, "rule_ref"),
], PolicyValue)
PolicyKeyC, PolicyValueC = POLICY_KEY.ctype, POLICY_VALUE.ctype

CODEC: MapCodec[PolicyKey, PolicyValue] = map_codec(MAP_NAME, POLICY_KEY, POLICY_VALUE)
