"""Pure: reconcile desired entries against a fake map."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from datapath.errors import MapError
from datapath.reconcile import FakeMap, ReconcileResult, reconcile


def test_reconcile_adds_before_delete_and_is_idempotent():
    m: FakeMap[str, int] = FakeMap(data={"keep": 1, "change": 2, "stale": 3})
    res = reconcile({"keep": 1, "change": 20, "new": 4}, m)

    assert res == ReconcileResult(added=1, updated=1, deleted=1, unchanged=1)
    assert m.data == {"keep": 1, "change": 20, "new": 4}
    kinds = [op for op, _ in m.ops]
    assert kinds == ["update", "update", "delete"], "all adds/updates must precede deletes"
    m.ops.clear()
    assert reconcile({"keep": 1, "change": 20, "new": 4}, m) == ReconcileResult(unchanged=3)
    assert m.ops == [], "a second reconcile must not touch the map"


def test_failed_add_leaves_existing_entries_in_place():
    m: FakeMap[str, int] = FakeMap(data={"old": 1}, fail=lambda op, key: op == "update" and key == "new")
    with pytest.raises(MapError, match="injected"):
        reconcile({"new": 2}, m)
    assert m.data == {"old": 1}, "nothing may be deleted before every add succeeded"


@given(st.dictionaries(st.integers(0, 20), st.integers(0, 3)),
       st.dictionaries(st.integers(0, 20), st.integers(0, 3)))
def test_reconcile_reaches_desired_state_from_any_start(current, desired):
    m: FakeMap[int, int] = FakeMap(data=dict(current))
    res = reconcile(desired, m)
    assert m.data == desired
    assert res.added + res.updated + res.unchanged == len(desired)
    assert res.deleted == len(set(current) - set(desired))


def test_cached_map_answers_from_memory_and_writes_through_only_what_succeeded():
    from datapath.errors import MapError
    from datapath.reconcile import CachedMap, FakeMap, reconcile

    backing = FakeMap("m", {1: "a", 2: "b"}, fail=lambda op, k: op == "update" and k == 9)
    cached = CachedMap(backing)
    backing.data[3] = "drift"  # written behind the agent's back: not seen until resync
    assert dict(cached.items()) == {1: "a", 2: "b"}
    r = reconcile({1: "a", 4: "d"}, cached)
    assert (r.added, r.deleted) == (1, 1) and backing.data == {1: "a", 3: "drift", 4: "d"}
    with pytest.raises(MapError):
        cached.update(9, "x")
    assert 9 not in dict(cached.items())
    cached.resync()
    assert dict(cached.items()) == backing.data
