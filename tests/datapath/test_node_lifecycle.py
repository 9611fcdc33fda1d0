"""NodeDatapath / tc attach lifecycle: we remove only what we added."""
from __future__ import annotations

import json

import pytest

from conftest import ID_A, ID_B
from datapath.attach import FILTER_PRIO, TcAttacher
from datapath.errors import AttachError, NetnsError
from datapath.node import EndpointSpec, NodeDatapath

pytestmark = pytest.mark.datapath


def qdisc_kinds(topo, dev: str) -> set[str]:
    return {q["kind"] for q in json.loads(topo.node("tc", "-j", "qdisc", "show", "dev", dev).stdout)}


def filter_prios(topo, dev: str, where: str) -> set[int]:
    out = json.loads(topo.node("tc", "-j", "filter", "show", "dev", dev, where).stdout or "[]")
    return {f["pref"] for f in out}


def test_close_removes_our_filters_and_the_clsact_we_created(topo, pods):
    a, b = pods
    dp = NodeDatapath(topo.node_netns)
    with dp:
        dp.attach([a.lxc])
        assert "clsact" in qdisc_kinds(topo, a.lxc)
        assert filter_prios(topo, a.lxc, "ingress") == {FILTER_PRIO}
        assert filter_prios(topo, a.lxc, "egress") == {FILTER_PRIO}
    assert "clsact" not in qdisc_kinds(topo, a.lxc), "clsact we created must be removed on close"
    dp.close()  # idempotent


def test_existing_clsact_and_foreign_filters_survive_detach(topo, pods):
    a, _ = pods
    topo.node("tc", "qdisc", "add", "dev", a.lxc, "clsact")
    # a foreign classic-BPF filter ("ret 0": no match) at another priority
    topo.node("tc", "filter", "add", "dev", a.lxc, "ingress", "prio", "7", "bpf", "bytecode", "1,6 0 0 0,")
    with NodeDatapath(topo.node_netns) as dp:
        dp.attach([a.lxc])
        assert filter_prios(topo, a.lxc, "ingress") == {7, FILTER_PRIO}
    assert "clsact" in qdisc_kinds(topo, a.lxc), "a clsact we did not create must stay"
    assert filter_prios(topo, a.lxc, "ingress") == {7}, "only our filter may be removed"
    assert filter_prios(topo, a.lxc, "egress") == set()


def test_detach_tolerates_a_device_that_is_already_gone(topo, pods):
    a, b = pods
    with NodeDatapath(topo.node_netns) as dp:
        dp.attach([a.lxc, b.lxc])
        topo.node("ip", "link", "del", a.lxc)
    assert "clsact" not in qdisc_kinds(topo, b.lxc)


def test_close_after_partial_setup_is_safe(topo):
    dp = NodeDatapath(topo.node_netns)
    with pytest.raises(AttachError, match="not found"):
        with dp:
            dp.attach(["lxc-does-not-exist"])
    dp.close()


def test_missing_netns_gives_a_clear_error():
    with pytest.raises(NetnsError, match="ip netns add"):
        TcAttacher("twt-no-such-namespace")


def test_attaching_twice_on_the_same_device_is_refused(topo, pods):
    a, _ = pods
    with NodeDatapath(topo.node_netns) as one, NodeDatapath(topo.node_netns) as two:
        one.attach([a.lxc])
        with pytest.raises(AttachError, match="already has a tc filter"):
            two.attach([a.lxc])
        assert filter_prios(topo, a.lxc, "ingress") == {FILTER_PRIO}, "the refused attach must not detach the first"


def test_endpoints_reconcile_by_ifname(topo, pods):
    a, b = pods
    with NodeDatapath(topo.node_netns) as dp:
        idx = dp.attach([a.lxc, b.lxc])
        res = dp.set_endpoints([EndpointSpec(a.lxc, ID_A, a.ip), EndpointSpec(b.lxc, ID_B, b.ip)])
        assert (res.added, res.deleted) == (2, 0)
        res = dp.set_endpoints([EndpointSpec(b.lxc, ID_B, b.ip)])
        assert (res.added, res.deleted, res.unchanged) == (0, 1, 1)
        assert idx[b.lxc] > 0
