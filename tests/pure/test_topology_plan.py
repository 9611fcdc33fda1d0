"""The real topology's plan (harness.topology.plan): names, addresses, routes and commands, checked without root."""
from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from twinhelp import ROOT, load

from harness.cleanup import CGROUP_PREFIX, CGROUP_ROOT, NETNS_DIR, NETNS_PREFIX
from harness.errors import HarnessError, TopologyError
from harness.inputs import load_cluster
from harness.topology import plan_topology
from harness.topology.plan import BRIDGE, EXTERNAL, IFNAMSIZ, LAN, ROUTER_DEV, lxc_name
from strategies import pods
from twin.model import topology as topodefaults
from twin.model.findings import TwinError

pytestmark = pytest.mark.pure
SEED_PODS = str(ROOT / "examples/seed/pods.yaml")
NODE_NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30).filter(
    lambda s: s[0].isalnum() and s[-1].isalnum())


@st.composite
def clusters(draw):
    """1-6 nodes (names up to 30 chars), 0-12 pods spread over them."""
    nodes = draw(st.lists(NODE_NAMES, min_size=1, max_size=6, unique=True))
    docs = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in nodes]
    for p in draw(pods(("default", "other"), 0, 12)):
        p["spec"]["nodeName"] = draw(st.sampled_from(nodes))
        docs.append(p)
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}]
    return load(yaml.safe_dump_all(docs))


def seed_plan(**kw):
    return plan_topology(load_cluster([SEED_PODS]), "abc12", **kw)


def check_plan(cluster, plan) -> None:
    """Every invariant of a plan, on any cluster."""
    run = plan.run_id
    targets = plan.targets
    # one namespace per node, pod, the LAN and the external host; nothing else, and never the root one
    assert sorted(targets) == sorted([LAN, EXTERNAL] + [n.name for n in cluster.nodes] + [p.key for p in cluster.pods])
    for v in plan.veths:
        assert v.target1 in targets and v.target2 in targets and v.target1 != v.target2
    # names carry the run id where cleanup looks for them
    for ns in plan.namespaces:
        assert ns.netns.startswith(f"{NETNS_PREFIX}{run}-") and "/" not in ns.netns
        assert ns.path == str(NETNS_DIR / ns.netns)
        assert ns.host_name.startswith(f"twn{run}-")
    assert plan.cgroup_dir == str(CGROUP_ROOT / f"{CGROUP_PREFIX}{run}")
    assert len({ns.netns for ns in plan.namespaces}) == len(plan.namespaces)
    # interface names: unique within a namespace, at most 15 characters; MACs unique, unicast, local
    macs = [m for v in plan.veths for m in (v.mac1, v.mac2)]
    assert len(set(macs)) == len(macs)
    assert all(int(m[:2], 16) & 0b11 == 0b10 for m in macs)
    for t in targets:
        ifs = plan.interfaces(t)
        assert len(set(ifs)) == len(ifs), (t, ifs)
        assert all(0 < len(i) <= IFNAMSIZ for i in ifs), (t, ifs)
    nodes = {n.name: n for n in cluster.nodes}
    for p in cluster.pods:
        ns = plan.namespace(p.key)
        node = nodes[p.node]
        router = topodefaults.router_ip(node.pod_cidr)
        # the pod's /32 is inside its node's pod CIDR; default route via the node's router IP, on-link
        [addr] = ns.addresses
        assert addr.ip.network.prefixlen == 32 and addr.ip.ip in node.pod_cidr and addr.dev == "eth0"
        assert {(str(r.dst), r.via) for r in ns.routes} == {(f"{router}/32", None), ("0.0.0.0/0", router)}
        # the node side: the pod's lxc device, a /32 route to it, proxy ARP on it
        lxc = lxc_name(p.key)
        node_ns = plan.namespace(p.node)
        assert lxc in plan.interfaces(p.node)
        assert any(r.dst == ipaddress.IPv4Network(f"{p.ip}/32") and r.dev == lxc for r in node_ns.routes)
        assert (f"net.ipv4.conf.{lxc}.proxy_arp", "1") in node_ns.sysctls
    for node in cluster.nodes:
        ns = plan.namespace(node.name)
        assert ("net.ipv4.ip_forward", "1") in ns.sysctls
        others = {o.pod_cidr: o.ip for o in cluster.nodes if o.name != node.name}
        # a route to every other node's pod CIDR via that node's LAN address, and no default route
        assert {r.dst: r.via for r in ns.routes if r.via is not None} == others
        assert not any(r.is_default for r in ns.routes)
        assert {str(a.ip) for a in ns.addresses} == {f"{node.ip}/{cluster.node_network.prefixlen}",
                                                     f"{topodefaults.router_ip(node.pod_cidr)}/32"}
    # the LAN bridges one port per node plus the external host
    lan = plan.namespace(LAN)
    assert lan.local_devices == (BRIDGE,) and len(lan.bridge_ports) == len(cluster.nodes) + 1
    assert {v.target2 for v in plan.veths if v.target1 == LAN} == set(nodes) | {EXTERNAL}
    # the external host sits on the LAN and reaches only the pod CIDRs: no default route, nothing beyond
    ext = plan.namespace(EXTERNAL)
    [eaddr] = ext.addresses
    assert eaddr.ip.network == cluster.node_network
    assert not any(r.is_default for r in ext.routes)
    assert {r.dst for r in ext.routes} == {n.pod_cidr for n in cluster.nodes}
    assert all(r.via in cluster.node_network for r in ext.routes)
    # every command runs inside a namespace of the plan (scripts are per namespace) and names no netns
    for ns in plan.namespaces:
        for cmd in ns.commands():
            assert "netns" not in cmd and not cmd.startswith("ip -n"), cmd


def test_seed_plan_has_the_documented_layout():
    plan = seed_plan()
    assert [ns.netns for ns in plan.namespaces] == [f"twn-abc12-{n}" for n in (
        "lan", "k8s-s", "k8s-w1", "k8s-w2", "default.netpod", "default.webpod1", "default.webpod2", "external")]
    assert [v.name1 for v in plan.veths[:4]] == ["n0.k8s-s", "n1.k8s-w1", "n2.k8s-w2", "ext"]
    assert plan.namespace("k8s-s").commands()[-4:] == (
        f"ip route add 172.16.0.10/32 dev {lxc_name('default/netpod')}",
        "ip route add 172.16.1.0/24 via 192.168.10.101 dev ens5",
        "ip route add 172.16.2.0/24 via 192.168.10.102 dev ens5",
        f"ip neigh replace 172.16.0.10 lladdr {plan.veths[4].mac2} dev {lxc_name('default/netpod')} nud permanent",
    )
    assert plan.namespace("default/netpod").commands()[-3:] == (
        "ip route add 172.16.0.1/32 dev eth0 scope link",
        "ip route add default via 172.16.0.1 dev eth0",
        f"ip neigh replace 172.16.0.1 lladdr {plan.veths[4].mac1} dev eth0 nud permanent",
    )
    assert ROUTER_DEV in plan.interfaces("k8s-w1")
    check_plan(load_cluster([SEED_PODS]), plan)


def test_seed_plan_starts_the_pods_apps_and_the_external_http_server():
    servers = {s.target: s for s in seed_plan().servers}
    assert sorted(servers) == ["default/webpod1", "default/webpod2", EXTERNAL]  # netpod runs no server
    assert servers["default/webpod1"].tcp_ports == (80,) and servers["default/webpod1"].ips == ("172.16.1.10",)
    assert servers[EXTERNAL].ips == (str(topodefaults.EXTERNAL_HOST_IP),)
    argv = servers["default/webpod2"].argv
    assert argv[1:3] == ("-m", "harness.apps.server") and "--hostname" in argv and "webpod2" in argv
    assert seed_plan(start_apps=False).servers == ()


def test_without_static_neighbours_the_plan_has_no_neighbour_entries():
    plan = seed_plan(static_neighbours=False)
    assert not [n for ns in plan.namespaces for n in ns.neighbours]
    assert not [c for ns in plan.namespaces for c in ns.commands() if "neigh" in c]


def test_plans_are_deterministic_per_run_and_differ_between_runs():
    cluster = load_cluster([SEED_PODS])
    assert plan_topology(cluster, "r1") == plan_topology(cluster, "r1")
    a, b = plan_topology(cluster, "r1"), plan_topology(cluster, "r2")
    assert not {ns.netns for ns in a.namespaces} & {ns.netns for ns in b.namespaces}
    assert not {v.mac1 for v in a.veths} & {v.mac1 for v in b.veths}


@settings(max_examples=60, deadline=None)
@given(clusters())
def test_any_cluster_gets_a_plan_that_holds_every_invariant(cluster):
    check_plan(cluster, plan_topology(cluster, "p0"))


def test_long_node_names_get_distinct_lan_ports_within_15_characters():
    docs = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-with-a-long-name-" + c}} for c in "ab"]
    cluster = load(yaml.safe_dump_all(docs))
    plan = plan_topology(cluster, "z")
    ports = [v.name1 for v in plan.veths if v.target1 == LAN]
    assert ports == ["n0.worker-with-", "n1.worker-with-", "ext"]
    check_plan(cluster, plan)


def test_a_node_named_like_a_pods_namespace_name_is_refused_naming_both():
    docs = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "default.web"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"nodeName": "default.web", "containers": [{"name": "c", "image": "twin/echo"}]}}]
    with pytest.raises(TopologyError, match="twn-x-default.web"):
        plan_topology(load(yaml.safe_dump_all(docs)), "x")


def test_topology_errors_are_twin_errors_so_the_cli_reports_them_without_a_traceback():
    assert issubclass(TopologyError, HarnessError) and issubclass(HarnessError, TwinError)
    assert not issubclass(TopologyError, RuntimeError)


def test_the_plan_module_does_no_io():
    tree = ast.parse(Path(ROOT, "harness/topology/plan.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"os", "subprocess", "socket", "shutil", "pathlib", "mininet", "pyroute2", "time"}
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "open" not in calls


# ------------------------------------------------------------------ L2: apiserver host, backup path, external ARP

SEED_L2 = str(ROOT / "examples/seed/l2.yaml")
API = topodefaults.APISERVER_IP
API32 = ipaddress.IPv4Network(f"{API}/32")


def l2_plan(**kw):
    return plan_topology(load_cluster([SEED_PODS, SEED_L2]), "abc12", l2=True, **kw)


def test_l2_plan_puts_the_apiserver_host_on_the_lan_and_hardens_node_arp():
    from harness.topology.plan import APISERVER

    plan = l2_plan()
    api = plan.namespace(APISERVER)
    assert api.netns == "twn-abc12-apiserver" and api.host_name == "twnabc12-apiserver"
    assert [str(a.ip) for a in api.addresses] == [f"{API}/24"] and api.routes == ()
    assert any(v.target1 == LAN and v.name1 == "api" and v.target2 == APISERVER and v.name2 == "eth0"
               for v in plan.veths)
    assert len(plan.namespace(LAN).bridge_ports) == 3 + 2
    for node in ("k8s-s", "k8s-w1", "k8s-w2"):
        ns = plan.namespace(node)
        # the uplink answers ARP only for its own address and never by proxy: LB IPs are the BPF responder's
        assert {("net.ipv4.conf.ens5.arp_ignore", "1"), ("net.ipv4.conf.ens5.proxy_arp", "0")} <= set(ns.sysctls)
        assert [r.command() for r in ns.routes if r.dst == API32] == [
            f"ip route add {API}/32 dev ens5 metric 10 scope link"]
        assert "mgmt0" not in plan.interfaces(node)
    # the external host ARPs for LB IPs itself: the pool is on-link, no static neighbour for it
    ext = plan.namespace(EXTERNAL)
    assert "ip route add 10.10.200.0/29 dev eth0 scope link" in ext.commands()
    assert ext.neighbours == ()
    assert plan.uplink_mac("k8s-w1") == next(v.mac2 for v in plan.veths if v.target2 == "k8s-w1" and v.target1 == LAN)


def test_backup_path_gives_each_node_a_mgmt0_veth_to_the_apiserver_and_a_metric_100_route():
    from harness.topology.plan import APISERVER, BACKUP_PEER_IP

    plan = l2_plan(backup_path=True)
    assert str(BACKUP_PEER_IP) == "192.168.30.254"
    api = plan.namespace(APISERVER)
    for i, node in enumerate(("k8s-s", "k8s-w1", "k8s-w2")):
        mine = topodefaults.BACKUP_NETWORK.network_address + i + 1
        assert plan.backup_ip(node) == mine
        [v] = [v for v in plan.veths if v.target1 == node and v.name1 == topodefaults.BACKUP_DEV]
        assert (v.target2, v.name2) == (APISERVER, f"bk{i}")
        ns = plan.namespace(node)
        assert "mgmt0" in ns.up and f"ip addr add {mine}/32 dev mgmt0" in ns.commands()
        api_routes = sorted((r.metric, r.dev, r.via) for r in ns.routes if r.dst == API32)
        assert api_routes == [(10, "ens5", None), (100, "mgmt0", BACKUP_PEER_IP)]
        assert f"ip route add {BACKUP_PEER_IP}/32 dev mgmt0 scope link" in ns.commands()
        # the apiserver host routes the node's mgmt address back over that veth
        assert f"ip addr add {BACKUP_PEER_IP}/32 dev bk{i}" in api.commands()
        assert f"ip route add {mine}/32 dev bk{i} scope link" in api.commands()


def test_external_host_settings_become_sysctls_and_garp_ignore_an_arp_filter():
    from twin.model.scenario import ExternalHost

    plan = l2_plan(external=ExternalHost(arp_accept=False, garp="honour", base_reachable_time_s=2.5))
    ext = plan.namespace(EXTERNAL)
    assert {("net.ipv4.conf.eth0.arp_accept", "0"), ("net.ipv4.neigh.eth0.base_reachable_time_ms", "2500")} \
        <= set(ext.sysctls)
    assert ext.nft == ""
    ignore = l2_plan(external=ExternalHost(garp="ignore")).namespace(EXTERNAL)
    assert ("net.ipv4.conf.eth0.arp_accept", "1") in ignore.sysctls
    assert ignore.nft.startswith("table arp twin_garp")
    assert "arp saddr ip . arp daddr ip @garp" in ignore.nft and " drop;" in ignore.nft
    # sender = target pairs for every node-network and pool address, and only those
    assert "10.10.200.3 . 10.10.200.3" in ignore.nft and "192.168.10.250 . 192.168.10.250" in ignore.nft
    assert "10.10.200.8 . " not in ignore.nft
    assert ignore.commands()[-1].startswith("nft -f - <<'EOF'\ntable arp twin_garp")
    with pytest.raises(TopologyError, match="garp must be"):
        l2_plan(external=ExternalHost(garp="sometimes"))


def test_backup_path_without_l2_and_a_node_on_the_apiserver_address_are_refused():
    with pytest.raises(TopologyError, match="backup_path=True needs l2=True"):
        plan_topology(load_cluster([SEED_PODS]), "x", backup_path=True)
    docs = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
             "status": {"addresses": [{"type": "InternalIP", "address": str(API)}]}}]
    cluster = load(yaml.safe_dump_all(docs))
    assert cluster.node("n1").ip == API
    with pytest.raises(TopologyError, match="collides with node n1"):
        plan_topology(cluster, "x", l2=True)
    # without l2 nothing of it appears (existing runs are unchanged)
    plain = seed_plan()
    assert "apiserver" not in plain.targets and not plain.l2
    assert not [c for ns in plain.namespaces for c in ns.commands() if "arp_ignore" in c or "250" in c]


@settings(max_examples=30, deadline=None)
@given(clusters())
def test_any_cluster_gets_an_l2_plan_with_unique_names_and_one_backup_address_per_node(cluster):
    from hypothesis import assume

    from harness.topology.plan import APISERVER

    assume(all(n.name != APISERVER for n in cluster.nodes))
    plan = plan_topology(cluster, "p0", l2=True, backup_path=True)
    assert plan.targets[-1] == APISERVER
    assert len({ns.netns for ns in plan.namespaces}) == len(plan.namespaces)
    ips = [ip for _n, ip in plan.backup_ips]
    assert len(set(ips)) == len(cluster.nodes) and all(ip in topodefaults.BACKUP_NETWORK for ip in ips)
    for t in plan.targets:
        ifs = plan.interfaces(t)
        assert len(set(ifs)) == len(ifs) and all(0 < len(i) <= IFNAMSIZ for i in ifs)
