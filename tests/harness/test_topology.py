"""Harness tier: the real topology built from the model (root + Mininet, no BPF).

The seed's section-1 cluster: netpod on k8s-s, webpod1 on k8s-w1, webpod2 on k8s-w2.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]
SEED_PODS = str(ROOT / "examples/seed/pods.yaml")
STARWARS = str(ROOT / "examples/seed/http-sw-app.yaml")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, veths and mounts"
    try:
        import mininet.node  # noqa: F401
    except ImportError:
        return "needs Mininet (Debian package 'mininet'; use a --system-site-packages venv)"
    for tool in ("mnexec", "ip", "curl", "ping"):
        if not any(Path(d, tool).exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
            return f"needs {tool} on PATH"
    return None


_reason = _unavailable()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from harness import tools  # noqa: E402
from harness.cleanup import RunState, cleanup_leftovers, proc_cmdline  # noqa: E402
from harness.inputs import load_cluster  # noqa: E402
from harness.topology import RealTopology, TopologyError, lxc_name  # noqa: E402

NETPOD, WEBPOD1, WEBPOD2 = "default/netpod", "default/webpod1", "default/webpod2"


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def netns_entries(run_id: str) -> list[str]:
    return sorted(p.name for p in Path("/run/netns").glob(f"twn-{run_id}-*"))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][0] != "Z"


@pytest.fixture(scope="module")
def seed():
    cluster = load_cluster([SEED_PODS])
    with RealTopology(cluster) as topo:
        yield topo


@pytest.fixture(scope="module")
def ip(seed):
    return {p.key: str(p.ip) for p in seed.cluster.pods}


# ------------------------------------------------------------------ layout


def test_seed_topology_builds_quickly_and_names_namespaces_per_run(seed):
    assert seed.build_seconds is not None and seed.build_seconds < 15
    names = netns_entries(seed.run_id)
    assert names == sorted(f"twn-{seed.run_id}-{n}" for n in [
        "lan", "external", "k8s-s", "k8s-w1", "k8s-w2", "default.netpod", "default.webpod1", "default.webpod2"])
    assert seed.node_netns("k8s-w1") == f"/run/netns/twn-{seed.run_id}-k8s-w1"


def test_lxc_names_are_sha1_of_the_pod_key_and_live_in_the_node_namespace(seed):
    assert seed.lxc_of(WEBPOD1) == lxc_name(WEBPOD1)
    assert re.fullmatch(r"lxc[0-9a-f]{11}", seed.lxc_of(WEBPOD1))
    assert seed.lxc_by_node("k8s-w1") == [seed.lxc_of(WEBPOD1)]
    links = json.loads(subprocess.run(
        ["ip", "netns", "exec", f"twn-{seed.run_id}-k8s-w1", "ip", "-j", "link", "show"],
        capture_output=True, text=True, check=True).stdout)
    names = {link["ifname"] for link in links}
    assert {"ens5", "cilium_host", seed.lxc_of(WEBPOD1)} <= names


def test_node_namespace_has_forwarding_router_ip_and_routes_to_other_pod_cidrs(seed):
    res = seed.exec("k8s-s", ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; ip -j route show; "
                              "ip -j addr show dev cilium_host"])
    fwd, routes, addrs = res.stdout.splitlines()
    assert fwd == "1"
    dsts = {r["dst"]: r.get("gateway") for r in json.loads(routes)}
    assert dsts["172.16.1.0/24"] == "192.168.10.101" and dsts["172.16.2.0/24"] == "192.168.10.102"
    assert dsts["172.16.0.10"] is None  # the pod /32 on its lxc
    assert [a["local"] for a in json.loads(addrs)[0]["addr_info"]] == ["172.16.0.1"]


def test_pyroute2_and_setns_helper_reach_the_node_namespace(seed):
    from harness.netns import open_iproute, run_in_netns

    ipr = open_iproute(seed.node_netns("k8s-w2"))
    try:
        assert ipr.link_lookup(ifname=seed.lxc_of(WEBPOD2))
    finally:
        ipr.close()
    before = os.readlink("/proc/thread-self/ns/net")
    inside = run_in_netns(seed.node_netns("k8s-w2"), os.readlink, "/proc/thread-self/ns/net")
    assert inside != before and os.readlink("/proc/thread-self/ns/net") == before


def test_every_namespace_has_exactly_the_planned_interfaces_and_macs(seed):
    plan = seed.plan
    macs = {(v.target1, v.name1): v.mac1 for v in plan.veths} | {(v.target2, v.name2): v.mac2 for v in plan.veths}
    for ns in plan.namespaces:
        links = json.loads(seed.exec(ns.target, ["ip", "-j", "link", "show"]).stdout)
        assert {link["ifname"] for link in links} - {"lo"} == set(plan.interfaces(ns.target)), ns.target
        for link in links:
            if (ns.target, link["ifname"]) in macs:
                assert link["address"] == macs[(ns.target, link["ifname"])], (ns.target, link["ifname"])


def test_root_namespace_holds_no_link_of_the_run(seed):
    assert not [n for n in root_links() if n.startswith(seed.link_prefix) or n.startswith("lxc")
                or n in ("br0", "ens5", "cilium_host")]


# ------------------------------------------------------------------ traffic


def test_netpod_pings_webpods_across_nodes(seed, ip):
    for pod in (WEBPOD1, WEBPOD2):
        r = tools.ping(seed, NETPOD, ip[pod], timeout_s=1)
        assert r["outcome"] == "answered", r


def test_curl_to_webpod1_answers_like_whoami(seed, ip):
    r = tools.http(seed, NETPOD, ip[WEBPOD1], 80)
    assert r["outcome"] == "answered" and r["status"] == 200, r
    lines = r["body"].splitlines()
    assert lines[0] == "Hostname: webpod1"
    assert f"IP: {ip[WEBPOD1]}" in lines
    assert f"RemoteAddr: {ip[NETPOD]}:" in r["body"]
    assert r["tool"].startswith("curl -s")


def test_curl_to_a_port_nothing_listens_on_is_refused(seed, ip):
    r = tools.http(seed, NETPOD, ip[WEBPOD1], 8080, timeout_s=2)
    assert r["outcome"] == "refused" and not r["ok"] and r["status"] is None, r
    assert r["detail"] == "curl exit 7: Connection refused"


def test_netpod_reaches_the_external_hosts_http_server(seed):
    r = tools.http(seed, NETPOD, str(seed.external_ip), 80)
    assert r["outcome"] == "answered" and r["status"] == 200, r
    assert tools.ping(seed, NETPOD, str(seed.external_ip))["ok"]


def test_external_host_reaches_pods_by_native_routing(seed, ip):
    r = seed.exec("external", ["curl", "-s", "--max-time", "2", f"http://{ip[WEBPOD2]}/"], timeout=5)
    assert r.returncode == 0 and "Hostname: webpod2" in r.stdout


def test_probe_many_classifies_every_target_in_one_shot(seed, ip):
    targets = [
        ("tcp", ip[WEBPOD1], 80),
        ("tcp", ip[WEBPOD2], 8080),
        ("udp", ip[WEBPOD1], 53),
        {"proto": "http", "ip": ip[WEBPOD2], "port": 80, "path": "/x"},
        ("tcp", "192.168.10.250", 80),  # on the LAN, nobody answers ARP: nothing comes back
    ]
    t0 = time.monotonic()
    res = tools.probe_many(seed, NETPOD, targets, timeout_s=1.0)
    took = time.monotonic() - t0
    assert [r["outcome"] for r in res] == ["answered", "refused", "refused", "answered", "timeout"], res
    assert res[3]["status"] == 200 and res[3]["body"].startswith("Hostname: webpod2")
    assert took < 3.0


def test_tcp_connect_and_udp_echo_report_refusal(seed, ip):
    assert tools.tcp_connect(seed, NETPOD, ip[WEBPOD1], 80)["outcome"] == "answered"
    assert tools.udp_echo(seed, NETPOD, ip[WEBPOD1], 53, timeout_s=1)["outcome"] == "refused"


def test_unroutable_destination_is_an_error_not_a_refusal(seed):
    r = tools.http(seed, NETPOD, "172.16.9.10", 80, timeout_s=2)  # k8s-s has no route: ICMP unreachable
    assert r["outcome"] == "error" and r["detail"] == "curl exit 7: Network is unreachable", r


def test_http_to_a_silent_destination_times_out(seed):
    r = tools.http(seed, NETPOD, "192.168.10.250", 80, timeout_s=1)  # nobody answers ARP on the LAN
    assert r["outcome"] == "timeout" and r["detail"].startswith("curl exit 28"), r
    assert 0.9 < r["seconds"] < 3


def test_exec_times_out_and_kills_the_command(seed):
    r = seed.exec(NETPOD, ["sleep", "5"], timeout=0.3)
    assert r.timed_out and r.duration < 2


def test_unknown_target_is_named_in_the_error(seed):
    with pytest.raises(TopologyError, match="nosuchpod"):
        seed.exec("default/nosuchpod", ["true"])


# ------------------------------------------------------------ other apps


def test_deathstar_and_echo_apps_answer_in_their_pods():
    import dataclasses

    from twin.model.objects import Container

    cluster = load_cluster([STARWARS])
    # give xwing the echo image too, to cover the UDP echo server
    pods = tuple(dataclasses.replace(p, containers=(Container("echo", "twin/echo"),)) if p.name == "xwing" else p
                 for p in cluster.pods)
    cluster = dataclasses.replace(cluster, pods=pods)
    ds = [p for p in cluster.pods if p.name.startswith("deathstar")]
    xwing = cluster.pod("default/xwing")
    with RealTopology(cluster) as topo:
        r = tools.http(topo, "default/tiefighter", str(ds[0].ip), 80, "POST", "/v1/request-landing")
        assert (r["status"], r["body"]) == (200, "Ship landed\n"), r
        r = tools.http(topo, "default/tiefighter", str(ds[0].ip), 80, "PUT", "/v1/exhaust-port")
        assert r["status"] == 503 and r["body"].startswith("Panic: deathstar exploded")
        r = tools.udp_echo(topo, "default/tiefighter", str(xwing.ip), 5353, 1.0, payload="hello")
        assert (r["outcome"], r["body"]) == ("answered", "hello|xwing"), r
        r = tools.http(topo, "default/tiefighter", str(xwing.ip), 8080)
        assert r["body"] == f"echo xwing GET /\n"


# ------------------------------------------------------------------ cleanup


def test_close_after_an_exception_removes_every_namespace_process_and_link():
    links_before = root_links()
    sigterm_before = signal.getsignal(signal.SIGTERM)
    topo = RealTopology(load_cluster([SEED_PODS]), static_neighbours=False)
    with pytest.raises(RuntimeError, match="boom"):
        with topo:
            # without static neighbours, ARP to the router IP is answered by proxy ARP
            assert tools.ping(topo, NETPOD, "172.16.1.10")["ok"]
            pids = topo.pids()
            assert len(pids) >= 8 + 3  # 8 shells, 2 whoami servers, the external server
            state = Path(topo.state_dir, f"{topo.run_id}.json")
            assert state.exists()
            raise RuntimeError("boom")
    assert topo.teardown_seconds is not None
    assert netns_entries(topo.run_id) == []
    assert [p for p in pids if alive(p)] == []
    assert root_links() == links_before
    assert not state.exists()
    assert signal.getsignal(signal.SIGTERM) == sigterm_before  # the run's SIGTERM handler is gone with it
    topo.close()  # idempotent


_CRASHER = """
import sys, time
from harness.inputs import load_cluster
from harness.topology import RealTopology
topo = RealTopology(load_cluster([sys.argv[1]]), run_id=sys.argv[2]).start()
print(" ".join(str(p) for p in topo.pids()), flush=True)
time.sleep(60)
"""


def test_cleanup_leftovers_removes_a_run_whose_owner_was_killed():
    run_id = "crash" + os.urandom(1).hex()[:2]
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, SEED_PODS, run_id], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids, "the crashing run did not build"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(netns_entries(run_id)) == 8
    lines = cleanup_leftovers()
    assert any(f"run {run_id}: removed state file" in line for line in lines), lines
    assert netns_entries(run_id) == []
    deadline = time.monotonic() + 3
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if alive(p)] == []
    assert not Path(f"/run/twin/{run_id}.json").exists()


def test_cleanup_leftovers_kills_only_recorded_processes_that_still_match(tmp_path, seed):
    ours = subprocess.Popen(["sleep", "30"])
    stranger = subprocess.Popen(["sleep", "31"])
    try:
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        st = RunState("dead1", tmp_path, owner_pid=dead_owner.pid, owner_start=1)
        st.add_pid(ours.pid)
        # the stranger's entry records another command line: a reused pid must not be killed
        st.pids.append({"pid": stranger.pid, "start": None, "cmdline": "python -m harness.apps.server"})
        st.save()
        lines = cleanup_leftovers(tmp_path)
        assert not [line for line in lines if "orphan" in line], "a live run's objects were taken for orphans"
        assert ours.wait(timeout=3) is not None
        assert stranger.poll() is None and proc_cmdline(stranger.pid) == "sleep 31"
        assert any("killed pid" in line and str(ours.pid) in line for line in lines)
        assert not st.path.exists()
        assert len(netns_entries(seed.run_id)) == 8  # the live run was left alone
    finally:
        for p in (ours, stranger):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_sigterm_to_the_owner_tears_the_run_down():
    run_id = "term" + os.urandom(1).hex()[:2]
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, SEED_PODS, run_id], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and len(netns_entries(run_id)) == 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert netns_entries(run_id) == []
    assert [p for p in pids if alive(p)] == []
    assert not Path(f"/run/twin/{run_id}.json").exists()


_INTERRUPTED = """
import sys, time
from harness.cleanup import after_interrupt
from harness.inputs import load_cluster
from harness.topology import RealTopology
try:
    with RealTopology(load_cluster([sys.argv[1]]), run_id=sys.argv[2]) as topo:
        print(" ".join(str(p) for p in topo.pids()), flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    if sys.argv[3] == "cli":  # what `twin` does on Ctrl-C
        print(after_interrupt(), file=sys.stderr, flush=True)
    sys.exit(130)
"""


def interrupt_repeatedly(proc: subprocess.Popen, state: Path, every_s: float = 0.01, limit_s: float = 60) -> list[dict]:
    """SIGINT ``proc`` (our own child) again and again until it exits, so many land during teardown.
    Returns every process its state file ``state`` recorded meanwhile."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)
        try:
            seen.update({e["pid"]: e for e in json.loads(state.read_text())["pids"]})
        except (OSError, ValueError):
            pass
        time.sleep(every_s)
    return list(seen.values())


@pytest.mark.parametrize("when", ["built", "building"])
@pytest.mark.parametrize("caller", ["cli", "library"])
def test_repeated_ctrl_c_during_teardown_still_removes_everything_and_says_so(caller, when):
    """``cli`` reports like `twin` does; ``library`` relies on RealTopology.close alone.  The Ctrl-Cs
    start once the run is up (``built``) or once it has started its first namespace (``building``)."""
    from harness.cleanup import pid_matches

    run_id = "int" + os.urandom(2).hex()[:3]
    state = Path(f"/run/twin/{run_id}.json")
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, SEED_PODS, run_id, caller], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        if when == "built":
            assert proc.stdout.readline().split(), "the run did not build"
            assert len(netns_entries(run_id)) == 8
        else:
            deadline = time.monotonic() + 30  # until the first namespace shell is recorded
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if json.loads(state.read_text())["pids"]:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.002)
            assert state.exists(), "the run never wrote its state file"
        recorded = interrupt_repeatedly(proc, state)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if caller == "cli":
        assert code == 130 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == "twin: interrupted; kernel objects were cleaned up", err
    assert netns_entries(run_id) == []
    assert recorded and [e for e in recorded if pid_matches(e) and alive(e["pid"])] == []
    assert not state.exists()


def test_node_cgroups_are_recorded_and_removed_and_a_blocked_teardown_says_what_is_left():
    from harness.errors import TeardownIncomplete

    topo = RealTopology(load_cluster([SEED_PODS])).start()
    stray = None
    try:
        d = topo.make_node_cgroup("k8s-w1")
        assert str(d) == f"/sys/fs/cgroup/unified/twn-{topo.run_id}/k8s-w1"
        assert str(topo.server_pid(WEBPOD1)) in (d / "cgroup.procs").read_text().split()
        state = json.loads(Path(topo.state_dir, f"{topo.run_id}.json").read_text())
        assert state["cgroups"] == [str(d.parent), str(d)]
        # a process the topology does not know keeps the cgroup busy: teardown cannot finish
        stray = subprocess.Popen(["sleep", "60"])
        (d / "cgroup.procs").write_text(f"{stray.pid}\n")
        with pytest.raises(TeardownIncomplete) as exc:
            topo.close()
        assert netns_entries(topo.run_id) == []
        assert list(exc.value.left) == [f"run {topo.run_id}: state file {topo.state_dir}/{topo.run_id}.json",
                                        f"run {topo.run_id}: cgroup {d.parent}",
                                        f"run {topo.run_id}: cgroup {d}"]
        assert "twin cleanup" in str(exc.value)
        stray.kill()
        stray.wait()
        topo.close()  # retries what is left
        assert not d.parent.exists()
        assert not Path(topo.state_dir, f"{topo.run_id}.json").exists()
    finally:
        if stray is not None and stray.poll() is None:
            stray.kill()
            stray.wait()
        try:
            topo.close()
        except TopologyError:
            pass
