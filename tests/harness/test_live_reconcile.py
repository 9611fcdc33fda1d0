"""Harness tier: the node agents reconcile policy changes in place, without
reloading programs and without dropping an allowed flow that stays allowed;
readiness published to the store reaches every node's LB maps."""
from __future__ import annotations

import json
import sys
import time

import pytest
import yaml

from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.model.yamlsrc import Source

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {nodeName: k8s-w1, containers: [{name: c, image: twin/echo}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec: {nodeName: k8s-w2, containers: [{name: c, image: twin/echo}]}
"""
L3 = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "allow"},
      "spec": {"endpointSelector": {"matchLabels": {"app": "server"}},
               "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}}
L4 = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "allow"},
      "spec": {"endpointSelector": {"matchLabels": {"app": "server"}},
               "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "80", "endPort": 8080, "protocol": "TCP"}]}]}]}}

# Sends N datagrams on one connected UDP socket, 5 ms apart; prints how many echoes came back.
SENDER = r"""
import json, socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((ip, 53)); s.settimeout(0.5)
got = 0
for i in range(n):
    s.send(b"seq%d" % i)
    try:
        if s.recv(100).startswith(b"seq%d|" % i): got += 1
    except OSError: pass
    time.sleep(0.005)
print(json.dumps({"sent": n, "echoed": got}))
"""


def cluster_with(policy):
    srcs = [Source("<pods>", PODS)] + ([Source("<policy>", yaml.safe_dump(policy))] if policy else [])
    return build_cluster(srcs)


def test_flow_that_stays_allowed_loses_nothing_while_policy_flips_between_l3_and_l4_forms():
    base = cluster_with(L3)
    with RealCluster(base) as rc:
        server = base.pod("default/server")
        progs = {n: (dp.program.from_container, dp.program.to_container) for n, dp in rc.datapaths.items()}
        proc = rc.topo.popen("default/client", [sys.executable, "-c", SENDER, str(server.ip), "300"], text=True)
        changes = 0
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            prog = rc.program(cluster_with(L4 if changes % 2 == 0 else L3))
            changes += 1
            assert sum(c["added"] + c["updated"] + c["deleted"] for c in prog.changes.values()) > 0
        out, err = proc.communicate(timeout=15)
        result = json.loads(out)
        assert changes >= 5, f"only {changes} policy changes happened during the flow"
        assert result["echoed"] == result["sent"], f"{result}; stderr: {err}"
        assert progs == {n: (dp.program.from_container, dp.program.to_container) for n, dp in rc.datapaths.items()}


def test_removing_the_allow_drops_new_connections_and_restoring_it_readmits_them():
    from harness import tools
    base = cluster_with(L4)
    with RealCluster(base) as rc:
        ip = str(base.pod("default/server").ip)
        assert tools.tcp_connect(rc.topo, "default/client", ip, 80, 1.0)["outcome"] == "answered"
        deny_all = dict(L4, spec={"endpointSelector": {"matchLabels": {"app": "server"}}, "ingress": [{}]})
        rc.program(cluster_with(deny_all))
        assert tools.tcp_connect(rc.topo, "default/client", ip, 80, 0.5)["outcome"] == "timeout"
        rc.program(cluster_with(L4))
        assert tools.tcp_connect(rc.topo, "default/client", ip, 80, 1.0)["outcome"] == "answered"


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def test_readiness_published_to_the_store_reaches_every_nodes_lb_maps_through_its_agent():
    from datapath.constants import LBSlot
    srcs = [Source("<pods>", PODS), Source("<service>", yaml.safe_dump(SERVICE))]
    base = build_cluster(srcs)
    vip = base.service("default/web").cluster_ip

    def active_backends() -> dict[str, int]:
        out = {}
        for node, lb in rc.socklbs.items():
            masters = [v for k, v in lb.services_entries().services.items()
                       if k.address == vip and k.slot == LBSlot.MASTER]
            out[node] = masters[0].count if masters else -1
        return out

    nodes = {n.name for n in base.nodes}
    with RealCluster(base, socket_lb=True) as rc:
        assert set(rc.socklbs) == nodes and len(nodes) >= 2
        assert active_backends() == dict.fromkeys(nodes, 1)
        seconds = rc.set_endpoint_state("default/server", "not-ready")
        assert set(seconds) == nodes
        assert active_backends() == dict.fromkeys(nodes, 0)
        last = {n: a.reports[-1] for n, a in rc.agents.items()}
        assert all(set(r.results) == {"services"} and r.ok for r in last.values()), last
        rc.set_endpoint_state("default/server", "ready")
        assert active_backends() == dict.fromkeys(nodes, 1)
