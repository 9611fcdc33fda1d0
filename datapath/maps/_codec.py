"""Shared pieces of the per-map modules: a codec type and layout helpers."""
from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

CType = Any  # a ctypes Structure subclass or simple ctypes type


@dataclass(frozen=True)
class MapCodec(Generic[K, V]):
    """How one BPF map's plain Python keys/values convert to and from C."""

    map_name: str
    key_type: CType
    value_type: CType
    key_to_c: Callable[[K], Any]
    key_from_c: Callable[[Any], K]
    value_to_c: Callable[[V], Any]
    value_from_c: Callable[[Any], V]

    def decode_key(self, raw: Any) -> K:
        """Decode a key given as any ctypes object of the right size."""
        return self.key_from_c(self.key_type.from_buffer_copy(bytes(raw)))

    def decode_value(self, raw: Any) -> V:
        return self.value_from_c(self.value_type.from_buffer_copy(bytes(raw)))


def layout(ctype: CType) -> list[tuple[int, int]]:
    """(offset, size) of each field, or [(0, size)] for a scalar type."""
    fields = getattr(ctype, "_fields_", None)
    if fields is None:
        return [(0, ctypes.sizeof(ctype))]
    return [
        (getattr(ctype, f[0]).offset, getattr(ctype, f[0]).size) for f in fields
    ]


def ip_to_be(ip: ipaddress.IPv4Address | str) -> int:
    """IPv4 address -> u32 whose in-memory bytes are network order."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def ip_from_be(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(value).to_bytes(4, "little"))


def port_to_be(port: int) -> int:
    return socket.htons(port)


def port_from_be(value: int) -> int:
    return socket.ntohs(value)
