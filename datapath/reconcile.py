"""Desired-vs-kernel reconcile for BPF maps.

The map layer is the :class:`MapBackend` protocol with a real
(:class:`BccMap`) and an in-memory (:class:`FakeMap`, optionally failing)
implementation, and :class:`CachedMap`, the agent's write-through view of a
map only it writes.  :func:`reconcile` adds/updates first, then deletes, so a
key that stays never disappears in between.  :func:`reconcile_lb` does the
same across the three socket-LB maps, in an order where a concurrent
connect() never sees a dangling reference (see its docstring);
:func:`apply_lb_delta` writes just one change in that order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Mapping, Protocol, TypeVar

from datapath.errors import MapError
from datapath.maps._codec import MapCodec

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["MapBackend", "BccMap", "FakeMap", "CachedMap", "ReconcileResult", "reconcile", "reconcile_lb",
           "apply_lb_delta"]


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


class CachedMap(Generic[K, V]):
    """Write-through cache of a map this process alone writes (the agent's view).

    ``items()`` answers from memory instead of dumping the kernel map, which is
    what dominates a reconcile of tens of thousands of entries; every write
    goes to the backing map first and is cached only if it succeeded.
    :meth:`resync` reloads from the backing map (after a restart, or to catch
    drift)."""

    def __init__(self, backing: MapBackend[K, V]) -> None:
        self.backing = backing
        self.name = backing.name
        self._data: dict[K, V] = {}
        self.writes = 0  # updates and deletes that reached the backing map
        self.resync()

    def resync(self) -> None:
        self._data = dict(self.backing.items())

    def items(self) -> list[tuple[K, V]]:
        return list(self._data.items())

    def update(self, key: K, value: V) -> None:
        self.writes += 1
        self.backing.update(key, value)
        self._data[key] = value

    def delete(self, key: K) -> None:
        self.writes += 1
        self.backing.delete(key)
        self._data.pop(key, None)


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

    def __add__(self, other: "ReconcileResult") -> "ReconcileResult":
        return ReconcileResult(
            self.added + other.added, self.updated + other.updated,
            self.deleted + other.deleted, self.unchanged + other.unchanged,
        )


def reconcile(desired: Mapping[K, V], backend: MapBackend[K, V]) -> ReconcileResult:
    """Make ``backend`` hold exactly ``desired``: add/update first, then delete."""
    plan = _Plan.of(desired, backend)
    plan.write(backend)
    plan.remove(backend)
    return plan.result


@dataclass
class _Plan(Generic[K, V]):
    """What one map needs: writes (adds and updates, sorted) and deletes (sorted)."""

    writes: list[tuple[K, V]]
    deletes: list[K]
    result: ReconcileResult

    @classmethod
    def of(cls, desired: Mapping[K, V], backend: MapBackend[K, V]) -> "_Plan[K, V]":
        return cls.between(desired, dict(backend.items()))

    @classmethod
    def between(cls, desired: Mapping[K, V], current: Mapping[K, V]) -> "_Plan[K, V]":
        writes: list[tuple[K, V]] = []
        added = updated = unchanged = 0
        for key, value in _stable(desired.items()):
            if key not in current:
                added += 1
            elif current[key] != value:
                updated += 1
            else:
                unchanged += 1
                continue
            writes.append((key, value))
        stale = _stable_keys([k for k in current if k not in desired])
        return cls(writes, stale, ReconcileResult(added, updated, len(stale), unchanged))

    def write(self, backend: MapBackend[K, V], only: Callable[[K, V], bool] | None = None) -> None:
        for key, value in self.writes:
            if only is None or only(key, value):
                backend.update(key, value)

    def remove(self, backend: MapBackend[K, V], only: Callable[[K], bool] | None = None) -> None:
        for key in self.deletes:
            if only is None or only(key):
                backend.delete(key)


def reconcile_lb(
    services_desired: Mapping[Any, Any],
    backends_desired: Mapping[int, Any],
    revnat_desired: Mapping[int, Any],
    services: MapBackend[Any, Any],
    backends: MapBackend[int, Any],
    revnat: MapBackend[int, Any],
) -> ReconcileResult:
    """Reconcile lb4_services, lb4_backends and lb4_reverse_nat together.

    Keys of ``services`` are :class:`~datapath.maps.lb_services.ServiceKey`,
    values of ``backends`` :class:`~datapath.maps.lb_backends.BackendValue`.
    The order guarantees that connect4, which reads master -> slot ->
    backend, never follows a reference to something missing or inactive:

    1. lb4_backends: add new backends, and updates that leave a backend active
    2. lb4_reverse_nat: add/update
    3. lb4_services backend slots (slot >= 1): add/update.  A growing service
       gets its new slots *before* its count rises.
    4. lb4_services master entries: add/update.  A shrinking service lowers
       its count *before* its now-unused slots are deleted (step 6); a new
       service appears only once its slots exist.
    5. lb4_services: delete stale masters (removed frontends stop matching,
       so their slots are unreachable from here on)
    6. lb4_backends: updates that make a backend terminating (it has just
       left every reachable slot in steps 3-5), then lb4_services: delete
       stale slots
    7. lb4_backends and lb4_reverse_nat: delete what nothing references now

    Like :func:`reconcile`, nothing is deleted before every write succeeded,
    and a second run with the same input touches nothing.
    """
    s_plan = _Plan.of(services_desired, services)
    b_plan = _Plan.of(backends_desired, backends)
    r_plan = _Plan.of(revnat_desired, revnat)
    current_backends = {k for k, _v in backends.items()}
    return _apply_lb(s_plan, b_plan, r_plan, current_backends, services, backends, revnat)


def apply_lb_delta(delta: Any, services: MapBackend[Any, Any], backends: MapBackend[int, Any],
                   revnat: MapBackend[int, Any]) -> ReconcileResult:
    """Write one :class:`~datapath.compile_lb.LBDelta` (only the entries it
    touches) in :func:`reconcile_lb`'s order.  The maps are not read: the
    delta carries the entries before and after, so the cost follows the size
    of the change, not of the maps."""
    s_plan = _Plan.between(delta.new_services, delta.old_services)
    b_plan = _Plan.between(delta.new_backends, delta.old_backends)
    r_plan = _Plan.between(delta.new_revnat, delta.old_revnat)
    return _apply_lb(s_plan, b_plan, r_plan, set(delta.old_backends), services, backends, revnat)


def _apply_lb(s_plan: "_Plan[Any, Any]", b_plan: "_Plan[int, Any]", r_plan: "_Plan[int, Any]",
              current_backends: set[int], services: MapBackend[Any, Any], backends: MapBackend[int, Any],
              revnat: MapBackend[int, Any]) -> ReconcileResult:
    from datapath.constants import BackendState  # local: keep reconcile import-light

    def stays_active(_k: int, v: Any) -> bool:
        return bool(v.state == BackendState.ACTIVE)

    def is_master(k: Any) -> bool:
        return bool(k.is_master)

    def new_or_active(k: int, v: Any) -> bool:
        return k not in current_backends or stays_active(k, v)

    b_plan.write(backends, only=new_or_active)                          # 1
    r_plan.write(revnat)                                                # 2
    s_plan.write(services, only=lambda k, v: not is_master(k))          # 3
    s_plan.write(services, only=lambda k, v: is_master(k))              # 4
    s_plan.remove(services, only=is_master)                             # 5
    b_plan.write(backends, only=lambda k, v: not new_or_active(k, v))   # 6
    s_plan.remove(services, only=lambda k: not is_master(k))
    b_plan.remove(backends)                                             # 7
    r_plan.remove(revnat)
    return s_plan.result + b_plan.result + r_plan.result


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


class CachedMaps:
    """Mixin for an owner of BPF maps that only it writes (a node's datapath, its
    socket LB): each map is kept as it was last written, read from the kernel once,
    so a reconcile diffs against memory and writes only what changed.

    The owner provides ``program`` (a compiled object with ``table(name)``) and
    sets ``self._cached = {}`` when it opens.
    """

    _cached: "dict[str, CachedMap]"

    def _map(self, codec: object) -> BccMap:
        return BccMap(self.program.table(codec.map_name), codec)  # type: ignore[attr-defined]

    def _cached_map(self, codec: object) -> CachedMap:
        name = codec.map_name  # type: ignore[attr-defined]
        if name not in self._cached:
            self._cached[name] = CachedMap(self._map(codec))
        return self._cached[name]

    def resync(self) -> None:
        """Reload the cached view of this owner's maps from the kernel."""
        for m in self._cached.values():
            m.resync()

    @property
    def map_writes(self) -> int:
        """Updates and deletes made to this owner's cached maps so far."""
        return sum(m.writes for m in self._cached.values())
