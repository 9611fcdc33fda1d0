"""The elector process (``python -m datapath.agent.l2announcer``) against a Lease
endpoint that behaves like Kubernetes (409 on a stale resourceVersion), served
on loopback by the test (``lease_fake``, a test double); then the real node
agent (its BPF programs, the host program on the node's ens5, its elector) on
a namespace LAN, judged by its kernel responder map and by arping from an
external host."""
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
# The real agent (NodeAgent.start(): its bcc programs, the host program on the
# node's ens5, its elector process) in a node namespace on a bridged LAN with the
# Lease API's namespace and an external host; the API's namespace is also reached
# over a second link, mgmt0 (the backup path of l2-nic-down).  ``ip link set ens5
# down`` on the node is a real partition from the API on the LAN; outcomes are read
# from the kernel (the node's responder map) and from the wire (arping from the
# external host, its neighbour table).

import ipaddress  # noqa: E402
import re  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from conftest import require_kernel  # noqa: E402
from topology import CLIENT, PYTHON, Pod, Topology, sh, start_server  # noqa: E402

from datapath.agent import L2_LEASES, L2Config, NodeAgent, NodeHost, Store  # noqa: E402
from datapath.agent.agent import AgentError  # noqa: E402
from twin.model.build import build_cluster  # noqa: E402
from twin.model.yamlsrc import Source  # noqa: E402
from twin.semantics.election import ElectionParams  # noqa: E402

SEED = REPO / "examples"
NODE = "k8s-w1"
# the seed cluster's addresses: k8s-w1 on the LAN, webpod1 its local pod
API_IP, NODE_IP, EXT_IP = "192.168.10.250", "192.168.10.101", "192.168.10.200"
API_BACKUP_IP, NODE_BACKUP_IP = "192.168.30.250", "192.168.30.101"
WEBPOD1 = ("webpod1", "172.16.1.10")
LEASE = "cilium-l2announce-default-svc1"
LB1 = ipaddress.IPv4Address("10.10.200.1")  # svc1's LB IP (pool 10.10.200.0/29, first and last excluded)


def seed_cluster(blue: bool = True):
    l2 = (SEED / "seed" / "l2.yaml").read_text()
    if blue:
        l2 = l2.replace("metadata:\n  name: svc1\n", "metadata:\n  name: svc1\n  labels:\n    color: blue\n")
    return build_cluster([Source("l2.yaml", l2), Source("pods.yaml", (SEED / "seed" / "pods.yaml").read_text())],
                         Source("values.yaml", (SEED / "values" / "seed.yaml").read_text()))


@dataclass
class Lan:
    topo: Topology
    api: str  # netns names
    node: str
    ext: str
    fake: LeaseFake
    pod: Pod  # webpod1, on k8s-w1

    @property
    def lxc(self) -> dict[str, str]:  # pod key -> its device in the node netns
        return {f"default/{self.pod.name}": self.pod.lxc}

    def ns(self, netns: str, *cmd: str, check: bool = True, timeout: float = 20):
        return sh("ip", "netns", "exec", netns, *cmd, check=check, timeout=timeout)

    @property
    def node_mac(self) -> str:
        return str(json.loads(self.ns(self.node, "ip", "-j", "link", "show", "ens5").stdout)[0]["address"])

    def arping(self, ip=LB1, count: int = 2, deadline: int = 4) -> tuple[int, set[str]]:
        """(replies received, MACs that replied) to ``count`` ARP requests from the external host."""
        out = self.ns(self.ext, "arping", "-c", str(count), "-w", str(deadline), "-I", "eth0", str(ip),
                      check=False, timeout=deadline + 10).stdout
        received = re.search(r"Received (\d+) response", out)
        assert received, f"arping printed no summary: {out!r}"
        return int(received.group(1)), {m.lower() for m in re.findall(r"reply from \S+ \[([0-9A-Fa-f:]+)\]", out)}

    def ext_neighbour(self, ip=LB1) -> str:
        return self.ns(self.ext, "ip", "neigh", "show", str(ip), "dev", "eth0").stdout.strip()

    def set_ens5(self, state: str) -> None:
        self.ns(self.node, "ip", "link", "set", "ens5", state)

    def clsact(self, dev: str = "ens5") -> bool:
        return "clsact" in self.ns(self.node, "tc", "qdisc", "show", "dev", dev).stdout

    def host_filters(self) -> str:
        """Every tc filter left on the node's ens5 (ingress and egress)."""
        return "".join(self.ns(self.node, "tc", "filter", "show", "dev", "ens5", d, check=False).stdout
                       for d in ("ingress", "egress"))


@pytest.fixture
def lan():
    require_kernel()
    t = Topology()
    try:
        br, api, node, ext = t.add_node("lan"), t.add_node("api"), t.add_node("w1"), t.add_node("ext")
        sh("ip", "netns", "exec", br, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", br, "ip", "link", "set", "br0", "up")
        for i, (netns, dev, ip) in enumerate([(api, "eth0", API_IP), (node, "ens5", NODE_IP), (ext, "eth0", EXT_IP)]):
            sh("ip", "link", "add", dev, "netns", netns, "type", "veth", "peer", "name", f"p{i}", "netns", br)
            sh("ip", "netns", "exec", br, "ip", "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "netns", "exec", netns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "netns", "exec", netns, "ip", "link", "set", dev, "up")
        # the backup path node <-> API (192.168.30.0/24, mgmt0), off the LAN
        sh("ip", "link", "add", "mgmt0", "netns", node, "type", "veth", "peer", "name", "mgmt0", "netns", api)
        for netns, ip in ((node, NODE_BACKUP_IP), (api, API_BACKUP_IP)):
            sh("ip", "netns", "exec", netns, "ip", "addr", "add", f"{ip}/24", "dev", "mgmt0")
            sh("ip", "netns", "exec", netns, "ip", "link", "set", "mgmt0", "up")
        # the external host ARPs for LB IPs on-link and takes gratuitous ARP
        sh("ip", "netns", "exec", ext, "ip", "route", "add", "10.10.200.0/29", "dev", "eth0")
        sh("ip", "netns", "exec", ext, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
        pod = t.add_pod(*WEBPOD1, node=node)  # k8s-w1's pod: the agent attaches its lxc program
        with LeaseFake("0.0.0.0", 6443, netns=f"/run/netns/{api}") as fake:
            yield Lan(t, api, node, ext, fake, pod)
    finally:
        t.destroy()


@pytest.fixture
def agents(lan):
    """``start(api_ip=API_IP) -> (agent, store, events)``: a real NodeAgent for k8s-w1
    (its programs loaded, started); every agent started is closed afterwards."""
    started: list[NodeAgent] = []

    def start(api_ip: str = API_IP, fault: bool = False):
        events: list[dict] = []
        store = Store()
        # the netns by name (as NodeDatapath takes it): the elector's nsenter needs the agent to make it a path
        agent = NodeAgent(NodeHost(NODE, lan.node, lan.lxc.__getitem__, None), store, socket_lb=False,
                          l2=L2Config(f"http://{api_ip}:6443", ElectionParams(LD, RD, RP, 50, 100),
                                      on_event=lambda node, ev: events.append(ev)))
        started.append(agent)
        agent.start()
        if fault:
            agent.inject_responder_fault()
        return agent, store, events

    yield start
    errors = []
    for agent in started:  # every one, even if another's teardown failed
        try:
            agent.close()
        except Exception as exc:
            errors.append(f"{agent.name}: {exc}")
    assert not errors, errors


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in list(events) if e["event"] == kind]


def holds_and_answers(agent: NodeAgent, events: list[dict]) -> None:
    """Wait until the agent holds svc1's lease, its responder entry is in the kernel
    map and the gratuitous ARP for it was sent (or failed)."""
    wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
    wait_until(lambda: agent.datapath.l2_responders() == {(LB1, "ens5")}, 5, "svc1's responder entry on ens5")
    wait_until(lambda: of(events, "garp") or of(events, "garp-failed"), 5, "a gratuitous ARP for svc1's IP")


def test_agent_answers_arp_for_a_held_lease_and_withdraws_the_responder_when_cut_off(lan, agents):
    agent, store, events = agents()
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    holds_and_answers(agent, events)
    assert lan.fake.holder(LEASE) == NODE
    assert [e["detail"] for e in of(events, "garp")] == [{"ip": str(LB1), "ifname": "ens5"}]
    assert not of(events, "garp-failed")
    mac = lan.node_mac
    # the external host learnt the MAC from the gratuitous ARP (arp_accept=1), before asking
    wait_until(lambda: f"lladdr {mac}" in lan.ext_neighbour(), 5, "the external host's neighbour entry")
    assert lan.arping(count=2) == (2, {mac})
    assert agent.l2_status()["programmed"] == [LEASE]

    cut = time.monotonic()
    lan.set_ens5("down")
    wait_until(lambda: LEASE not in agent.l2_status()["held"], RD + 5, "the lease lost after the partition")
    lost = of(events, "lost")
    assert lost and "renew deadline" in lost[0]["detail"]["reason"] and lost[0]["t"] >= cut
    wait_until(lambda: agent.datapath.l2_responders() == set(), 5, "the responder entry withdrawn")
    assert agent.l2_status()["elector_alive"] and agent.l2_status()["programmed"] == []
    # the link is back: the node, a candidate again, re-acquires, reprograms and re-announces
    lan.set_ens5("up")
    wait_until(lambda: len(of(events, "garp")) == 2, 15, "the lease re-acquired and announced again")
    assert agent.datapath.l2_responders() == {(LB1, "ens5")} and lan.fake.holder(LEASE) == NODE
    assert lan.arping(count=1) == (1, {mac})


def test_the_lease_holder_forwards_its_lb_ip_to_the_ready_backend(lan, agents):
    agent, store, events = agents()
    store.publish(seed_cluster())
    # webpod2's node is not on this LAN: only webpod1 (k8s-w1's own pod) is a ready backend
    assert agent.wait_for(store.set_endpoint_state("default/webpod2", "not-ready"), 30).ok
    holds_and_answers(agent, events)
    server = start_server(lan.pod, "tcp", 80)
    try:
        out = lan.ns(lan.ext, PYTHON, "-c", CLIENT, "tcp", str(LB1), "80", check=False, timeout=15).stdout
    finally:
        server.kill()
        server.wait()
    assert out.strip() == "ok:hi"  # answered by webpod1 through the node's host program
    assert agent.datapath.host_stats()["NS_NEW_LOCAL"] >= 1


def test_close_releases_the_lease_and_removes_the_host_program(lan, agents):
    agent, store, events = agents()
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    holds_and_answers(agent, events)
    assert "bpf" in lan.host_filters() and lan.clsact()
    pid = agent.elector_pid
    agent.close()
    assert lan.fake.holder(LEASE) == ""
    assert not os.path.exists(f"/proc/{pid}") or "zombie" not in open(f"/proc/{pid}/status").read().lower()
    assert not agent.l2_status()["elector_alive"]
    # the agent created the clsact qdiscs (on ens5 and the pod's lxc): they are gone with its filters
    assert lan.host_filters() == "" and not lan.clsact() and agent.datapath is None
    assert not lan.clsact(lan.lxc[f"default/{WEBPOD1[0]}"])
    assert lan.arping(count=1, deadline=2)[0] == 0


def test_agent_kill_stops_renewals_and_the_node_keeps_answering_from_its_maps(lan, agents):
    agent, store, events = agents()
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    holds_and_answers(agent, events)
    killed = agent.kill_agent()
    status = agent.l2_status()
    assert not status["elector_alive"] and LEASE in status["held"] and status["killed"] == killed == agent.killed
    renew = lan.fake.leases[("kube-system", LEASE)]["spec"]["renewTime"]
    time.sleep(3 * RP)
    assert lan.fake.leases[("kube-system", LEASE)]["spec"]["renewTime"] == renew  # nobody renews
    assert lan.fake.holder(LEASE) == NODE  # nor released it
    # the datapath outlives its agent: the entry stays in the kernel map and answers
    assert agent.datapath.l2_responders() == {(LB1, "ens5")}
    assert lan.arping(count=1) == (1, {lan.node_mac})
    with pytest.raises(AgentError, match="killed"):
        agent.wait_for(store.publish(seed_cluster(blue=False)), 2)
    assert agent.datapath.l2_responders() == {(LB1, "ens5")}


def test_a_lease_acquired_after_a_responder_fault_is_held_but_not_answered(lan, agents):
    agent, store, events = agents(fault=True)
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    wait_until(lambda: LEASE in agent.l2_status()["held"], 15, "k8s-w1 holds svc1's lease")
    acquired = of(events, "acquired")[0]["t"]
    # the host was reprogrammed after the acquisition (a lease-change report), without the entry
    wait_until(lambda: [r for r in agent.reports if r.changed == {L2_LEASES} and r.started >= acquired], 5,
               "the agent reprograms the host after the acquisition")
    assert all(r.ok for r in agent.reports)
    status = agent.l2_status()
    assert status["responder_fault"] and status["programmed"] == [] and lan.fake.holder(LEASE) == NODE
    assert agent.datapath.l2_responders() == set()
    assert not of(events, "garp") and not of(events, "garp-failed")
    assert lan.arping(count=1, deadline=2)[0] == 0


def test_a_service_no_longer_announced_is_released_and_its_responder_withdrawn(lan, agents):
    agent, store, events = agents()
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    holds_and_answers(agent, events)
    assert agent.wait_for(store.publish(seed_cluster(blue=False)), 30).ok
    wait_until(lambda: not agent.l2_status()["held"], 5, "the lease released")
    assert lan.fake.holder(LEASE) == "" and agent.l2_status()["wanted"] == []
    assert [e["detail"]["reason"] for e in of(events, "lost")] == ["released"]
    assert agent.datapath.l2_responders() == set()
    assert lan.arping(count=1, deadline=2)[0] == 0


def test_a_failed_gratuitous_arp_is_reported_and_the_responder_stays_programmed(lan, agents):
    # ens5 down, the API reached over mgmt0: the lease is taken, the GARP on ens5 cannot go out
    lan.set_ens5("down")
    agent, store, events = agents(api_ip=API_BACKUP_IP)
    assert agent.wait_for(store.publish(seed_cluster()), 30).ok
    holds_and_answers(agent, events)
    failed = of(events, "garp-failed")
    assert [(e["detail"]["ip"], e["detail"]["ifname"]) for e in failed] == [(str(LB1), "ens5")]
    assert "Network is down" in failed[0]["detail"]["error"] and not of(events, "garp")
    assert agent.l2_status()["programmed"] == [LEASE] and not agent.l2_status()["errors"]
    assert all(r.ok for r in agent.reports)
    assert lan.ext_neighbour() == ""  # no gratuitous ARP reached the external host
    # the entry stayed: once the link is up the node answers (nobody re-sends the GARP, as in Cilium)
    lan.set_ens5("up")
    assert agent.datapath.l2_responders() == {(LB1, "ens5")}
    assert lan.arping(count=2)[1] == {lan.node_mac}
