"""Datapath tier: a node agent owns its node's programs and maps, reconciles
published changes in place, reports what it did (and what failed), keeps
reconcile proportional to the change, and removes everything on close."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

import pytest
import yaml

from conftest import require_kernel
from socklb_env import make_cgroup, remove_cgroup
from topology import Topology
from twin.model.build import build_cluster
from twin.model.yamlsrc import Source

pytestmark = pytest.mark.datapath

NODE = "k8s-w1"
PODS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec: {{nodeName: {NODE}, containers: [{{name: c, image: twin/echo}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec: {{nodeName: {NODE}, containers: [{{name: c, image: twin/echo, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: other, labels: {{app: other}}}}
spec: {{nodeName: {NODE}, containers: [{{name: c, image: twin/echo, ports: [{{containerPort: 8080}}]}}]}}
"""
L4 = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "allow"},
      "spec": {"endpointSelector": {"matchLabels": {"app": "server"}},
               "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                            "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}}
L7 = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "allow"},
      "spec": {"endpointSelector": {"matchLabels": {"app": "server"}},
               "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                            "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                         "rules": {"http": [{"method": "GET", "path": "/"}]}}]}]}}


def service(i: int, app: str = "server") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}"},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}


def cluster(*docs: dict, services: int = 0, other_services: int = 0):
    objs = list(docs) + [service(i) for i in range(services)] + \
        [service(services + i, "other") for i in range(other_services)]
    srcs = [Source("<pods>", PODS)] + ([Source("<objects>", yaml.safe_dump_all(objs))] if objs else [])
    return build_cluster(srcs)


@pytest.fixture
def node():
    """A node netns with the three pods' devices, and a cgroup for the node."""
    require_kernel()
    base = cluster()
    topo = Topology()
    cg = None
    try:
        topo.create_node()
        lxc = {p.key: topo.add_pod(p.name, str(p.ip)).lxc for p in base.pods}
        cg = make_cgroup()
        yield topo, lxc, cg
    finally:
        topo.destroy()
        if cg is not None:
            remove_cgroup(cg)


def start_agent(node, socket_lb: bool = True):
    from datapath.agent import NodeAgent, NodeHost, Store

    topo, lxc, cg = node
    store = Store()
    agent = NodeAgent(NodeHost(NODE, topo.node_netns, lxc.__getitem__, cg), store, socket_lb=socket_lb)
    agent.start()
    return store, agent


def prog_ids(agent) -> dict[str, int]:
    from datapath.cgroup import prog_id

    dp = agent.datapath.program
    out = {"from_container": prog_id(dp.from_container.fd), "to_container": prog_id(dp.to_container.fd)}
    out.update({h.name: prog_id(fn.fd) for h, fn in agent.socklb.program.functions.items()})
    return out


def test_published_policy_change_is_reconciled_in_place_without_reloading_programs(node):
    store, agent = start_agent(node)
    try:
        first = agent.wait_for(store.publish(cluster(services=1)))
        assert first.ok, first.error
        assert first.changes["added"] > 0
        before = prog_ids(agent)
        policy_before = agent.datapath.policy_entries()

        report = agent.wait_for(store.publish(cluster(L4, services=1)))

        assert report.ok, report.error
        assert report.results["policy"].changed, "the policy reconciler must have changed the policy map"
        assert not report.results["endpoints"].changed and not report.results["services"].changed
        assert agent.datapath.policy_entries() != policy_before
        assert prog_ids(agent) == before, "a policy change must not reload or replace any program"
        assert sorted(agent.datapath.attached) == sorted(node[1].values())
    finally:
        agent.close()


def test_reconcile_error_is_reported_and_a_later_good_version_recovers(node):
    store, agent = start_agent(node, socket_lb=False)
    try:
        assert agent.wait_for(store.publish(cluster())).ok
        bad = agent.wait_for(store.publish(cluster(L7)))
        assert not bad.ok
        assert bad.error.startswith("policy: ") and "cannot enforce" in bad.error, bad.error
        good = agent.wait_for(store.publish(cluster(L4)))
        assert good.ok, good.error
        assert good.results["policy"].changed
    finally:
        agent.close()


def test_endpoint_state_change_rewrites_only_the_services_selecting_that_pod(node):
    store, agent = start_agent(node)
    try:
        assert agent.wait_for(store.publish(cluster(services=40, other_services=2))).ok
        writes, before = agent.socklb.map_writes, agent.socklb.services_entries()

        report = agent.wait_for(store.set_endpoint_state("default/other", "not-ready"))

        assert report.ok, report.error
        assert report.changed == {"endpoint-states"}
        assert set(report.results) == {"services"}, "only the services reconciler is concerned"
        assert agent.socklb.last_frontends_compiled == 2, "only the two services selecting the pod are compiled"
        after = agent.socklb.services_entries()
        changed = {k for k in set(before.services) | set(after.services)
                   if before.services.get(k) != after.services.get(k)}
        assert len(changed) == 4  # two masters (count 1 -> 0) and their two slots
        assert agent.socklb.map_writes - writes == 4 + 1  # + the backend that left every slot
    finally:
        agent.close()


def test_adding_a_service_through_the_store_compiles_and_writes_only_that_service(node):
    store, agent = start_agent(node)
    services = next(r for r in agent.reconcilers if r.name == "services")
    try:
        assert agent.wait_for(store.publish(cluster(services=30))).ok
        assert services.last_path == "full"
        writes = agent.socklb.map_writes

        report = agent.wait_for(store.publish(cluster(services=31)))

        assert report.ok, report.error
        assert services.last_path == "services"
        assert agent.socklb.last_frontends_compiled == 1
        assert agent.socklb.map_writes - writes == 3  # rev_nat, master, one slot (the backend exists)
        report = agent.wait_for(store.publish(cluster(L4, services=31)))
        assert report.ok and services.last_path == "full", "a policy change too: the whole table is diffed"
        assert agent.socklb.last_frontends_compiled == 0
    finally:
        agent.close()


@pytest.mark.parametrize("existing", [100, 2000])
def test_adding_one_service_touches_the_same_few_map_entries_whatever_exists(existing):
    require_kernel()
    import ipaddress

    from twin.model.enums import Protocol
    from twin.semantics.tables import LBBackend, LBService, LBTable

    from datapath.socklb import NodeSocketLB

    def svc(i: int) -> LBService:
        vip = ipaddress.IPv4Address("10.96.0.0") + 16 + i
        bes = tuple(LBBackend(ipaddress.IPv4Address("10.245.0.0") + 1 + 2 * i + j, 8080, Protocol.TCP, f"p{i}-{j}")
                    for j in range(2))
        return LBService(f"bench/svc{i}", vip, 80, Protocol.TCP, "ClusterIP", bes)

    svcs = [svc(i) for i in range(existing)]
    with NodeSocketLB() as lb:
        lb.set_services(LBTable(tuple(svcs)))
        assert lb.last_frontends_compiled == existing
        writes = lb.map_writes
        lb.set_services(LBTable(tuple(svcs + [svc(existing)])))
        assert lb.last_frontends_compiled == 1
        assert lb.map_writes - writes == 6  # 2 backends, 1 rev_nat, master + 2 slots
        writes = lb.map_writes
        new = svc(existing + 1)
        lb.update_services({new.service: (new,)})
        assert lb.last_frontends_compiled == 1
        assert lb.map_writes - writes == 6
        entries = lb.services_entries()
        assert len(entries.services) == 3 * (existing + 2) and len(entries.backends) == 2 * (existing + 2)


# -- cleanup --------------------------------------------------------------------------------

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_GET_FD_BY_ID, _BPF_MAP_GET_FD_BY_ID = 13, 14


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


def kernel_has(cmd: int, ident: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _IdAttr(id=ident)
    fd = libc.syscall(_NR_BPF[platform.machine()], cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return True
    assert ctypes.get_errno() == errno.ENOENT, os.strerror(ctypes.get_errno())
    return False


def test_close_removes_every_kernel_object_the_agent_created(node):
    import json

    from datapath.cgroup import prog_id, query_prog_ids
    from datapath.loader import SOCK_HOOKS

    topo, lxc, cg = node
    store, agent = start_agent(node)
    assert agent.wait_for(store.publish(cluster(L4, services=2))).ok
    progs = set(prog_ids(agent).values())
    maps = {prog_id(agent.datapath.program.table(n).map_fd) for n in ("policy", "ipcache", "endpoints", "conntrack")}
    maps |= {prog_id(agent.socklb.program.table(n).map_fd) for n in ("lb4_services", "lb4_backends", "lb4_reverse_nat")}
    assert all(kernel_has(_BPF_PROG_GET_FD_BY_ID, i) for i in progs)

    agent.close()

    for dev in lxc.values():
        for where in ("ingress", "egress"):
            out = json.loads(topo.node("tc", "-j", "filter", "show", "dev", dev, where).stdout or "[]")
            assert out == [], f"{dev} {where} still has filters after close"
    for hook in SOCK_HOOKS:
        assert query_prog_ids(cg, hook.attach_type) == [], f"{hook.name} still attached to the node cgroup"
    deadline = time.monotonic() + 5  # the kernel frees programs and maps after an RCU grace period
    while time.monotonic() < deadline and (any(kernel_has(_BPF_PROG_GET_FD_BY_ID, i) for i in progs)
                                           or any(kernel_has(_BPF_MAP_GET_FD_BY_ID, i) for i in maps)):
        time.sleep(0.05)
    assert not [i for i in progs if kernel_has(_BPF_PROG_GET_FD_BY_ID, i)], "programs still loaded after close"
    assert not [i for i in maps if kernel_has(_BPF_MAP_GET_FD_BY_ID, i)], "maps still exist after close"
    assert agent.datapath is None and agent.socklb is None
    agent.close()  # idempotent


def test_a_failed_lb_write_is_repaired_in_full_by_the_next_reconcile():
    require_kernel()
    import ipaddress

    from twin.model.enums import Protocol
    from twin.semantics.tables import LBBackend, LBService, LBTable

    from datapath.compile_lb import compile_lb
    from datapath.errors import MapError
    from datapath.maps import lb_services
    from datapath.socklb import NodeSocketLB

    def svc(i: int, *bes: int) -> LBService:
        return LBService(f"ns/s{i}", ipaddress.IPv4Address("10.96.0.10") + i, 80, Protocol.TCP, "ClusterIP",
                         tuple(LBBackend(ipaddress.IPv4Address("10.200.0.0") + b, 8080, Protocol.TCP, f"ns/p{b}")
                               for b in bes))

    first = LBTable((svc(0, 1, 2), svc(1, 3)))
    second = LBTable((svc(0, 2, 4, 5), svc(2, 6)))
    third = LBTable((svc(0, 2),))  # the failed attempt's new entries must not outlive it
    with NodeSocketLB() as lb:
        lb.set_services(first)
        services = lb._cached_map(lb_services.CODEC)  # inject a fault under the agent's cache
        real_update = services.backing.update

        def failing_update(key, value):
            if key.is_master:
                raise MapError("injected: lb4_services full")
            real_update(key, value)

        services.backing.update = failing_update
        with pytest.raises(MapError, match="injected"):
            lb.set_services(second)
        services.backing.update = real_update

        lb.set_services(third)

        want = compile_lb(third, lb.ids)
        got = lb.services_entries()
        assert (dict(got.services), dict(got.backends), dict(got.revnat)) == \
            (dict(want.services), dict(want.backends), dict(want.revnat))
        assert lb.set_services(third).changed is False
