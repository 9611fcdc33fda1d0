"""Desired-vs-kernel reconcile for BPF maps.

The map layer is the :class:`MapBackend` protocol with a real
(:class:`BccMap`) and an in-memory (:class:`FakeMap`, optionally failing)
implementation.  :func:`reconcile` adds/updates first, then deletes, so a
key that stays never disappears in between.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Mapping, Protocol, TypeVar

from datapath.errors import MapError
from datapath.maps._codec import MapCodec

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["MapBackend", "BccMap", "FakeMap", "ReconcileResult", "reconcile"]


class MapBackend(Protocol[K, V]):
    """What reconcile needs from a map, in plain Python keys/values."""

    name: str

    def items(self) -> list[tuple[K, V]]: ...

    def update(self, key: K, value: V) -> None: ...

    def delete(self, key: K) -> None: ...


class BccMap(Generic[K, V]):
    """A bcc table seen through a :class:`MapCodec`."""

    def __init__(self, table: Any, codec: MapCodec[K, V]) -> None:
        self._table = table
        self._codec = codec
        self.name = codec.map_name

    def items(self) -> list[tuple[K, V]]:
        try:
            raw = list(self._table.items())
        except Exception as exc:
            raise MapError(f"dumping BPF map {self.name!r} failed: {exc}") from exc
        return [(self._codec.decode_key(k), self._codec.decode_value(v)) for k, v in raw]

    def update(self, key: K, value: V) -> None:
        try:
            self._table[self._codec.key_to_c(key)] = self._codec.value_to_c(value)
        except Exception as exc:
            raise MapError(
                f"updating BPF map {self.name!r} key {key} -> {value} failed: {exc} "
                "(map full? raise its MAX_* size via extra cflags)"
            ) from exc

    def delete(self, key: K) -> None:
        try:
            del self._table[self._codec.key_to_c(key)]
        except KeyError:
            return  # already gone: deleting is idempotent
        except Exception as exc:
            raise MapError(f"deleting key {key} from BPF map {self.name!r} failed: {exc}") from exc


@dataclass
class FakeMap(Generic[K, V]):
    """In-memory map; records operations; ``fail`` may raise to inject faults."""

    name: str = "fake"
    data: dict[K, V] = field(default_factory=dict)
    ops: list[tuple[str, K]] = field(default_factory=list)
    fail: Callable[[str, K], bool] | None = None

    def items(self) -> list[tuple[K, V]]:
        return list(self.data.items())

    def update(self, key: K, value: V) -> None:
        if self.fail is not None and self.fail("update", key):
            raise MapError(f"injected failure updating {key} in {self.name!r}")
        self.ops.append(("update", key))
        self.data[key] = value

    def delete(self, key: K) -> None:
        if self.fail is not None and self.fail("delete", key):
            raise MapError(f"injected failure deleting {key} from {self.name!r}")
        self.ops.append(("delete", key))
        self.data.pop(key, None)


@dataclass(frozen=True)
class ReconcileResult:
    """How many keys reconcile added, updated, deleted and left alone."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def reconcile(desired: Mapping[K, V], backend: MapBackend[K, V]) -> ReconcileResult:
    """Make ``backend`` hold exactly ``desired``: add/update first, then delete."""
    current = dict(backend.items())
    added = updated = unchanged = 0
    for key, value in _stable(desired.items()):
        if key not in current:
            backend.update(key, value)
            added += 1
        elif current[key] != value:
            backend.update(key, value)
            updated += 1
        else:
            unchanged += 1
    stale = [k for k in current if k not in desired]
    for key in _stable_keys(stale):
        backend.delete(key)
    return ReconcileResult(added, updated, len(stale), unchanged)


def _stable(items: Iterable[tuple[K, V]]) -> list[tuple[K, V]]:
    items = list(items)
    try:
        return sorted(items, key=lambda kv: kv[0])  # type: ignore[arg-type, return-value]
    except TypeError:
        return items


def _stable_keys(keys: list[K]) -> list[K]:
    try:
        return sorted(keys)  # type: ignore[type-var]
    except TypeError:
        return keys
