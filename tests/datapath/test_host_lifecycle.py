"""attach_host is idempotent, removes only its own filters, and a closed
datapath leaves the LAN interface as it found it."""
from __future__ import annotations

import ipaddress
import json
from typing import Iterator

import pytest

from conftest import require_kernel
from topology import Topology, sh

pytestmark = pytest.mark.datapath

NODE_IP = ipaddress.IPv4Address("192.168.10.101")


@pytest.fixture
def node() -> Iterator[str]:
    require_kernel()
    t = Topology()
    try:
        netns = t.add_node("h")
        sh("ip", "-n", netns, "link", "add", "ens5", "type", "veth", "peer", "name", "peer0")
        for dev in ("ens5", "peer0"):
            sh("ip", "-n", netns, "link", "set", dev, "up")
        yield netns
    finally:
        t.destroy()


def qdisc_kinds(netns: str, dev: str) -> list[str]:
    return [q["kind"] for q in json.loads(sh("tc", "-n", netns, "-j", "qdisc", "show", "dev", dev).stdout)]


def filter_prios(netns: str, dev: str, hook: str) -> set[int]:
    out = json.loads(sh("tc", "-n", netns, "-j", "filter", "show", "dev", dev, hook).stdout or "[]")
    return {f["pref"] for f in out}


def test_attach_host_is_idempotent_and_close_removes_what_it_added(node):
    from datapath.attach import HOST_FILTER_PRIO
    from datapath.node import NodeDatapath

    with NodeDatapath(node) as dp:
        first = dp.attach_host(["ens5"], NODE_IP)
        assert dp.attach_host(["ens5"], NODE_IP) == first
        assert filter_prios(node, "ens5", "ingress") == {HOST_FILTER_PRIO}
        assert filter_prios(node, "ens5", "egress") == {HOST_FILTER_PRIO}
        dp.attach_host(["ens5", "peer0"], NODE_IP)
        dp.attach_host(["peer0"], NODE_IP)  # ens5 no longer listed: detached
        assert "clsact" not in qdisc_kinds(node, "ens5")
        assert set(dp.host_attached) == {"peer0"}
    assert "clsact" not in qdisc_kinds(node, "peer0")


def test_close_leaves_other_components_filters_and_their_clsact(node):
    from datapath.attach import TcAttacher
    from datapath.loader import NodeProgram
    from datapath.node import NodeDatapath

    foreign_prio = 0x10
    with NodeProgram() as other:
        tc = TcAttacher(node)
        try:
            # another component's filter on a clsact that we then create
            with NodeDatapath(node) as dp:
                dp.attach_host(["ens5"], NODE_IP)
                theirs = tc.attach("ens5", from_container=other.from_container,
                                   to_container=other.to_container, prio=foreign_prio)
            assert filter_prios(node, "ens5", "ingress") == {foreign_prio}
            assert "clsact" in qdisc_kinds(node, "ens5")
            tc.detach(theirs)
            # their clsact, which we find: we never remove it
            sh("tc", "-n", node, "qdisc", "add", "dev", "peer0", "clsact")
            with NodeDatapath(node) as dp:
                dp.attach_host(["peer0"], NODE_IP)
            assert "clsact" in qdisc_kinds(node, "peer0")
            assert filter_prios(node, "peer0", "ingress") == set()
        finally:
            tc.close()


def test_attach_host_names_a_missing_interface(node):
    from datapath.errors import AttachError
    from datapath.node import NodeDatapath

    with NodeDatapath(node) as dp:
        with pytest.raises(AttachError, match="ens9"):
            dp.attach_host(["ens9"], NODE_IP)
