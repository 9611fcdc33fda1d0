"""Shared pieces of the per-map modules: one field spec per C struct, and the
codec derived from it.

Each map module says, once per struct, each field's C name, C type, byte
order and the Python attribute it carries::

    CT_KEY = Struct("ct_key", [*five_tuple(), Field("direction", U8, "direction", enum(Direction)),
                               pad("pad", U16)], CtKey)

and gets from it the ctypes layout (``CT_KEY.ctype``; network-order fields
are named ``<name>_be``), ``CT_KEY.to_c(obj)`` and ``CT_KEY.from_c(c)``.
:func:`map_codec` joins a key and a value spec into a :class:`MapCodec`.
The layouts are checked against the compiled object by
``tests/datapath/test_map_layouts.py``.
"""
from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

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


# -- field specs ------------------------------------------------------------------------

U8, U16, U32, U64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


@dataclass(frozen=True)
class Conv:
    """How one field's Python value converts to and from its C value."""

    to_c: Callable[[Any], Any]
    from_c: Callable[[Any], Any]
    network_order: bool = False  # stored in network byte order (the C name gets ``_be``)


INT = Conv(int, int)
IP = Conv(ip_to_be, ip_from_be, network_order=True)
PORT = Conv(port_to_be, port_from_be, network_order=True)


def enum(kind: Callable[[int], Any]) -> Conv:
    """A field holding an IntEnum (or any int-constructible type)."""
    return Conv(int, lambda c: kind(int(c)))


@dataclass(frozen=True)
class Field:
    """One C struct field: name in C, C type, the Python attribute, the conversion.

    ``attr=None`` is padding: written as zero, not read."""

    name: str
    ctype: Any
    attr: str | None = None
    conv: Conv = INT

    @property
    def c_name(self) -> str:
        return f"{self.name}_be" if self.conv.network_order else self.name


def pad(name: str, ctype: Any) -> Field:
    return Field(name, ctype)


def five_tuple(saddr: str = "saddr", daddr: str = "daddr", sport: str = "sport", dport: str = "dport",
               protocol: str = "protocol", protocol_as: "Conv | None" = None) -> list[Field]:
    """The flow 5-tuple as it opens ``struct ct_key`` and sits in ``struct flow_event``
    (addresses and ports in network order), with the given Python attribute names."""
    return [Field("saddr", U32, saddr, IP), Field("daddr", U32, daddr, IP),
            Field("sport", U16, sport, PORT), Field("dport", U16, dport, PORT),
            Field("protocol", U8, protocol, protocol_as or INT)]


class Struct:
    """A C struct from its field spec: the ctypes layout and both converters."""

    def __init__(self, c_struct: str, fields: Sequence[Field], py: Callable[..., Any] | None = None) -> None:
        self.c_struct, self.fields, self.py = c_struct, tuple(fields), py
        self.ctype = type(_camel(c_struct) + "C", (ctypes.Structure,), {
            "_fields_": [(f.c_name, f.ctype) for f in self.fields],
            "__doc__": f"``struct {c_struct}``.",
        })
        self._data = [f for f in self.fields if f.attr is not None]

    def to_c(self, obj: Any) -> Any:
        return self.ctype(**{f.c_name: f.conv.to_c(getattr(obj, f.attr)) for f in self._data})  # type: ignore[arg-type]

    def values(self, c: Any) -> dict[str, Any]:
        """Python attribute -> converted value of every data field of ``c``."""
        return {f.attr: f.conv.from_c(getattr(c, f.c_name)) for f in self._data}  # type: ignore[misc]

    def from_c(self, c: Any) -> Any:
        if self.py is None:
            raise TypeError(f"struct {self.c_struct} has no Python type to decode into")
        return self.py(**self.values(c))


class Single(Struct):
    """A struct with one data field whose Python value is that field's value."""

    def __init__(self, c_struct: str, field: Field) -> None:
        super().__init__(c_struct, [field])
        self.field = field

    def to_c(self, value: Any) -> Any:
        return self.ctype(**{self.field.c_name: self.field.conv.to_c(value)})

    def from_c(self, c: Any) -> Any:
        return self.field.conv.from_c(getattr(c, self.field.c_name))


class Scalar:
    """A map key or value that is one C integer (``ctype``) converted by ``conv``."""

    def __init__(self, ctype: Any, conv: Conv = INT) -> None:
        self.ctype, self.conv = ctype, conv

    def to_c(self, value: Any) -> Any:
        return self.ctype(self.conv.to_c(value))

    def from_c(self, c: Any) -> Any:
        return self.conv.from_c(c.value)


def map_codec(map_name: str, key: Struct | Scalar, value: Struct | Scalar) -> MapCodec[Any, Any]:
    """The codec of a map whose key and value are described by ``key`` and ``value``."""
    return MapCodec(map_name, key.ctype, value.ctype, key.to_c, key.from_c, value.to_c, value.from_c)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))
