"""``policy`` LPM trie: (endpoint, direction, peer, protocol, port prefix) -> verdict.

Key data (16 bytes after ``prefixlen``): ep_identity u32, direction u8,
pad[3], peer_identity u32, protocol u8, pad u8, dport u16 (network order).
Prefix lengths: 64 = allow-all for an unenforced direction, 96 = L3-only
peer, 112 + p = protocol with a p-bit port prefix.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from twin.model.enums import Direction, MapVerdict

from datapath.maps._codec import MapCodec, port_from_be, port_to_be

MAP_NAME = "policy"

PREFIX_DIRECTION = 64
PREFIX_PEER = 96
PREFIX_PROTOCOL = 112
PREFIX_FULL = 128


class PolicyKeyC(ctypes.Structure):
    """``struct policy_key``."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("ep_identity", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("pad0", ctypes.c_uint8 * 3),
        ("peer_identity", ctypes.c_uint32),
        ("protocol", ctypes.c_uint8),
        ("pad1", ctypes.c_uint8),
        ("dport_be", ctypes.c_uint16),
    ]


class PolicyValueC(ctypes.Structure):
    """``struct policy_value``."""

    _fields_ = [
        ("verdict", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("drop_reason", ctypes.c_uint16),
        ("rule_ref", ctypes.c_uint32),
    ]


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


def _key_to_c(k: PolicyKey) -> PolicyKeyC:
    return PolicyKeyC(
        prefixlen=k.prefixlen,
        ep_identity=k.ep_identity,
        direction=int(k.direction),
        peer_identity=k.peer_identity,
        protocol=k.protocol,
        dport_be=port_to_be(k.port),
    )


def _key_from_c(c: PolicyKeyC) -> PolicyKey:
    return PolicyKey(
        ep_identity=c.ep_identity,
        direction=Direction(c.direction),
        prefixlen=c.prefixlen,
        peer_identity=c.peer_identity,
        protocol=c.protocol,
        port=port_from_be(c.dport_be),
    )


def _value_to_c(v: PolicyValue) -> PolicyValueC:
    return PolicyValueC(verdict=int(v.verdict), drop_reason=int(v.drop_reason), rule_ref=v.rule_ref)


def _value_from_c(c: PolicyValueC) -> PolicyValue:
    return PolicyValue(MapVerdict(c.verdict), int(c.drop_reason), int(c.rule_ref))


CODEC: MapCodec[PolicyKey, PolicyValue] = MapCodec(
    map_name=MAP_NAME,
    key_type=PolicyKeyC,
    value_type=PolicyValueC,
    key_to_c=_key_to_c,
    key_from_c=_key_from_c,
    value_to_c=_value_to_c,
    value_from_c=_value_from_c,
)
