"""Per-pod egress limits on the real datapath (datapath/bandwidth.py): HTB
classes on the node's LAN interface chosen by bpf_host's egress, reconciled in
place, measured with iperf3 between pods of two nodes."""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time

import pytest

from conftest import require_kernel
from datapath.bandwidth import HTB, BandwidthError, classid, probe_mechanism
from datapath.node import NodeDatapath
from topology import Topology, sh
from twin.semantics.bandwidth import tcp_payload_fraction

pytestmark = pytest.mark.datapath

N1_IP, N2_IP = "192.168.77.1", "192.168.77.2"
#: bytes/s of 10M and 5M (Cilium: uint64(bits / 8))
TEN_M, FIVE_M = 10_000_000 // 8, 5_000_000 // 8
#: a bulk TCP flow's best goodput at a limit R bit/s is R * 1448/1514 (MTU 1500)
FRACTION = tcp_payload_fraction()
TOLERANCE = 0.10


@pytest.fixture
def nodes():
    """n1: pods a (limited in the tests) and a2; n2: pod b.  The host program on n1's ens5."""
    require_kernel()
    t = Topology()
    try:
        n1, n2 = t.add_node("n1"), t.add_node("n2")
        t.link_nodes(n1, N1_IP, n2, N2_IP)
        a = t.add_pod("a", "10.200.0.1", node=n1)
        a2 = t.add_pod("a2", "10.200.0.3", node=n1)
        b = t.add_pod("b", "10.201.0.2", node=n2)
        t.route(n1, "10.201.0.0/24", N2_IP)
        t.route(n2, "10.200.0.0/24", N1_IP)
        yield t, n1, a, a2, b
    finally:
        t.destroy()


def root_qdisc(netns: str, dev: str = "ens5") -> tuple[str, str]:
    """(kind, handle) of the device's root qdisc."""
    out = json.loads(sh("ip", "netns", "exec", netns, "tc", "-j", "qdisc", "show", "dev", dev).stdout)
    root = next(q for q in out if q.get("root"))
    return root["kind"], root["handle"]


def host_prog_id(netns: str) -> int:
    out = sh("ip", "netns", "exec", netns, "tc", "filter", "show", "dev", "ens5", "egress").stdout
    m = re.search(r"to_netdev.*? id (\d+)", out)
    assert m, out
    return int(m.group(1))


class Iperf:
    """iperf3 server in one pod, client in another; ended by pid."""

    def __init__(self, server_pod, client_pod) -> None:
        self.server_pod, self.client_pod = server_pod, client_pod
        self.server = server_pod.popen("iperf3", "-s", "-1", "-B", str(server_pod.ip))
        self.client: subprocess.Popen[str] | None = None

    def start(self, seconds: float, *, interval: float = 0.5) -> None:
        for _ in range(50):  # the server binds within a moment
            if self.server_pod.exec("ss", "-ltn", "sport = :5201").stdout.count("LISTEN"):
                break
            time.sleep(0.05)
        self.client = self.client_pod.popen("iperf3", "-c", str(self.server_pod.ip), "-R", "-J",
                                            "-t", str(seconds), "-i", str(interval))

    def result(self, timeout: float = 30) -> tuple[int, dict]:
        assert self.client is not None
        out, err = self.client.communicate(timeout=timeout)
        return self.client.returncode, (json.loads(out) if out.strip() else {"error": err})

    def close(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def run_iperf(server_pod, client_pod, seconds: float = 2) -> float:
    """Goodput in bit/s of ``server_pod`` sending to ``client_pod`` (iperf3 -R)."""
    ip = Iperf(server_pod, client_pod)
    try:
        ip.start(seconds)
        rc, res = ip.result()
        assert rc == 0, res
        return float(res["end"]["sum_received"]["bits_per_second"])
    finally:
        ip.close()


@pytest.fixture
def dp(nodes):
    t, n1, a, a2, b = nodes
    with NodeDatapath(n1) as dp:
        dp.attach_host(["ens5"], N1_IP)
        yield dp


def test_probe_names_htb_when_the_kernel_lacks_sch_fq_and_says_why():
    require_kernel()
    m = probe_mechanism()
    assert m.fq_available == (m.name != HTB)
    if not m.fq_available:
        assert m.name == "htb" and "sch_fq is not in this kernel" in m.reason and "tc qdisc add fq" in m.reason


def test_limited_pod_is_shaped_across_nodes_but_not_to_a_pod_of_its_own_node(nodes, dp):
    t, n1, a, a2, b = nodes
    dp.set_bandwidth({a.ip: TEN_M})
    across = run_iperf(a, b)
    best = TEN_M * 8 * FRACTION
    assert abs(across - best) <= TOLERANCE * best, f"across nodes {across / 1e6:.2f} Mbit/s, best {best / 1e6:.2f}"
    local = run_iperf(a, a2)
    assert local > 10 * across, f"same node {local / 1e6:.1f} Mbit/s vs across {across / 1e6:.2f}"
    # a pod without a limit crosses the same device unshaped (HTB's direct queue)
    unlimited = run_iperf(a2, b)
    assert unlimited > 10 * across, f"unlimited pod {unlimited / 1e6:.1f} Mbit/s vs limited {across / 1e6:.2f}"


def test_limit_changes_in_place_during_a_running_transfer(nodes, dp):
    t, n1, a, a2, b = nodes
    dp.set_bandwidth({a.ip: TEN_M})
    prog = host_prog_id(n1)
    root = root_qdisc(n1)
    ip = Iperf(a, b)
    try:
        ip.start(3, interval=0.5)
        time.sleep(1.2)
        result = dp.set_bandwidth({a.ip: FIVE_M})
        assert (result.updated, result.added, result.deleted) == (2, 0, 0), result  # class + map entry
        rc, res = ip.result()
    finally:
        ip.close()
    assert rc == 0, f"the running connection did not survive the change: {res}"
    assert host_prog_id(n1) == prog and root_qdisc(n1) == root
    (limit,) = dp.bandwidth_limits().values()
    assert limit.bytes_per_s == FIVE_M and limit.class_rate == {"ens5": FIVE_M}
    # intervals that started 0.5 s after the change (iperf3's clock started ~1.2 s before it)
    late = [iv["sum"]["bits_per_second"] for iv in res["intervals"] if iv["sum"]["start"] >= 1.2 + 0.5 + 0.2]
    assert late, res["intervals"]
    rate = sum(late) / len(late)
    best = FIVE_M * 8 * FRACTION
    assert abs(rate - best) <= TOLERANCE * best, f"after the change {rate / 1e6:.2f} Mbit/s, best {best / 1e6:.2f}"


def test_a_removed_pod_loses_its_class_and_map_entry_and_others_keep_theirs(nodes, dp):
    t, n1, a, a2, b = nodes
    dp.set_bandwidth({a.ip: TEN_M, a2.ip: FIVE_M})
    before = dp.bandwidth_limits()
    assert set(before) == {a.ip, a2.ip}
    cls_a, cls_a2 = before[a.ip].classid, before[a2.ip].classid
    assert cls_a != cls_a2 and dp.bandwidth_classes() == {"ens5": {cls_a, cls_a2}}
    dp.set_bandwidth({a.ip: TEN_M})
    after = dp.bandwidth_limits()
    assert set(after) == {a.ip} and after[a.ip].classid == cls_a
    assert dp.bandwidth_classes() == {"ens5": {cls_a}}
    # its minor is free again: the next pod gets it
    dp.set_bandwidth({a.ip: TEN_M, ipaddress.IPv4Address("10.200.0.9"): FIVE_M})
    assert dp.bandwidth_limits()[ipaddress.IPv4Address("10.200.0.9")].classid == cls_a2


def test_close_leaves_the_device_with_its_default_root_qdisc(nodes):
    t, n1, a, a2, b = nodes
    assert root_qdisc(n1)[0] == "noqueue"
    with NodeDatapath(n1) as dp:
        dp.attach_host(["ens5"], N1_IP)
        dp.set_bandwidth({a.ip: TEN_M})
        assert root_qdisc(n1) == ("htb", "cb:")
        assert dp.bandwidth_classes() == {"ens5": {classid(1)}}
    assert root_qdisc(n1)[0] == "noqueue"
    assert "class" not in sh("ip", "netns", "exec", n1, "tc", "class", "show", "dev", "ens5").stdout


def test_a_foreign_root_qdisc_fails_the_reconcile_clearly_and_stays(nodes):
    t, n1, a, a2, b = nodes
    sh("ip", "netns", "exec", n1, "tc", "qdisc", "add", "dev", "ens5", "root", "handle", "7:", "tbf",
       "rate", "1gbit", "burst", "100k", "latency", "50ms")
    with NodeDatapath(n1) as dp:
        dp.attach_host(["ens5"], N1_IP)
        with pytest.raises(BandwidthError, match=r"'ens5'.*root qdisc tbf 7:0"):
            dp.set_bandwidth({a.ip: TEN_M})
        assert dp.bandwidth_limits() == {}
    assert root_qdisc(n1) == ("tbf", "7:")
