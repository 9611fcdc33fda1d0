"""Pure: LBTable -> lb4 maps, stable id allocation, and the update ordering
of reconcile_lb against fake maps (a concurrent connect() must never follow
a master entry to a missing slot, or a slot to a missing/inactive backend)."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from twin.model.enums import Protocol
from twin.semantics.tables import LBBackend, LBService, LBTable

from datapath.compile_lb import LBIds, compile_lb, lb_dump_lines
from datapath.constants import BackendState, LBSlot
from datapath.errors import LBCompileError
from datapath.maps.lb_services import ServiceKey
from datapath.reconcile import FakeMap, ReconcileResult, reconcile_lb

VIP = ipaddress.IPv4Address("10.96.0.10")
VIP2 = ipaddress.IPv4Address("10.96.0.11")


def be(last: int, state: str = "active", port: int = 8080, proto: Protocol = Protocol.TCP) -> LBBackend:
    return LBBackend(ipaddress.IPv4Address(f"10.200.0.{last}"), port, proto, f"default/p{last}", state)


def svc(*backends: LBBackend, ip=VIP, port: int = 80, proto: Protocol = Protocol.TCP) -> LBService:
    return LBService("default/svc", ip, port, proto, "ClusterIP", tuple(backends))


def master(ip=VIP, port=80, proto=Protocol.TCP) -> ServiceKey:
    return ServiceKey(ip, port, proto, int(LBSlot.MASTER))


def test_master_holds_active_count_and_slots_hold_active_backends_in_order():
    maps = compile_lb(LBTable((svc(be(2), be(3, "terminating"), be(4)),)))
    assert lb_dump_lines(maps.services, maps.backends, maps.revnat) == [
        "svc 10.96.0.10:80/TCP slot=0 count=2 revnat=1",
        "svc 10.96.0.10:80/TCP slot=1 backend=1",
        "svc 10.96.0.10:80/TCP slot=2 backend=3",
        "backend 1 10.200.0.2:8080/TCP ACTIVE",
        "backend 2 10.200.0.3:8080/TCP TERMINATING",
        "backend 3 10.200.0.4:8080/TCP ACTIVE",
        "revnat 1 10.96.0.10:80",
    ]


def test_backend_shared_by_two_frontends_has_one_id_and_is_active_if_active_anywhere():
    maps = compile_lb(LBTable((svc(be(2, "terminating")), svc(be(2), ip=VIP2))))
    assert len(maps.backends) == 1
    assert next(iter(maps.backends.values())).state == BackendState.ACTIVE
    assert maps.services[master()].count == 0
    assert maps.services[master(VIP2)].count == 1


def test_ids_persist_across_compiles_and_released_ids_are_not_reused_at_once():
    first = compile_lb(LBTable((svc(be(2), be(3)), svc(be(4), ip=VIP2))))
    b2 = first.ids.backends[(be(2).ip, 8080, Protocol.TCP)]
    rev_vip = first.ids.frontends[(VIP, 80, Protocol.TCP)]
    # be(3) and VIP2 go away, be(5) and a new frontend arrive, order shuffled
    second = compile_lb(LBTable((svc(be(5), ip=VIP2, port=81), svc(be(5), be(2)))), first.ids)
    assert second.ids.backends[(be(2).ip, 8080, Protocol.TCP)] == b2, "a backend must keep its id"
    assert second.ids.frontends[(VIP, 80, Protocol.TCP)] == rev_vip, "a frontend must keep its rev_nat_index"
    released = set(first.ids.backends.values()) - set(second.ids.backends.values())
    assert released and not released & set(second.ids.backends.values())
    assert second.ids.backends[(be(5).ip, 8080, Protocol.TCP)] not in first.ids.backends.values(), \
        "a new backend must not get an id that was just released"


def test_allocator_wraps_and_skips_ids_in_use():
    ids = LBIds(backends={(be(2).ip, 8080, Protocol.TCP): 1}, next_backend=0xFFFFFFFF)
    maps = compile_lb(LBTable((svc(be(2), be(3), be(4)),)), ids)
    assert maps.ids.backends[(be(2).ip, 8080, Protocol.TCP)] == 1
    assert sorted(maps.ids.backends.values()) == [1, 2, 0xFFFFFFFF]


def test_exhausted_rev_nat_indices_are_an_error_naming_the_frontend(monkeypatch):
    import datapath.compile_lb as cl

    monkeypatch.setattr(cl, "REVNAT_INDEX_MAX", 1)
    with pytest.raises(LBCompileError, match="10.96.0.11:80/TCP"):
        compile_lb(LBTable((svc(be(2)), svc(be(2), ip=VIP2))))


@pytest.mark.parametrize("table, message", [
    (LBTable((svc(be(2)), svc(be(3)))), "also defined"),
    (LBTable((svc(be(2), be(2)),)), "listed twice"),
    (LBTable((svc(be(2, "draining")),)), "unknown backend state"),
    (LBTable((svc(be(2), port=0),)), "outside 1..65535"),
    (LBTable((svc(be(2), proto=Protocol.ANY),)), "cannot be load-balanced"),
])
def test_malformed_tables_are_rejected_with_the_offending_item(table, message):
    with pytest.raises(LBCompileError, match=message):
        compile_lb(table)


class Maps:
    """Three fake maps sharing one operation log, with a connect4 simulator."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, object]] = []
        self.services, self.backends, self.revnat = FakeMap("lb4_services"), FakeMap("lb4_backends"), FakeMap("lb4_reverse_nat")
        self.broken: list[str] = []
        for m in (self.services, self.backends, self.revnat):
            m.update = self._wrap(m, m.update, "update")  # type: ignore[method-assign]
            m.delete = self._wrap(m, m.delete, "delete")  # type: ignore[method-assign]

    def _wrap(self, m, fn, op):
        def call(*args):
            fn(*args)
            self.log.append((m.name, op, args[0]))
            self.check()
        return call

    def check(self) -> None:
        """After every single map operation: every reachable reference is valid."""
        for key, value in self.services.data.items():
            if not key.is_master:
                continue
            if value.count and value.rev_nat_index not in self.revnat.data:
                self.broken.append(f"{key} names missing rev_nat {value.rev_nat_index}")
            for slot in range(LBSlot.FIRST_BACKEND, LBSlot.FIRST_BACKEND + value.count):
                sk = ServiceKey(key.address, key.port, key.protocol, slot)
                if sk not in self.services.data:
                    self.broken.append(f"{key} count={value.count} but slot {slot} is missing")
                    continue
                bid = self.services.data[sk].backend_id
                b = self.backends.data.get(bid)
                if b is None or b.state != BackendState.ACTIVE:
                    self.broken.append(f"slot {sk} names backend {bid} which is {b}")

    def apply(self, maps) -> ReconcileResult:
        return reconcile_lb(maps.services, maps.backends, maps.revnat, self.services, self.backends, self.revnat)


def test_growing_service_writes_new_slots_before_raising_count():
    m = Maps()
    first = compile_lb(LBTable((svc(be(2)),)))
    m.apply(first)
    m.log.clear()
    m.apply(compile_lb(LBTable((svc(be(2), be(3), be(4)),)), first.ids))
    ops = [(name, op, getattr(k, "slot", k)) for name, op, k in m.log]
    raise_count = ops.index(("lb4_services", "update", LBSlot.MASTER))
    assert ops.index(("lb4_services", "update", 2)) < raise_count
    assert ops.index(("lb4_services", "update", 3)) < raise_count
    assert all(name == "lb4_backends" for name, _op, _ in ops[:2]), "new backends come first"
    assert m.broken == []


def test_shrinking_service_lowers_count_before_deleting_slots_and_backends():
    m = Maps()
    first = compile_lb(LBTable((svc(be(2), be(3), be(4)),)))
    m.apply(first)
    m.log.clear()
    res = m.apply(compile_lb(LBTable((svc(be(2)),)), first.ids))
    ops = [(name, op, getattr(k, "slot", k)) for name, op, k in m.log]
    lower = ops.index(("lb4_services", "update", LBSlot.MASTER))
    assert lower < ops.index(("lb4_services", "delete", 2))
    assert lower < ops.index(("lb4_services", "delete", 3))
    assert [op for name, op, _ in ops if name == "lb4_backends"] == ["delete", "delete"]
    assert ops[-2:] == [("lb4_backends", "delete", 2), ("lb4_backends", "delete", 3)], \
        "backends are deleted only after no slot names them"
    assert res.deleted == 4 and m.broken == []


def test_backend_turning_terminating_leaves_its_slot_before_its_flag_changes():
    m = Maps()
    first = compile_lb(LBTable((svc(be(2), be(3)),)))
    m.apply(first)
    m.log.clear()
    m.apply(compile_lb(LBTable((svc(be(2, "terminating"), be(3)),)), first.ids))
    assert m.broken == [], m.broken
    names = [(name, op) for name, op, _ in m.log]
    assert names.index(("lb4_backends", "update")) > names.index(("lb4_services", "update"))


def test_removing_a_service_deletes_its_master_before_its_slots():
    m = Maps()
    first = compile_lb(LBTable((svc(be(2), be(3)),)))
    m.apply(first)
    m.log.clear()
    m.apply(compile_lb(LBTable(()), first.ids))
    slots = [k.slot for name, op, k in m.log if name == "lb4_services"]
    assert slots == [0, 1, 2]
    assert m.broken == [] and m.services.data == {} and m.backends.data == {} and m.revnat.data == {}


def test_removed_frontend_stops_matching_before_its_backend_turns_terminating_elsewhere():
    # VIP2 goes away while be(3), its only backend, turns terminating behind VIP:
    # VIP2's master must be gone before be(3) is flagged, or a connect() to VIP2
    # in between would be sent to a terminating backend.
    m = Maps()
    first = compile_lb(LBTable((svc(be(2), be(3)), svc(be(3), ip=VIP2))))
    m.apply(first)
    m.apply(compile_lb(LBTable((svc(be(2), be(3, "terminating")),)), first.ids))
    assert m.broken == []
    assert master(VIP2) not in m.services.data


def test_second_reconcile_with_the_same_table_touches_nothing():
    m = Maps()
    table = LBTable((svc(be(2), be(3, "terminating")), svc(be(2), ip=VIP2)))
    first = compile_lb(table)
    m.apply(first)
    m.log.clear()
    again = compile_lb(table, first.ids)
    assert again.services == first.services and again.backends == first.backends
    res = m.apply(again)
    assert m.log == [] and not res.changed


def test_failed_write_deletes_nothing():
    m = Maps()
    first = compile_lb(LBTable((svc(be(2), be(3)),)))
    m.apply(first)
    m.services.fail = lambda op, key: op == "update" and key.is_master
    from datapath.errors import MapError

    with pytest.raises(MapError):
        m.apply(compile_lb(LBTable((svc(be(4)),)), first.ids))
    assert not [op for _n, op, _k in m.log if op == "delete"]
    assert m.broken == []


_states = st.sampled_from(["active", "terminating", None])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(2, 7), _states), max_size=5), min_size=1, max_size=5))
def test_any_sequence_of_tables_keeps_every_reference_valid_at_every_step(steps):
    m = Maps()
    ids = LBIds()
    for step in steps:
        chosen = {}
        for last, state in step:
            if state is not None:
                chosen[last] = state
        table = LBTable((svc(*(be(last, st_) for last, st_ in sorted(chosen.items()))),
                         svc(*(be(last, st_) for last, st_ in sorted(chosen.items()) if last % 2), ip=VIP2)))
        maps = compile_lb(table, ids)
        m.apply(maps)
        ids = maps.ids
        assert m.broken == [], m.broken
        assert m.services.data == dict(maps.services)
        assert m.backends.data == dict(maps.backends)
        assert m.revnat.data == dict(maps.revnat)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(2, 7), _states), max_size=5), min_size=1, max_size=6))
def test_incremental_compiler_equals_a_full_compile_after_every_change(steps):
    """One long-lived LBCompiler fed each table (compiling only what changed)
    holds exactly what compile_lb computes from scratch with the previous ids,
    and its deltas, written to maps, keep every reference valid."""
    from datapath.compile_lb import LBCompiler
    from datapath.reconcile import apply_lb_delta

    m = Maps()
    inc = LBCompiler()
    ids = LBIds()
    for step in steps:
        chosen = {last: s for last, s in step if s is not None}
        fronts = [svc(*(be(last, s) for last, s in sorted(chosen.items())))]
        if len(chosen) % 2:
            fronts.append(svc(*(be(last, s) for last, s in sorted(chosen.items()) if last % 2), ip=VIP2))
        table = LBTable(tuple(fronts))
        delta = inc.plan_table(table)
        apply_lb_delta(delta, m.services, m.backends, m.revnat)
        inc.commit(delta)
        full = compile_lb(table, ids)
        ids = full.ids
        got = inc.maps()
        assert (dict(got.services), dict(got.backends), dict(got.revnat)) == \
            (dict(full.services), dict(full.backends), dict(full.revnat))
        assert m.broken == [], m.broken
        assert m.services.data == dict(full.services) and m.backends.data == dict(full.backends)
        assert m.revnat.data == dict(full.revnat)


def test_unchanged_frontends_are_not_compiled_again():
    from datapath.compile_lb import LBCompiler

    c = LBCompiler()
    table = LBTable((svc(be(2)), svc(be(3), ip=VIP2)))
    c.commit(c.plan_table(table))
    same = c.plan_table(LBTable(tuple(table.services)))
    assert same.empty and same.frontends_compiled == 0
    grown = c.plan_table(LBTable((table.services[0], svc(be(3), be(4), ip=VIP2))))
    assert grown.frontends_compiled == 1
    assert set(grown.new_services) == {master(VIP2), ServiceKey(VIP2, 80, Protocol.TCP, 1),
                                       ServiceKey(VIP2, 80, Protocol.TCP, 2)}
