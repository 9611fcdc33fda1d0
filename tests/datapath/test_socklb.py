"""Socket load-balancing on a real kernel: cgroup connect4/sendmsg4/recvmsg4/
getpeername4 programs translate a service VIP to backends before any packet
exists, and report the VIP back to the application."""
from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from conftest import require_kernel
from datapath.cgroup import query_prog_ids
from datapath.errors import CgroupError
from datapath.loader import SOCK_HOOKS
from datapath.socklb import NodeSocketLB
from datapath.sockdiag import destroy_udp_sockets_to, udp_sockets_to
from socklb_env import (
    CGROUP2_ROOT, TARGET_PORT, VIP, VIP_PORT, LBEnv, chi_square_p_uniform, make_cgroup,
)
from topology import Topology

pytestmark = pytest.mark.datapath


def require_cgroup2() -> None:
    if not (CGROUP2_ROOT / "cgroup.procs").exists():
        pytest.skip(f"needs cgroup2 mounted at {CGROUP2_ROOT}")


@pytest.fixture
def env():
    """Node netns, client pod 10.200.0.1 (in our cgroup), backends .2 and .3 with servers."""
    require_kernel()
    require_cgroup2()
    topo = Topology()
    e = None
    try:
        topo.create_node()
        client = topo.add_pod("c", "10.200.0.1")
        b1, b2 = topo.add_pod("b1", "10.200.0.2"), topo.add_pod("b2", "10.200.0.3")
        e = LBEnv(topo, client, [b1, b2], make_cgroup())
        e.start_servers()
        yield e
    finally:
        if e is not None:
            e.destroy()
        else:
            topo.destroy()


@pytest.fixture
def lb(env):
    with NodeSocketLB() as sock_lb:
        sock_lb.attach_cgroup(env.cgroup)
        sock_lb.set_services(env.table())
        yield sock_lb


def backend_hits(results) -> Counter[str]:
    assert all("error" not in r for r in results), f"some connections failed: {results}"
    return Counter(r["reply"] for r in results)


def test_tcp_connections_to_the_vip_are_spread_over_both_backends(env, lb):
    results = env.client().ask(op="tcp_many", n=200, host=str(VIP), port=VIP_PORT)
    hits = backend_hits(results)
    b1, b2 = (str(b.ip) for b in env.backends)
    assert set(hits) == {b1, b2}, f"both backends must get connections, got {dict(hits)}"
    p = chi_square_p_uniform([hits[b1], hits[b2]])
    assert p > 0.001, f"backend choice is not uniform: {dict(hits)} (chi-square p={p:.2g})"


def test_application_sees_the_vip_as_peer_and_its_own_ip_as_local_address(env, lb):
    results = env.client().ask(op="tcp_many", n=10, host=str(VIP), port=VIP_PORT)
    backend_hits(results)
    for r in results:
        assert r["peer"] == [str(VIP), VIP_PORT], f"getpeername() must return the VIP, got {r['peer']}"
        assert r["sock"][0] == str(env.client_pod.ip), f"getsockname() must be the pod IP, got {r['sock']}"


def test_packets_in_the_client_netns_never_carry_the_vip(env, lb):
    dump = subprocess.Popen(
        ["ip", "netns", "exec", env.client_pod.netns, "tcpdump", "-i", "eth0", "-n", "-l", "-U",
         "tcp or udp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    env.procs.append(dump)
    assert dump.stderr is not None
    for _ in range(5):  # wait until the capture is live
        if "listening on" in dump.stderr.readline():
            break
    else:
        pytest.fail("tcpdump did not start capturing")
    client = env.client()
    backend_hits(client.ask(op="tcp_many", n=10, host=str(VIP), port=VIP_PORT))
    backend_hits(client.ask(op="udp_many", n=5, host=str(VIP), port=VIP_PORT))
    time.sleep(0.3)  # let tcpdump flush the last packets
    dump.terminate()
    out, _ = dump.communicate(timeout=5)
    lines = out.splitlines()
    backends = {str(b.ip) for b in env.backends}
    assert any(any(ip in line for ip in backends) for line in lines), f"capture saw no traffic: {out!r}"
    assert not [line for line in lines if str(VIP) in line], "tcpdump in the pod saw the ClusterIP"


def test_udp_echo_through_the_vip_comes_back_from_the_vip(env, lb):
    results = env.client().ask(op="udp_many", n=40, host=str(VIP), port=VIP_PORT)
    hits = backend_hits(results)
    assert set(hits) == {str(b.ip) for b in env.backends}, f"each datagram picks a backend: {dict(hits)}"
    for r in results:
        assert r["src"] == [str(VIP), VIP_PORT], f"recvfrom() must report the VIP, got {r['src']}"


def test_service_without_backends_fails_connect_and_sendto_with_ehostunreach(env, lb):
    lb.set_services(env.table(backends=[]))
    client = env.client()
    assert client.ask(op="tcp_many", n=1, host=str(VIP), port=VIP_PORT) == [{"error": "EHOSTUNREACH"}]
    assert client.ask(op="udp_many", n=1, host=str(VIP), port=VIP_PORT) == [{"error": "EHOSTUNREACH"}]


def test_only_terminating_backends_also_fail_with_ehostunreach(env, lb):
    lb.set_services(env.table(states=["terminating", "terminating"]))
    assert env.client().ask(op="tcp_many", n=1, host=str(VIP), port=VIP_PORT) == [{"error": "EHOSTUNREACH"}]


def test_removed_backend_keeps_its_established_connection_but_gets_no_new_ones(env, lb):
    client = env.client()
    first = client.ask(op="tcp_open", name="held", host=str(VIP), port=VIP_PORT)
    chosen = first["reply"]
    remaining = [b for b in env.backends if str(b.ip) != chosen]
    lb.set_services(env.table(backends=remaining))

    again = client.ask(op="again", name="held")
    assert again == {"reply": chosen, "peer": [str(VIP), VIP_PORT]}, \
        "the established connection must keep its backend and still show the VIP"
    hits = backend_hits(client.ask(op="tcp_many", n=60, host=str(VIP), port=VIP_PORT))
    assert set(hits) == {str(remaining[0].ip)}, f"a removed backend was chosen: {dict(hits)}"


def test_terminating_backend_is_never_chosen(env, lb):
    lb.set_services(env.table(states=["active", "terminating"]))
    entries = lb.services_entries()
    assert len(entries.backends) == 4, "terminating backends stay in lb4_backends"
    hits = backend_hits(env.client().ask(op="tcp_many", n=60, host=str(VIP), port=VIP_PORT))
    assert set(hits) == {str(env.backends[0].ip)}, f"a terminating backend was chosen: {dict(hits)}"
    hits = backend_hits(env.client().ask(op="udp_many", n=30, host=str(VIP), port=VIP_PORT))
    assert set(hits) == {str(env.backends[0].ip)}, f"a terminating UDP backend was chosen: {dict(hits)}"


def test_connected_udp_socket_to_a_removed_backend_is_destroyed(env, lb):
    client = env.client()
    first = client.ask(op="udp_connect", name="u", host=str(VIP), port=VIP_PORT)
    assert first["peer"] == [str(VIP), VIP_PORT]
    chosen = next(b for b in env.backends if str(b.ip) == first["reply"])
    assert udp_sockets_to(env.client_pod.netns, chosen.ip, TARGET_PORT) == 1

    remaining = [b for b in env.backends if b is not chosen]
    lb.set_services(env.table(backends=remaining), terminate_udp_in=[env.client_pod.netns])

    assert udp_sockets_to(env.client_pod.netns, chosen.ip, TARGET_PORT) == 0
    assert client.ask(op="recv", name="u") == {"error": "ECONNABORTED"}, \
        "the application must learn that its connected UDP socket was terminated"
    assert client.ask(op="again", name="u") == {"error": "EDESTADDRREQ"}, \
        "a terminated UDP socket is disconnected: sending needs a new connect() through the LB"


def test_destroy_udp_sockets_to_reports_zero_when_nothing_matches(env):
    assert destroy_udp_sockets_to(env.client_pod.netns, "10.200.0.99", 9) == 0


def test_attaching_to_the_root_cgroup_is_refused():
    require_kernel()
    require_cgroup2()
    before = {h.name: query_prog_ids(CGROUP2_ROOT, h.attach_type) for h in SOCK_HOOKS}
    with NodeSocketLB() as sock_lb:
        with pytest.raises(CgroupError, match="root cgroup"):
            sock_lb.attach_cgroup(CGROUP2_ROOT)
        with pytest.raises(CgroupError, match="root cgroup"):
            sock_lb.attach_cgroup(str(CGROUP2_ROOT) + "/")
    after = {h.name: query_prog_ids(CGROUP2_ROOT, h.attach_type) for h in SOCK_HOOKS}
    assert before == after, "nothing may be attached to the root cgroup"


def test_close_detaches_exactly_our_programs_from_the_cgroup(env):
    from datapath.cgroup import prog_id

    sock_lb = NodeSocketLB()
    with sock_lb:
        sock_lb.attach_cgroup(env.cgroup)
        for hook, fn in sock_lb.program.functions.items():
            assert query_prog_ids(env.cgroup, hook.attach_type) == [prog_id(fn.fd)], \
                f"{hook.name} must be attached once, as our program"
    for hook in SOCK_HOOKS:
        assert query_prog_ids(env.cgroup, hook.attach_type) == [], f"{hook.name} still attached after close()"
    sock_lb.close()  # idempotent
    # translation stopped: the VIP is no longer rewritten, so no backend answers
    results = env.client().ask(op="tcp_many", n=1, host=str(VIP), port=VIP_PORT)
    assert "reply" not in results[0], f"the VIP was still translated after close(): {results}"


def test_sockets_outside_the_cgroup_are_not_translated(env, lb):
    res = env.client_pod.exec(
        "/usr/bin/python3", "-c",
        "import socket; s=socket.socket(); s.settimeout(1)\n"
        "try:\n s.connect(('%s', %d)); print('connected')\nexcept OSError as e: print('error')" % (VIP, VIP_PORT),
    )
    assert res.stdout.strip() == "error", "a process outside the node cgroup must not be load-balanced"


def test_lxc_policy_sees_the_backend_identity_and_target_port_not_the_vip(env, lb):
    """Egress of the client allows only TCP 8080 to backend 1: a VIP:80 connection
    passes when it lands on backend 1, and is dropped when it lands on backend 2."""
    import ipaddress

    from twin.model.enums import Direction, Protocol

    from builders import allow, enforced, table, unenforced
    from datapath.node import EndpointSpec, NodeDatapath

    client, (b1, b2) = env.client_pod, env.backends
    pods = [(client, 1001), (b1, 1002), (b2, 1003)]
    policy = table(
        enforced(1001, Direction.EGRESS, {1002: (allow(Protocol.TCP, TARGET_PORT),)}),
        unenforced(1001, Direction.INGRESS),
        *[unenforced(i, d) for i in (1002, 1003) for d in Direction],
    )
    with NodeDatapath(env.topo.node_netns) as dp:
        dp.attach([p.lxc for p, _ in pods])
        dp.set_endpoints([EndpointSpec(p.lxc, i, p.ip) for p, i in pods])
        dp.set_ipcache({ipaddress.IPv4Network(f"{p.ip}/32"): i for p, i in pods})
        dp.set_policy(policy, endpoint_identities=[i for _, i in pods])
        sock_client = env.client()

        lb.set_services(env.table(backends=[b1]))
        assert backend_hits(sock_client.ask(op="tcp_many", n=3, host=str(VIP), port=VIP_PORT)) == {str(b1.ip): 3}
        events = dp.read_events(timeout_ms=200)
        assert events and all(e.dst_ip != VIP for e in events), "the lxc program saw the ClusterIP"
        assert {(e.dst_ip, e.dst_port) for e in events if e.src_ip == client.ip} == {(b1.ip, TARGET_PORT)}

        lb.set_services(env.table(backends=[b2]))
        res = sock_client.ask(op="tcp_many", n=1, host=str(VIP), port=VIP_PORT)
        assert "reply" not in res[0], \
            f"policy must drop the connection translated to backend 2: {res}"
