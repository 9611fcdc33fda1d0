"""The host program on the node's LAN interface (bpf_host.c), in namespaces:
a LAN bridge with two worker nodes of the seed cluster (k8s-w1, k8s-w2, each
with its webpod behind an lxc veth) and an external host.

ARP responder: arping from the external host gets one reply per request
with the node interface's MAC, only for IPs in the responder map.  GARP: the
external host's neighbour table learns the MAC.  North-south: TCP from the
external host to an LB IP reaches a local backend (reply reverse-NATed at
LAN egress) or a remote one (SNAT to the node IP, both translations undone
at LAN ingress), spreads over the backends, and unrelated traffic passes.
"""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import require_kernel
from topology import PYTHON, Pod, Topology, sh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pure"))

pytestmark = pytest.mark.datapath

LB1, LB2 = ipaddress.IPv4Address("10.10.200.1"), ipaddress.IPv4Address("10.10.200.2")
EXT_IP = "192.168.10.200"
NODES = {"k8s-w1": ("192.168.10.101", "172.16.1.0/24"), "k8s-w2": ("192.168.10.102", "172.16.2.0/24")}
PODS = {"k8s-w1": ("webpod1", "172.16.1.10"), "k8s-w2": ("webpod2", "172.16.2.10")}

# A TCP (and UDP) server that answers with its pod name and the peer address it saw.
SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        data, peer = u.recvfrom(100); u.sendto(f"{name} {peer[0]}".encode(), peer)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64); print("ready", flush=True)
while True:
    c, peer = s.accept()
    try:
        c.recv(100); c.sendall(f"{name} {peer[0]}".encode())
    finally:
        c.close()
"""

# N connections (or UDP exchanges, each from a new socket) to host:port; one JSON
# line per attempt: the reply and the address it came from.
CLIENT = r"""
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proto = sys.argv[4] if len(sys.argv) > 4 else "tcp"
for _ in range(n):
    s = socket.socket() if proto == "tcp" else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        if proto == "tcp":
            s.connect((host, port)); peer = s.getpeername(); s.sendall(b"hi"); data = s.recv(100)
        else:
            s.sendto(b"hi", (host, port)); data, peer = s.recvfrom(100)
        print(json.dumps({"reply": data.decode(), "peer": f"{peer[0]}:{peer[1]}"}))
    except OSError as e:
        print(json.dumps({"error": type(e).__name__}))
    finally:
        s.close()
"""


@dataclass
class Lan:
    topo: Topology
    lan: str
    ext: str
    nodes: dict[str, str]  # node name -> netns
    pods: dict[str, Pod]  # node name -> its webpod

    def ns(self, netns: str, *cmd: str, check: bool = True, timeout: float = 20):
        return sh("ip", "netns", "exec", netns, *cmd, check=check, timeout=timeout)

    def mac(self, netns: str, dev: str) -> str:
        return str(json.loads(self.ns(netns, "ip", "-j", "link", "show", dev).stdout)[0]["address"])

    def arping(self, ip, count: int = 3, deadline: int = 5) -> tuple[int, int, set[str]]:
        """(requests sent, replies received, MACs that replied) from the external host."""
        out = self.ns(self.ext, "arping", "-c", str(count), "-w", str(deadline), "-I", "eth0", str(ip),
                      check=False, timeout=deadline + 10).stdout
        sent = int(re.search(r"Sent (\d+) probe", out).group(1))
        received = int(re.search(r"Received (\d+) response", out).group(1))
        macs = {m.lower() for m in re.findall(r"reply from \S+ \[([0-9A-Fa-f:]+)\]", out)}
        return sent, received, macs

    def connect(self, ip, port: int, n: int, proto: str = "tcp") -> list[dict]:
        out = self.ns(self.ext, PYTHON, "-c", CLIENT, str(ip), str(port), str(n), proto, timeout=10 + 3 * n).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def _build(t: Topology) -> Lan:
    lan, ext = t.add_node("lan"), t.add_node("ext")
    sh("ip", "netns", "exec", lan, "ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "netns", "exec", lan, "ip", "link", "set", "br0", "up")
    ports = [(ext, "eth0", EXT_IP)]
    nodes: dict[str, str] = {}
    for name, (ip, _cidr) in NODES.items():
        nodes[name] = t.add_node(name)
        ports.append((nodes[name], "ens5", ip))
    for i, (netns, dev, ip) in enumerate(ports):
        sh("ip", "link", "add", dev, "netns", netns, "type", "veth", "peer", "name", f"p{i}", "netns", lan)
        sh("ip", "netns", "exec", lan, "ip", "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "netns", "exec", netns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "netns", "exec", netns, "ip", "link", "set", dev, "up")
    # the external host reaches LB IPs on-link (it ARPs for them), pod CIDRs via nodes
    sh("ip", "netns", "exec", ext, "ip", "route", "add", "10.10.200.0/29", "dev", "eth0")
    for name, netns in nodes.items():
        for other, (oip, ocidr) in NODES.items():
            if other != name:
                sh("ip", "netns", "exec", netns, "ip", "route", "add", ocidr, "via", oip)
    pods = {name: t.add_pod(PODS[name][0], PODS[name][1], node=netns) for name, netns in nodes.items()}
    return Lan(t, lan, ext, nodes, pods)


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    require_kernel()
    t = Topology()
    procs = []
    try:
        env = _build(t)
        for name, pod in env.pods.items():
            proc = pod.popen(PYTHON, "-c", SERVER, pod.name, "80")
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield env
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        t.destroy()


@pytest.fixture(scope="module")
def dps(lan: Lan) -> Iterator[dict]:
    """A NodeDatapath per node with the host program on ens5."""
    from datapath.node import NodeDatapath

    out = {}
    try:
        for name, netns in lan.nodes.items():
            out[name] = NodeDatapath(netns).open()
            out[name].attach_host(["ens5"], NODES[name][0])
        yield out
    finally:
        for dp in out.values():
            dp.close()


@pytest.fixture
def clean(dps) -> Iterator[dict]:
    """No responder entries and no north-south frontends before and after the test."""
    from twin.semantics.tables import LBTable

    def reset() -> None:
        for dp in dps.values():
            dp.set_l2_responders([])
            dp.set_north_south(LBTable(), seed(), "k8s-w1")
    reset()
    yield dps
    reset()


def seed():
    from twinhelp import seed_cluster
    return seed_cluster()


# -- ARP responder ------------------------------------------------------------------------------

def test_nothing_on_the_node_answers_arp_for_an_lb_ip_without_a_responder_entry(lan, clean):
    for netns in lan.nodes.values():  # no address, no proxy ARP on the LAN interface
        assert lan.ns(netns, "sysctl", "-n", "net.ipv4.conf.ens5.proxy_arp").stdout.strip() == "0"
        assert str(LB1) not in lan.ns(netns, "ip", "-4", "addr").stdout
    sent, received, _ = lan.arping(LB1, count=2, deadline=3)
    assert sent >= 2 and received == 0


def test_responder_entry_answers_each_request_once_with_the_interface_mac(lan, clean):
    dp = clean["k8s-w1"]
    dp.set_l2_responders([(LB1, "ens5")])
    assert dp.l2_responders() == {(LB1, "ens5")}
    sent, received, macs = lan.arping(LB1, count=3)
    assert (sent, received) == (3, 3)
    assert macs == {lan.mac(lan.nodes["k8s-w1"], "ens5")}
    assert dp.l2_responder_stats()[(LB1, "ens5")] == 3
    # an IP without an entry: no reply from anyone
    assert lan.arping(LB2, count=2, deadline=3)[1] == 0


def test_removing_the_entry_stops_the_replies(lan, clean):
    dp = clean["k8s-w1"]
    dp.set_l2_responders([(LB1, "ens5")])
    assert lan.arping(LB1, count=1)[1] == 1
    result = dp.set_l2_responders([])
    assert result.deleted == 1 and dp.l2_responders() == set()
    assert lan.arping(LB1, count=2, deadline=3)[1] == 0


def test_the_entry_of_another_node_answers_with_that_nodes_mac(lan, clean):
    clean["k8s-w2"].set_l2_responders([(LB1, "ens5")])
    sent, received, macs = lan.arping(LB1, count=2)
    assert (sent, received) == (2, 2) and macs == {lan.mac(lan.nodes["k8s-w2"], "ens5")}


def test_gratuitous_requests_are_not_answered(lan, clean):
    dp = clean["k8s-w1"]
    dp.set_l2_responders([(LB1, "ens5")])
    # -U: unsolicited ARP, sender IP = target IP = LB1 (what a node announcing LB1 sends)
    lan.ns(lan.ext, "arping", "-U", "-c", "2", "-I", "eth0", str(LB1), check=False, timeout=15)
    assert dp.l2_responder_stats()[(LB1, "ens5")] == 0
    assert lan.arping(LB1, count=1)[1] == 1  # a normal request still is


def test_responder_needs_the_host_program_on_the_interface(clean):
    from datapath.errors import AttachError

    with pytest.raises(AttachError, match="not attached"):
        clean["k8s-w1"].set_l2_responders([(LB1, "lo")])


# -- gratuitous ARP -------------------------------------------------------------------------------

@pytest.mark.parametrize("arp_accept", [1, 0])
def test_garp_updates_the_neighbour_table_of_a_host_that_accepts_it(lan, clean, arp_accept):
    from datapath.garp import send_garp

    lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")
    lan.ns(lan.ext, "sysctl", "-qw", f"net.ipv4.conf.eth0.arp_accept={arp_accept}")
    try:
        send_garp(f"/run/netns/{lan.nodes['k8s-w2']}", "ens5", LB2)
        mac = lan.mac(lan.nodes["k8s-w2"], "ens5")
        seen = ""
        for _ in range(20):
            seen = lan.ns(lan.ext, "ip", "neigh", "show", str(LB2), "dev", "eth0").stdout
            if seen.strip():
                break
            time.sleep(0.05)
        if arp_accept:
            assert f"lladdr {mac}" in seen
        else:
            assert seen.strip() == ""
    finally:
        lan.ns(lan.ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=0")
        lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")


def test_garp_names_a_missing_interface():
    from datapath.garp import GarpError, send_garp

    require_kernel()
    t = Topology()
    try:
        netns = t.add_node("g")
        with pytest.raises(GarpError, match="nope0"):
            send_garp(f"/run/netns/{netns}", "nope0", LB1)
    finally:
        t.destroy()


# -- north-south load-balancing -------------------------------------------------------------------

def frontend(*pods: str, ip=LB1, port: int = 80, proto: str = "TCP"):
    """svc1's frontend with the named seed pods as active backends (port 80 of the pods)."""
    from twin.model.enums import Protocol
    from twin.semantics.tables import LBBackend, LBService

    c = seed()
    bes = tuple(LBBackend(c.pod(f"default/{p}").ip, 80, Protocol[proto], f"default/{p}", "active") for p in pods)
    return LBService("default/svc1", ip, port, Protocol[proto], "LoadBalancer", bes)


@pytest.fixture
def w1_answers_lb1(lan, clean):
    """k8s-w1 answers ARP for LB1; the external host's ARP cache starts empty."""
    lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")
    clean["k8s-w1"].set_l2_responders([(LB1, "ens5")])
    yield clean["k8s-w1"]
    lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")


def test_lb_ip_reaches_a_local_backend_which_sees_the_client_and_the_reply_comes_from_the_lb_ip(lan, w1_answers_lb1):
    from datapath.maps.ns_nat import NatDir

    dp = w1_answers_lb1
    dp.set_north_south([frontend("webpod1")], seed(), "k8s-w1")
    before = dp.host_stats()
    results = lan.connect(LB1, 80, 3)
    assert results == [{"reply": f"webpod1 {EXT_IP}", "peer": f"{LB1}:80"}] * 3
    after = dp.host_stats()
    assert after["NS_NEW_LOCAL"] - before["NS_NEW_LOCAL"] == 3 and after["NS_NEW_REMOTE"] == before["NS_NEW_REMOTE"]
    dirs = {k.dir for k in dp.ns_connections()}
    assert dirs == {NatDir.FWD, NatDir.REV_EGRESS}


def test_lb_ip_reaches_a_remote_backend_through_snat_and_both_translations_are_undone(lan, w1_answers_lb1):
    from datapath.maps.ns_nat import NAT_PORT_MAX, NAT_PORT_MIN, NatDir

    dp = w1_answers_lb1
    dp.set_north_south([frontend("webpod2")], seed(), "k8s-w1")
    before = dp.host_stats()["NS_NEW_REMOTE"]
    results = lan.connect(LB1, 80, 3)
    assert dp.host_stats()["NS_NEW_REMOTE"] - before == 3
    assert results == [{"reply": f"webpod2 {NODES['k8s-w1'][0]}", "peer": f"{LB1}:80"}] * 3
    rev = [k for k in dp.ns_connections() if k.dir == NatDir.REV_INGRESS]
    assert len(rev) == 3 and all(NAT_PORT_MIN <= k.dport <= NAT_PORT_MAX for k in rev)
    assert {str(k.daddr) for k in rev} == {NODES["k8s-w1"][0]}


def test_connections_spread_over_local_and_remote_backends(lan, w1_answers_lb1):
    from twin.semantics.lb import lb_table

    c = seed()
    w1_answers_lb1.set_north_south(lb_table(c), c, "k8s-w1")  # svc1..3, ClusterIP ones left out
    results = lan.connect(LB1, 80, 20)
    replies = {r.get("reply") for r in results}
    assert all(r.get("peer") == f"{LB1}:80" for r in results), results
    assert replies == {f"webpod1 {EXT_IP}", f"webpod2 {NODES['k8s-w1'][0]}"}


def test_udp_to_the_lb_ip_reaches_local_and_remote_backends(lan, w1_answers_lb1):
    dp = w1_answers_lb1
    dp.set_north_south([frontend("webpod1", port=53, proto="UDP")], seed(), "k8s-w1")
    assert lan.connect(LB1, 53, 2, "udp") == [{"reply": f"webpod1 {EXT_IP}", "peer": f"{LB1}:53"}] * 2
    dp.set_north_south([frontend("webpod2", port=53, proto="UDP")], seed(), "k8s-w1")
    assert lan.connect(LB1, 53, 2, "udp") == [{"reply": f"webpod2 {NODES['k8s-w1'][0]}", "peer": f"{LB1}:53"}] * 2


def test_frontend_without_active_backend_drops_and_the_client_times_out(lan, w1_answers_lb1):
    dp = w1_answers_lb1
    dp.set_north_south([frontend()], seed(), "k8s-w1")
    before = dp.host_stats()["NS_DROP_NO_BACKEND"]
    assert lan.connect(LB1, 80, 1) == [{"error": "TimeoutError"}]
    assert dp.host_stats()["NS_DROP_NO_BACKEND"] > before  # the SYN and its retransmissions


def test_other_ports_of_the_lb_ip_and_unrelated_traffic_pass_untouched(lan, w1_answers_lb1):
    dp = w1_answers_lb1
    dp.set_north_south([frontend("webpod1", "webpod2")], seed(), "k8s-w1")
    w1 = lan.nodes["k8s-w1"]
    before = dp.ns_connections()
    srv = subprocess.Popen(["ip", "netns", "exec", w1, PYTHON, "-c", SERVER, "node-w1", "6443"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        # the node's own TCP service (the API-server port), ICMP to the node
        assert lan.connect(NODES["k8s-w1"][0], 6443, 1) == [{"reply": f"node-w1 {EXT_IP}",
                                                             "peer": f"{NODES['k8s-w1'][0]}:6443"}]
        assert lan.ns(lan.ext, "ping", "-c1", "-W2", NODES["k8s-w1"][0], check=False).returncode == 0
        # pod to pod across nodes over the LAN
        out = lan.pods["k8s-w1"].exec(PYTHON, "-c", CLIENT, PODS["k8s-w2"][1], "80", "1", timeout=15).stdout
        assert json.loads(out) == {"reply": f"webpod2 {PODS['k8s-w1'][1]}", "peer": f"{PODS['k8s-w2'][1]}:80"}
        # a port of the LB IP that is no frontend is not translated (nothing listens: refused or dropped)
        assert "reply" not in lan.connect(LB1, 81, 1)[0]
    finally:
        srv.kill()
        srv.wait()
    # none of that created a north-south connection
    assert set(dp.ns_connections()) == set(before)


# -- policy at the backend: world for a local backend, remote-node for a remote one ---------------

@pytest.fixture
def webpods_admit(lan, w1_answers_lb1, dps):
    """A function that makes each webpod's lxc program admit only ``peer`` on TCP 80."""
    from builders import allow, enforced, table, unenforced
    from datapath.node import EndpointSpec
    from twin.model.enums import Direction, Protocol
    from twin.semantics.view import ClusterView

    view = ClusterView(seed())
    ids = {name: view.ids.pod_identity(view.cluster.pod(f"default/{PODS[name][0]}")) for name in NODES}

    def admit(peer: int) -> None:
        for name, dp in dps.items():
            pod, ident = lan.pods[name], ids[name]
            dp.attach([pod.lxc])
            dp.set_endpoints([EndpointSpec(pod.lxc, ident, pod.ip)])
            dp.set_ipcache(view.ids.ipcache(name))
            dp.set_policy(table(enforced(ident, Direction.INGRESS, {peer: (allow(Protocol.TCP, 80),)}),
                                unenforced(ident, Direction.EGRESS)))
            dp.read_events()
    yield admit
    for name, dp in dps.items():
        dp.set_endpoints([])
        dp.detach(lan.pods[name].lxc)
        dp.flush_conntrack()
        dp.read_events()


def test_a_local_backend_sees_the_external_client_as_world(lan, w1_answers_lb1, webpods_admit):
    from twin.model.enums import ReservedIdentity as R

    dp = w1_answers_lb1
    dp.set_north_south([frontend("webpod1")], seed(), "k8s-w1")
    webpods_admit(R.WORLD)
    assert lan.connect(LB1, 80, 1) == [{"reply": f"webpod1 {EXT_IP}", "peer": f"{LB1}:80"}]
    webpods_admit(R.REMOTE_NODE)
    assert lan.connect(LB1, 80, 1) == [{"error": "TimeoutError"}]
    drops = [e for e in dp.read_events(timeout_ms=200) if e.verdict.name == "DROPPED"]
    assert drops and {e.peer_identity for e in drops} == {R.WORLD}


def test_a_remote_backend_sees_the_receiving_node_as_remote_node(lan, w1_answers_lb1, dps, webpods_admit):
    from twin.model.enums import ReservedIdentity as R

    w1_answers_lb1.set_north_south([frontend("webpod2")], seed(), "k8s-w1")
    webpods_admit(R.REMOTE_NODE)
    assert lan.connect(LB1, 80, 1) == [{"reply": f"webpod2 {NODES['k8s-w1'][0]}", "peer": f"{LB1}:80"}]
    webpods_admit(R.WORLD)
    assert lan.connect(LB1, 80, 1) == [{"error": "TimeoutError"}]
    drops = [e for e in dps["k8s-w2"].read_events(timeout_ms=200) if e.verdict.name == "DROPPED"]
    assert drops and {e.peer_identity for e in drops} == {R.REMOTE_NODE}


# -- the agent's reconcile: lease holder programs the responder, failover moves ARP and traffic ----

def test_reconcile_host_answers_for_held_leases_and_failover_moves_arp_and_traffic(lan, clean):
    from datapath.agent.reconcilers import reconcile_host
    from datapath.garp import send_garp

    blue = seed().with_labels("Service", "default/svc1", {"color": "blue"})
    lease = "cilium-l2announce-default-svc1"
    w1, w2 = clean["k8s-w1"], clean["k8s-w2"]
    lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")
    lan.ns(lan.ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
    try:
        r1 = reconcile_host(w1, blue, "k8s-w1", {lease})
        reconcile_host(w2, blue, "k8s-w2", set())
        assert r1.responders_added == ((LB1, "ens5"),) and r1.interfaces == {"ens5": w1.host_attached["ens5"]}
        assert w1.l2_responders() == {(LB1, "ens5")} and w2.l2_responders() == set()
        assert lan.arping(LB1, count=2)[2] == {lan.mac(lan.nodes["k8s-w1"], "ens5")}
        assert all("reply" in r for r in lan.connect(LB1, 80, 4))
        # again: nothing changes
        again = reconcile_host(w1, blue, "k8s-w1", {lease})
        assert not again.total.changed and again.responders_added == ()
        # the lease moves to k8s-w2, which announces itself with gratuitous ARP
        lost = reconcile_host(w1, blue, "k8s-w1", set())
        assert lost.responders_removed == ((LB1, "ens5"),)
        took = reconcile_host(w2, blue, "k8s-w2", {lease})
        for ip, ifname in took.responders_added:
            send_garp(f"/run/netns/{lan.nodes['k8s-w2']}", ifname, ip)
        mac2 = lan.mac(lan.nodes["k8s-w2"], "ens5")
        assert f"lladdr {mac2}" in lan.ns(lan.ext, "ip", "neigh", "show", str(LB1)).stdout
        assert lan.arping(LB1, count=2)[2] == {mac2}
        results = lan.connect(LB1, 80, 6)
        assert all(r.get("peer") == f"{LB1}:80" for r in results), results
        assert {r["reply"] for r in results} <= {f"webpod2 {EXT_IP}", f"webpod1 {NODES['k8s-w2'][0]}"}
        # cilium#48626 injected: the lease is held but the responder is not programmed
        fault = reconcile_host(w2, blue, "k8s-w2", {lease}, responder_fault=True)
        assert fault.responders_removed == ((LB1, "ens5"),) and w2.l2_responders() == set()
        assert lan.arping(LB1, count=2, deadline=3)[1] == 0
    finally:
        lan.ns(lan.ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=0")
        lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")


def test_host_reconciler_applies_the_electors_leases_and_sends_garp_for_new_entries(lan, clean):
    from datapath.agent.reconcilers import HostReconciler, NodeHost
    from datapath.agent.store import DesiredState

    blue = seed().with_labels("Service", "default/svc1", {"color": "blue"})
    netns = lan.nodes["k8s-w2"]
    rec = HostReconciler(NodeHost("k8s-w2", netns, lambda key: ""), clean["k8s-w2"])
    assert rec.set_leases({"cilium-l2announce-default-svc1"}) is None  # no desired state yet
    lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")
    lan.ns(lan.ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
    try:
        from datapath.agent.tables import ClusterTables
        rec.reconcile(DesiredState(1, blue), ClusterTables(blue))
        assert rec.garps_sent == [(LB1, "ens5")]
        mac2 = lan.mac(netns, "ens5")
        assert f"lladdr {mac2}" in lan.ns(lan.ext, "ip", "neigh", "show", str(LB1)).stdout
        assert rec.set_leases(set()).responders_removed == ((LB1, "ens5"),)
        assert clean["k8s-w2"].l2_responders() == set()
    finally:
        lan.ns(lan.ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=0")
        lan.ns(lan.ext, "ip", "neigh", "flush", "dev", "eth0")
