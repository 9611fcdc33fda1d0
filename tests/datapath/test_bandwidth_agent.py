"""A node agent with ``bandwidth=True`` programs its pods' enforced egress
limits (twin.semantics.bandwidth.node_limits) on the node's uplink: the host
program goes on the uplink without L2, a changed annotation changes the class
in place, a removed one frees it, close leaves the uplink as it found it."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import require_kernel
from test_agent import NODE, cluster
from topology import Topology, sh
from twin.semantics.bandwidth import EGRESS_ANNOTATION

pytestmark = pytest.mark.datapath


@pytest.fixture
def node():
    """The node netns with the three pods' devices and an uplink ens5 (peer in the same netns)."""
    require_kernel()
    base = cluster()
    topo = Topology()
    try:
        topo.create_node()
        lxc = {p.key: topo.add_pod(p.name, str(p.ip)).lxc for p in base.pods}
        sh("ip", "-n", topo.node_netns, "link", "add", "ens5", "type", "veth", "peer", "name", "peer0")
        for dev in ("ens5", "peer0"):
            sh("ip", "-n", topo.node_netns, "link", "set", dev, "up")
        yield topo, lxc
    finally:
        topo.destroy()


def root_kind(netns: str) -> str:
    out = json.loads(sh("tc", "-n", netns, "-j", "qdisc", "show", "dev", "ens5").stdout)
    return next(q["kind"] for q in out if q.get("root"))


def host_prog_id(netns: str) -> int:
    out = json.loads(sh("tc", "-n", netns, "-j", "filter", "show", "dev", "ens5", "egress").stdout)
    return next(f["options"]["prog"]["id"] for f in out if "options" in f)


def annotated(base, **limits: str):
    c = replace(base, values=replace(base.values, bandwidth_manager=True))
    for name, value in limits.items():
        c = c.with_annotations("Pod", f"default/{name}", {EGRESS_ANNOTATION: value})
    return c


def test_agent_programs_changes_and_frees_pod_limits_on_the_uplink_in_place(node):
    from datapath.agent import NodeAgent, NodeHost, Store

    topo, lxc = node
    base = cluster()
    store = Store()
    agent = NodeAgent(NodeHost(NODE, topo.node_netns, lxc.__getitem__), store, bandwidth=True).start()
    try:
        # "other" is annotated with 0: Cilium limits nothing (not enforced), so no class
        rep = agent.wait_for(store.publish(annotated(base, client="10M", other="0")))
        assert rep.ok, rep.error
        st = agent.bandwidth_status()
        assert st["mechanism"] in ("htb", "edt-fq") and st["reason"] and st["device"] == "ens5"
        client_ip = str(base.pod("default/client").ip)
        assert set(st["limits"]) == {"default/client"}
        lim = st["limits"]["default/client"]
        assert (lim["ip"], lim["bytes_per_s"], lim["rate_bps"]) == (client_ip, 1_250_000, 10_000_000)
        if st["mechanism"] == "htb":
            assert lim["class"] == "cb:1" and root_kind(topo.node_netns) == "htb"
        prog = host_prog_id(topo.node_netns)

        rep = agent.wait_for(store.publish(annotated(base, client="5M", server="20M")))
        assert rep.ok, rep.error
        st = agent.bandwidth_status()
        assert st["limits"]["default/client"]["rate_bps"] == 5_000_000
        assert st["limits"]["default/client"]["class"] == lim["class"]  # same class, changed in place
        assert st["limits"]["default/server"]["rate_bps"] == 20_000_000
        assert host_prog_id(topo.node_netns) == prog

        rep = agent.wait_for(store.publish(annotated(base, server="20M")))
        assert rep.ok, rep.error
        assert set(agent.bandwidth_status()["limits"]) == {"default/server"}
    finally:
        agent.close()
    assert root_kind(topo.node_netns) == "noqueue"
    assert sh("tc", "-n", topo.node_netns, "class", "show", "dev", "ens5").stdout == ""
