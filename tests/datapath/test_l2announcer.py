"""The elector process (``python -m datapath.agent.l2announcer``) against a Lease
endpoint that behaves like Kubernetes (409 on a stale resourceVersion), served
on loopback by the test (``lease_fake``, a test double)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lease_fake import LeaseFake

pytestmark = pytest.mark.datapath

REPO = Path(__file__).resolve().parents[2]
LD, RD, RP = 2.0, 1.0, 0.2


class Elector:
    """One elector process and its events (read by a thread)."""

    def __init__(self, node: str, url: str, leases: list[str], qps: float = 50, burst: int = 100) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.node = node
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datapath.agent.l2announcer", "--node", node, "--api", url,
             "--lease-duration", str(LD), "--renew-deadline", str(RD), "--retry-period", str(RP),
             "--qps", str(qps), "--burst", str(burst)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.events: list[dict] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(leases)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            ev["node"] = self.node
            self.events.append(ev)
            self._q.put(ev)

    def send(self, leases: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"leases": leases}) + "\n")
        self.proc.stdin.flush()

    def of(self, event: str, lease: str | None = None) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == event and (lease is None or e["lease"] == lease)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass


def wait_until(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g}s: {what}")


@pytest.fixture
def api():
    with LeaseFake() as fake:
        yield fake


@pytest.fixture
def electors():
    started: list[Elector] = []
    yield started
    for e in started:
        e.close()


def start(electors: list, *args, **kw) -> Elector:
    e = Elector(*args, **kw)
    electors.append(e)
    return e


def test_exactly_one_of_three_candidates_acquires_and_keeps_renewing(api, electors):
    es = [start(electors, f"w{i}", api.url, ["svc1"]) for i in range(3)]
    holder = wait_until(lambda: [e for e in es if e.of("acquired")], 10, "a node acquires svc1")
    time.sleep(LD + 0.5)  # past a lease duration: the others must still not take it
    acquired = [e for e in es if e.of("acquired")]
    assert [e.node for e in acquired] == [holder[0].node]
    assert api.holder("svc1") == holder[0].node
    assert len(holder[0].of("renewed")) >= 3
    assert not holder[0].of("lost")


def test_sigkilled_holder_is_taken_over_only_after_its_lease_expires(api, electors):
    es = [start(electors, f"w{i}", api.url, ["svc1"]) for i in range(3)]
    old = wait_until(lambda: [e for e in es if e.of("acquired")], 10, "a node acquires svc1")[0]
    wait_until(lambda: len(old.of("renewed")) >= 2, 5, "the holder renews")
    old.proc.send_signal(signal.SIGKILL)
    old.proc.wait(5)
    killed_at = time.monotonic()
    # the holder's last write, as the API stored it (the candidates' reads come after it)
    last_write = max(t for t, method, name, code in list(api.log) if method == "PUT" and code == 200)
    new = wait_until(lambda: [e for e in es if e is not old and e.of("acquired")], LD + 10,
                     "another node takes over")
    assert len(new) == 1
    take = new[0].of("acquired")[0]
    assert take["detail"]["previous"] == old.node and take["detail"]["transitions"] == 1
    # the candidate saw the last renewal no earlier than it was written, then waited LD on its own clock
    # (RP of slack for the moment the API logged the write)
    assert take["t"] >= last_write + LD - RP
    assert take["t"] <= killed_at + LD + 5  # generous: LD plus a few jittered retry periods
    assert api.holder("svc1") == new[0].node


def test_a_client_throttled_below_its_renewal_rate_loses_leases(api, electors):
    # 4 leases, each renewal needing a Get and an Update within RD = 1 s, through 1 request/s
    leases = [f"svc{i}" for i in range(4)]
    e = start(electors, "w1", api.url, leases, qps=1, burst=1)
    wait_until(lambda: e.of("lost"), 20, "a lease lost to throttling")
    assert e.of("throttled")
    lost = e.of("lost")[0]
    assert "renew deadline" in lost["detail"]["reason"]
    assert e.of("acquired", lost["lease"])[0]["t"] < lost["t"]


def test_stdin_eof_ends_the_process_without_releasing(api, electors):
    e = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: e.of("acquired"), 10, "w1 acquires svc1")
    e.proc.stdin.close()
    assert e.proc.wait(5) == 0
    assert api.holder("svc1") == "w1"  # the agent died: nobody released the lease


def test_sigterm_releases_the_held_lease_and_exits(api, electors):
    e = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: e.of("acquired"), 10, "w1 acquires svc1")
    e.proc.send_signal(signal.SIGTERM)
    assert e.proc.wait(5) == 0
    time.sleep(0.2)
    assert api.holder("svc1") == ""
    assert [x["detail"]["reason"] for x in e.of("lost")] == ["released"]
    assert e.of("stopped", "svc1")


def test_a_lease_dropped_from_the_set_is_released_and_taken_by_the_other_candidate(api, electors):
    a = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: a.of("acquired"), 10, "w1 acquires svc1")
    b = start(electors, "w2", api.url, ["svc1"])
    wait_until(lambda: b.of("started"), 10, "w2's elector runs")
    time.sleep(3 * RP)
    assert not b.of("acquired")
    a.send([])
    wait_until(lambda: a.of("stopped", "svc1"), 5, "w1's elector stops")
    assert [x["detail"]["reason"] for x in a.of("lost")] == ["released"]
    # released: holder "" with leaseDurationSeconds 1 -> w2 may take it after 1 s on its clock, not LD
    wait_until(lambda: b.of("acquired"), LD + 5, "w2 acquires the released lease")
    assert a.proc.poll() is None


# ------------------------------------------------------------------ the node agent's wiring
# The elector runs in the node's netns and reaches the Lease API over a veth "LAN"
# (the API served from another netns); ``ip link set ens5 down`` is a real partition.
# The host program (responder map, GARP: helper bpfhost's reconcile_host/send_garp)
# is not on this branch: a recording double stands in for it here.

import types  # noqa: E402

from topology import Topology  # noqa: E402

from datapath.agent import L2Config, NodeAgent, Store  # noqa: E402
from datapath.agent import reconcilers as reconcilers_mod  # noqa: E402
from datapath.agent.agent import AgentError  # noqa: E402
from twin.model.build import build_cluster  # noqa: E402
from twin.model.yamlsrc import Source  # noqa: E402
from twin.semantics.election import ElectionParams  # noqa: E402

SEED = REPO / "examples"
API_IP, NODE_IP = "192.168.77.250", "192.168.77.11"
LEASE = "cilium-l2announce-default-svc1"


def seed_cluster(blue: bool = True):
    l2 = (SEED / "seed" / "l2.yaml").read_text()
    if blue:
        l2 = l2.replace("metadata:\n  name: svc1\n", "metadata:\n  name: svc1\n  labels:\n    color: blue\n")
    return build_cluster([Source("l2.yaml", l2), Source("pods.yaml", (SEED / "seed" / "pods.yaml").read_text())],
                         Source("values.yaml", (SEED / "values" / "seed.yaml").read_text()))


class HostDouble:
    """Stands in for bpfhost's reconcile_host / send_garp: records what the agent asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset, bool]] = []
        self.garps: list[tuple[str, str, str]] = []
        self._programmed: set[str] = set()
        self.garp_error: str | None = None  # set: send_garp fails as on a downed interface

    def reconcile_host(self, datapath, view, node, held_leases, responder_fault):
        self.calls.append((node, frozenset(held_leases), responder_fault))
        anns = {a.lease: a for a in view.announcements.values()}
        added = [(ip, ifname) for lease in sorted(set(held_leases) - self._programmed)
                 for ip in anns[lease].ips for ifname in anns[lease].interfaces[node]]
        self._programmed = set(held_leases)
        return {"responders_added": added}

    def send_garp(self, netns, ifname, ip):
        if self.garp_error:
            from datapath.errors import DatapathError
            raise DatapathError(self.garp_error)
        self.garps.append((netns, ifname, ip))


class _NoMaps:
    """The agent's datapath slot: this test loads no BPF (the double programs nothing)."""

    def close(self) -> None:
        pass


@pytest.fixture
def lan():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    t = Topology()
    try:
        api_ns, node_ns = t.add_node("api"), t.add_node("w1")
        t.link_nodes(api_ns, API_IP, node_ns, NODE_IP)
        with LeaseFake(API_IP, 6443, netns=f"/run/netns/{api_ns}") as fake:
            yield t, fake, node_ns
    finally:
        t.destroy()


@pytest.fixture
def host(monkeypatch):
    double = HostDouble()
    monkeypatch.setattr(reconcilers_mod, "reconcile_host", double.reconcile_host, raising=False)
    monkeypatch.setitem(sys.modules, "datapath.garp", types.SimpleNamespace(send_garp=double.send_garp))
    return double


def make_agent(node_ns: str, events: list):
    store = Store()
    agent = NodeAgent(_host(node_ns), store,
                      l2=L2Config(f"http://{API_IP}:6443", ElectionParams(LD, RD, RP, 50, 100),
                                  on_event=lambda node, ev: events.append(ev)))
    agent.datapath = _NoMaps()  # type: ignore[assignment]
    agent.start_watching()
    return agent, store


def _host(node_ns: str):
    from datapath.agent import NodeHost
    return NodeHost("k8s-w1", f"/run/netns/{node_ns}", lambda key: "unused")


def test_agent_programs_and_garps_a_held_lease_and_withdraws_it_when_cut_off_from_the_api(lan, host):
    topo, fake, node_ns = lan
    events: list = []
    agent, store = make_agent(node_ns, events)
    try:
        assert agent.wait_for(store.publish(seed_cluster()), 30).ok
        wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
        assert fake.holder(LEASE) == "k8s-w1"
        wait_until(lambda: host.garps, 5, "a gratuitous ARP for svc1's IP")
        assert host.garps == [(f"/run/netns/{node_ns}", "ens5", "10.10.200.1")]
        assert host.calls[-1] == ("k8s-w1", frozenset({LEASE}), False)
        assert agent.l2_status()["programmed"] == [LEASE]
        cut = time.monotonic()
        subprocess.run(["ip", "netns", "exec", node_ns, "ip", "link", "set", "ens5", "down"], check=True)
        wait_until(lambda: LEASE not in agent.l2_status()["held"], RD + 5, "the lease lost after the partition")
        lost = [e for e in events if e["event"] == "lost"]
        assert lost and "renew deadline" in lost[0]["detail"]["reason"] and lost[0]["t"] >= cut
        wait_until(lambda: host.calls[-1][1] == frozenset(), 5, "the responder withdrawn")
        assert agent.l2_status()["elector_alive"]
    finally:
        agent.close()


def test_close_stops_the_elector_which_releases_its_lease(lan, host):
    topo, fake, node_ns = lan
    agent, store = make_agent(node_ns, [])
    try:
        agent.wait_for(store.publish(seed_cluster()), 30)
        wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
        pid = agent.elector_pid
    finally:
        agent.close()
    assert fake.holder(LEASE) == ""
    assert not os.path.exists(f"/proc/{pid}") or "zombie" not in open(f"/proc/{pid}/status").read().lower()
    assert not agent.l2_status()["elector_alive"]


def test_agent_kill_stops_renewals_but_leaves_the_programming(lan, host):
    topo, fake, node_ns = lan
    agent, store = make_agent(node_ns, [])
    try:
        agent.wait_for(store.publish(seed_cluster()), 30)
        wait_until(lambda: LEASE in agent.l2_status()["held"] and host.garps, 15, "k8s-w1 holds svc1's lease")
        calls = len(host.calls)
        killed = agent.kill_agent()
        status = agent.l2_status()
        assert not status["elector_alive"] and LEASE in status["held"] and status["killed"] == killed == agent.killed
        renew = fake.leases[("kube-system", LEASE)]["spec"]["renewTime"]
        time.sleep(3 * RP)
        assert fake.leases[("kube-system", LEASE)]["spec"]["renewTime"] == renew  # nobody renews
        assert fake.holder(LEASE) == "k8s-w1"  # nor released it
        assert len(host.calls) == calls  # the responder entries stay (no reconcile touched them)
        with pytest.raises(AgentError, match="killed"):
            agent.wait_for(store.publish(seed_cluster(blue=False)), 2)
    finally:
        agent.close()


def test_leases_acquired_after_a_responder_fault_are_not_programmed(lan, host):
    topo, fake, node_ns = lan
    agent, store = make_agent(node_ns, [])
    try:
        agent.inject_responder_fault()
        agent.wait_for(store.publish(seed_cluster()), 30)
        wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
        wait_until(lambda: len(host.calls) >= 2, 5, "the host reconciled after the acquisition")
        status = agent.l2_status()
        assert status["responder_fault"] and status["programmed"] == []
        assert host.calls[-1][1] == frozenset() and not host.garps
    finally:
        agent.close()


def test_a_service_no_longer_announced_is_released(lan, host):
    topo, fake, node_ns = lan
    agent, store = make_agent(node_ns, [])
    try:
        agent.wait_for(store.publish(seed_cluster()), 30)
        wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
        agent.wait_for(store.publish(seed_cluster(blue=False)), 30)
        wait_until(lambda: not agent.l2_status()["held"], 5, "the lease released")
        assert fake.holder(LEASE) == "" and agent.l2_status()["wanted"] == []
        assert host.calls[-1][1] == frozenset()
    finally:
        agent.close()


def test_without_the_host_program_the_agent_reports_a_clear_error(lan, monkeypatch):
    topo, fake, node_ns = lan
    monkeypatch.delattr(reconcilers_mod, "reconcile_host", raising=False)
    agent, store = make_agent(node_ns, [])
    try:
        report = agent.wait_for(store.publish(seed_cluster()), 30)
        assert not report.ok and "reconcile_host" in report.error
    finally:
        agent.close()


def test_a_failed_gratuitous_arp_is_reported_and_the_responder_stays_programmed(lan, host):
    topo, fake, node_ns = lan
    events: list = []
    host.garp_error = "gratuitous ARP for 10.10.200.1 on ens5 failed: [Errno 100] Network is down"
    agent, store = make_agent(node_ns, events)
    try:
        assert agent.wait_for(store.publish(seed_cluster()), 30).ok
        wait_until(lambda: [e for e in events if e["event"] == "garp-failed"], 15, "the failed GARP reported")
        assert agent.l2_status()["programmed"] == [LEASE] and not agent.l2_status()["errors"]
        assert all(r.ok for r in agent.reports)
    finally:
        agent.close()
