"""Harness tier: the control plane (etcd + the Lease API) in the L2 topology, reached by the real
``kubernetes`` client from the nodes' namespaces, and the topology's fault and ARP operations."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]
SEED_PODS = str(ROOT / "examples/seed/pods.yaml")
SEED_L2 = str(ROOT / "examples/seed/l2.yaml")  # pool 10.10.200.0/29, svc1-3
NS = "kube-system"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, veths and mounts"
    try:
        import kubernetes  # noqa: F401
        import mininet.node  # noqa: F401
    except ImportError as exc:
        return f"needs {exc.name} (make setup)"
    for tool in ("mnexec", "ip", "nft", "arping", "/usr/bin/etcd"):
        if not (Path(tool).exists() if tool.startswith("/") else
                any(Path(d, tool).exists() for d in os.environ.get("PATH", "").split(os.pathsep))):
            return f"needs {tool}"
    return None


_reason = _unavailable()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from kubernetes import client  # noqa: E402

from harness.apiserver.control import ControlPlane  # noqa: E402
from harness.apiserver.etcd import ns_http  # noqa: E402
from harness.cleanup import RunState, cleanup_leftovers  # noqa: E402
from harness.inputs import load_cluster  # noqa: E402
from harness.netns import entered_netns  # noqa: E402
from harness.topology import RealTopology  # noqa: E402
from twin.model.scenario import ExternalHost  # noqa: E402


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][0] != "Z"


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cp")
    external = ExternalHost(arp_accept=True, garp="ignore", base_reachable_time_s=5.0)
    with RealTopology(load_cluster([SEED_PODS, SEED_L2]), l2=True, backup_path=True, external=external) as topo:
        with ControlPlane(topo, run_dir) as plane:
            yield plane


@contextmanager
def leases(cp: ControlPlane, node: str):
    """The kubernetes client's CoordinationV1Api, its connections made from ``node``'s namespace."""
    with entered_netns(cp.topo.node_netns(node)):
        api_client = client.ApiClient(client.Configuration(host=cp.url))
        try:
            yield client.CoordinationV1Api(api_client)
        finally:
            api_client.close()


def lease(name: str, holder: str, transitions: int = 0) -> client.V1Lease:
    now = dt.datetime.now(dt.timezone.utc)
    return client.V1Lease(metadata=client.V1ObjectMeta(name=name, namespace=NS), spec=client.V1LeaseSpec(
        holder_identity=holder, lease_duration_seconds=3, acquire_time=now, renew_time=now,
        lease_transitions=transitions))


def status_of(exc: client.ApiException) -> dict:
    return json.loads(exc.body)


# ------------------------------------------------------------------ the API


def test_client_creates_reads_and_updates_a_lease_and_the_audit_log_records_it(cp):
    with leases(cp, "k8s-w1") as api:
        made = api.create_namespaced_lease(NS, lease("cilium-l2announce-default-svc1", "k8s-w1"))
        assert made.metadata.uid and made.metadata.resource_version.isdigit()
        assert made.metadata.creation_timestamp is not None
        got = api.read_namespaced_lease("cilium-l2announce-default-svc1", NS)
        assert got.spec.holder_identity == "k8s-w1" and got.spec.lease_duration_seconds == 3
        assert got.metadata.resource_version == made.metadata.resource_version
        got.spec.holder_identity = "k8s-w2"
        got.spec.lease_transitions = 1
        got.spec.renew_time = dt.datetime.now(dt.timezone.utc)
        upd = api.replace_namespaced_lease(got.metadata.name, NS, got)
        assert int(upd.metadata.resource_version) > int(made.metadata.resource_version)
        assert upd.metadata.uid == made.metadata.uid
        assert api.read_namespaced_lease(got.metadata.name, NS).spec.holder_identity == "k8s-w2"
    log = [e for e in cp.lease_log() if e["lease"] == "cilium-l2announce-default-svc1"]
    assert [(e["verb"], e["holder"], e["previous_holder"], e["transitions"]) for e in log] == [
        ("create", "k8s-w1", None, 0), ("update", "k8s-w2", "k8s-w1", 1)]
    assert log[1]["resourceVersion"] == upd.metadata.resource_version
    assert log[0]["t"] <= log[1]["t"] <= time.monotonic()
    # MicroTime on the wire: UTC with six fractional digits
    assert log[1]["renewTime"].endswith("Z") and len(log[1]["renewTime"].split(".")[1]) == 7


def test_update_with_a_stale_resource_version_is_a_409_conflict(cp):
    with leases(cp, "k8s-w1") as api:
        first = api.create_namespaced_lease(NS, lease("stale", "k8s-w1"))
        first.spec.renew_time = dt.datetime.now(dt.timezone.utc)
        api.replace_namespaced_lease("stale", NS, first)  # moves the resourceVersion on
        first.spec.holder_identity = "k8s-w2"
        with pytest.raises(client.ApiException) as exc:
            api.replace_namespaced_lease("stale", NS, first)  # still carries the old one
        assert exc.value.status == 409
        st = status_of(exc.value)
        assert (st["kind"], st["status"], st["reason"], st["code"]) == ("Status", "Failure", "Conflict", 409)
        assert st["message"] == ('Operation cannot be fulfilled on leases.coordination.k8s.io "stale": the object '
                                 "has been modified; please apply your changes to the latest version and try again")
        assert api.read_namespaced_lease("stale", NS).spec.holder_identity == "k8s-w1"


def test_of_concurrent_updates_from_one_resource_version_exactly_one_wins(cp):
    import threading

    with leases(cp, "k8s-w1") as api:
        base = api.create_namespaced_lease(NS, lease("race", "nobody"))
    netns = cp.topo.node_netns("k8s-w1")
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/race"
    codes: dict[str, int] = {}

    def put(holder: str) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "race", "namespace": NS, "resourceVersion": base.metadata.resource_version},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3}}
        codes[holder] = ns_http(netns, "PUT", cp.ip, cp.port, path, json.dumps(body).encode(), timeout_s=10)[0]

    threads = [threading.Thread(target=put, args=(f"k8s-w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes.values()) == [200] + [409] * 5, codes
    [winner] = [h for h, c in codes.items() if c == 200]
    with leases(cp, "k8s-w2") as api:
        assert api.read_namespaced_lease("race", NS).spec.holder_identity == winner
    assert [e["holder"] for e in cp.lease_log() if e["lease"] == "race" and e["verb"] == "update"] == [winner]


def test_missing_lease_is_404_and_creating_an_existing_one_is_409_already_exists(cp):
    with leases(cp, "k8s-w1") as api:
        with pytest.raises(client.ApiException) as exc:
            api.read_namespaced_lease("no-such-lease", NS)
        assert exc.value.status == 404 and status_of(exc.value)["reason"] == "NotFound"
        assert status_of(exc.value)["message"] == 'leases.coordination.k8s.io "no-such-lease" not found'
        api.create_namespaced_lease(NS, lease("twice", "k8s-w1"))
        with pytest.raises(client.ApiException) as exc:
            api.create_namespaced_lease(NS, lease("twice", "k8s-w2"))
        assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"
        api.delete_namespaced_lease("twice", NS)
        with pytest.raises(client.ApiException) as exc:
            api.delete_namespaced_lease("twice", NS)
        assert exc.value.status == 404
    assert [e["verb"] for e in cp.lease_log() if e["lease"] == "twice"] == ["create", "delete"]


def test_malformed_json_and_a_time_without_zone_are_400_bad_request(cp):
    netns = cp.topo.node_netns("k8s-w1")
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    code, body = ns_http(netns, "POST", cp.ip, cp.port, path, b"{not json")
    assert code == 400 and json.loads(body)["reason"] == "BadRequest"
    naive = json.dumps({"metadata": {"name": "naive"}, "spec": {"renewTime": "2026-11-27T23:59:01.123456"}})
    code, body = ns_http(netns, "POST", cp.ip, cp.port, path, naive.encode())
    assert code == 400 and "renewTime" in json.loads(body)["message"]
    code, body = ns_http(netns, "GET", cp.ip, cp.port, "/apis/coordination.k8s.io/v1")
    assert code == 200 and json.loads(body)["resources"][0]["name"] == "leases"


def test_leases_survive_a_restart_of_the_api_server_with_the_same_resource_version(cp):
    with leases(cp, "k8s-w1") as api:
        before = api.create_namespaced_lease(NS, lease("durable", "k8s-w1"))
    old_pid = cp.api_pid
    cp.restart_api()
    assert cp.api_pid != old_pid and not alive(old_pid)
    with leases(cp, "k8s-w2") as api:
        after = api.read_namespaced_lease("durable", NS)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.metadata.uid == before.metadata.uid and after.spec.holder_identity == "k8s-w1"


# ------------------------------------------------------------ reachability

_PROBE = """
import sys
from kubernetes import client
api = client.CoordinationV1Api(client.ApiClient(client.Configuration(host=sys.argv[1])))
try:
    api.read_namespaced_lease("durable", "kube-system", _request_timeout=1.5)
    print("reached")
except client.ApiException as exc:
    print("api-error", exc.status)
except Exception as exc:
    print("unreachable", type(exc).__name__)
"""


def reach(cp: ControlPlane, node: str) -> str:
    res = cp.topo.exec(node, [sys.executable, "-c", _PROBE, cp.url], timeout=20)
    return res.stdout.strip() or res.stderr.strip()[-300:]


def test_a_partitioned_node_loses_the_api_on_every_path_and_regains_it_when_healed(cp):
    assert reach(cp, "k8s-w1") == "reached"
    t0 = time.monotonic()
    t = cp.topo.partition("k8s-w1")
    assert t0 <= t <= time.monotonic()
    assert reach(cp, "k8s-w1").startswith("unreachable")
    # the LAN still works for everyone else
    assert cp.topo.exec("k8s-w1", ["ping", "-c1", "-W1", "192.168.10.102"]).ok
    assert reach(cp, "k8s-w2") == "reached"
    cp.topo.heal("k8s-w1")
    assert reach(cp, "k8s-w1") == "reached"


def test_with_the_backup_path_a_node_whose_lan_interface_is_down_still_reaches_the_api(cp):
    cp.topo.nic_down("k8s-w2")
    route = cp.topo.exec("k8s-w2", ["ip", "route", "get", "192.168.10.250"]).stdout
    assert "dev mgmt0" in route, route
    assert not cp.topo.exec("k8s-w2", ["ping", "-c1", "-W1", "192.168.10.101"]).ok  # the LAN is gone
    assert reach(cp, "k8s-w2") == "reached"
    cp.topo.nic_up("k8s-w2")
    assert "dev ens5" in cp.topo.exec("k8s-w2", ["ip", "route", "get", "192.168.10.250"]).stdout
    assert cp.topo.exec("k8s-w2", ["ping", "-c1", "-W1", "172.16.1.10"]).ok  # pod CIDR routes are back


# ------------------------------------------------------------------ ARP


def test_external_arping_gets_the_owners_mac_and_nothing_for_unowned_addresses(cp):
    topo = cp.topo
    topo.start_arp_watch()
    replies = topo.external_arping("192.168.10.101", count=1, timeout=2)
    assert [mac for _t, mac in replies] == [topo.node_mac("k8s-w1")]
    assert topo.mac_to_node()[replies[0][1]] == "k8s-w1"
    assert topo.external_neigh("192.168.10.101")["lladdr"] == topo.node_mac("k8s-w1")
    # an LB IP nobody announces, and a node's router IP (not on its LAN interface: arp_ignore=1)
    assert topo.external_arping("10.10.200.5", count=1, timeout=1) == []
    assert topo.external_arping("172.16.1.1", count=1, timeout=1) == []
    seen = [e for e in topo.arp_events() if e["op"] == "reply" and e["sip"] == "192.168.10.101"]
    assert seen and seen[0]["sha"] == topo.node_mac("k8s-w1") and seen[0]["tip"] == "192.168.10.200"
    assert abs(seen[0]["t"] - replies[0][0]) < 1.0


def send_garp(netns: str, ifname: str, mac: str, ip: str) -> None:
    """A gratuitous ARP request (sender IP = target IP) from ``ifname`` in ``netns``."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    frame = b"\xff" * 6 + hw + b"\x08\x06" + bytes.fromhex("0001080006040001") + hw + addr + b"\x00" * 6 + addr
    with entered_netns(netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        s.send(frame)
    finally:
        s.close()


def wait_for(cond, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_garp_ignore_drops_gratuitous_arp_on_the_external_host_and_honour_would_take_it(cp):
    topo = cp.topo
    topo.start_arp_watch()
    mac = topo.node_mac("k8s-w1")
    send_garp(topo.node_netns("k8s-w1"), "ens5", mac, "10.10.200.6")
    assert wait_for(lambda: any(e["sip"] == e["tip"] == "10.10.200.6" and e["sha"] == mac
                                for e in topo.arp_events()))  # it arrived on the wire ...
    time.sleep(0.2)
    assert topo.external_neigh("10.10.200.6") is None  # ... and was ignored despite arp_accept=1
    # a pool that appears later is covered too
    topo.external_add_pool("10.10.201.0/30")
    send_garp(topo.node_netns("k8s-w1"), "ens5", mac, "10.10.201.1")
    assert wait_for(lambda: any(e["sip"] == "10.10.201.1" for e in topo.arp_events()))
    time.sleep(0.2)
    assert topo.external_neigh("10.10.201.1") is None
    assert topo.exec("external", ["nft", "delete", "table", "arp", "twin_garp"]).ok  # now: honour
    send_garp(topo.node_netns("k8s-w1"), "ens5", mac, "10.10.200.6")
    assert wait_for(lambda: (topo.external_neigh("10.10.200.6") or {}).get("lladdr") == mac)


def test_a_crashed_node_answers_nothing_on_any_interface(cp):
    topo = cp.topo
    topo.node_crash("k8s-s")
    assert reach(cp, "k8s-s").startswith("unreachable")
    assert topo.external_arping("192.168.10.10", count=1, timeout=1) == []


# ------------------------------------------------------------------ teardown


@pytest.mark.parametrize("closer", ["controlplane", "topology only"])
def test_close_removes_etcd_the_api_server_the_namespaces_and_the_data(tmp_path, closer):
    with RealTopology(load_cluster([SEED_PODS]), l2=True) as topo:
        plane = ControlPlane(topo, tmp_path).start()
        pids = [plane.api_pid, plane.etcd_pid]
        data = plane.data_dir
        assert all(alive(p) for p in pids) and data.is_dir()
        state = json.loads(Path(topo.state_dir, f"{topo.run_id}.json").read_text())
        assert str(data) in state["dirs"] and set(pids) <= {e["pid"] for e in state["pids"]}
        if closer == "controlplane":
            plane.close()
            assert not any(alive(p) for p in pids) and not data.exists()
            assert json.loads(Path(topo.state_dir, f"{topo.run_id}.json").read_text())["dirs"] == []
        run_id = topo.run_id
    assert not any(alive(p) for p in pids) and not data.exists()
    assert list(Path("/run/netns").glob(f"twn-{run_id}-*")) == []
    assert not Path(f"/run/twin/{run_id}.json").exists()


_CRASHER = """
import sys, time
from harness.inputs import load_cluster
from harness.topology import RealTopology
from harness.apiserver.control import ControlPlane
topo = RealTopology(load_cluster([sys.argv[1]]), run_id=sys.argv[2], l2=True).start()
cp = ControlPlane(topo, sys.argv[3]).start()
print(cp.api_pid, cp.etcd_pid, cp.data_dir, flush=True)
time.sleep(60)
"""


def test_cleanup_after_a_crashed_run_kills_etcd_and_the_api_server_and_removes_the_data(tmp_path):
    run_id = "cpx" + os.urandom(2).hex()[:3]
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, SEED_PODS, run_id, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 3, "the crashing run did not start its control plane"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    api_pid, etcd_pid, data = int(line[0]), int(line[1]), Path(line[2])
    assert alive(api_pid) and alive(etcd_pid) and data.is_dir()  # orphaned by the crash
    assert RunState.load(Path(f"/run/twin/{run_id}.json")).dirs == [str(data)]
    lines = cleanup_leftovers()
    assert any(f"run {run_id}: removed temporary directory {data}" in ln for ln in lines), lines
    assert wait_for(lambda: not alive(api_pid) and not alive(etcd_pid), 5)
    assert not data.exists()
    assert list(Path("/run/netns").glob(f"twn-{run_id}-*")) == []
