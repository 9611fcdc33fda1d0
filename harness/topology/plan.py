"""The real topology as a plan: every name, address and command, computed without I/O.

:func:`plan_topology` turns a :class:`~twin.model.objects.Cluster` and a run id
into a :class:`TopologyPlan` of frozen records; :mod:`harness.topology.build`
only applies it (namespaces, veths, then one ``sh -e`` script per namespace).
Nothing here needs root, so the layout is tested in the pure tier.

Layout (every box is a network namespace; there is no OpenFlow controller and no OVS)::

                       LAN namespace: bridge br0
          ┌──────────────┬──────┴───────┬──────────────┐
        n0.k8s-s      n1.k8s-w1      n2.k8s-w2        ext          (bridge ports)
          │              │              │              │
        ens5           ens5           ens5           eth0         192.168.10.x/24
     node k8s-s     node k8s-w1    node k8s-w2    external host   .200, HTTP on :80
     cilium_host    (router IP /32; ip_forward=1; routes to the other nodes' pod CIDRs)
     lxc<sha1>…      one per local pod: proxy_arp=1, a /32 route to the pod
          │
        eth0  pod /32, default via the router IP (on-link)

``cilium_host`` is a veth paired with ``cilium_net``, as in Cilium (this
kernel has no ``dummy`` driver).  By default pod and node also get static
neighbour entries for each other, so no ARP crosses an ``lxc`` device.
Every veth lives in two of the run's namespaces: nothing is placed in the
root namespace.  Names shared with the rest of the machine carry the run id
(``/run/netns/twn-<run>-<target>``, ``/sys/fs/cgroup/unified/twn-<run>``), so
:mod:`harness.cleanup` can find what a run left.
"""
from __future__ import annotations

import hashlib
import ipaddress
import sys
from dataclasses import dataclass
from typing import Iterable

from harness.cleanup import CGROUP_PREFIX, CGROUP_ROOT, NETNS_DIR, NETNS_PREFIX
from harness.errors import TopologyError
from twin.model import apps
from twin.model import topology as topodefaults
from twin.model.apps import app_of_pod
from twin.model.objects import Cluster

__all__ = [
    "EXTERNAL", "LAN", "BRIDGE", "ROUTER_DEV", "ROUTER_PEER", "IFNAMSIZ", "lxc_name", "mac_address",
    "Address", "Route", "Neighbour", "Veth", "NamespacePlan", "ServerPlan", "TopologyPlan", "plan_topology",
    "server_argv",
]

EXTERNAL = "external"
LAN = "lan"
BRIDGE = "br0"
ROUTER_DEV = "cilium_host"  # a veth whose peer is cilium_net, as in Cilium (no dummy driver here)
ROUTER_PEER = "cilium_net"
IFNAMSIZ = 15  # longest interface name the kernel accepts
NODE, POD = "node", "pod"
_LOCAL_DEVICE_ADD = {
    BRIDGE: f"ip link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
    ROUTER_DEV: f"ip link add {ROUTER_DEV} type veth peer name {ROUTER_PEER}",
}
_COMMON_SYSCTLS = {  # IPv6 off: the seed lab is IPv4-only; keeps ND/MLD noise off the BPF hooks
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def lxc_name(pod_key: str) -> str:
    """Node-side name of a pod's veth: ``lxc`` + 11 hex chars of sha1(ns/name)."""
    return "lxc" + hashlib.sha1(pod_key.encode()).hexdigest()[:11]


def mac_address(seed: str) -> str:
    """A stable, locally administered unicast MAC for a named interface."""
    h = hashlib.sha1(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02 | (h[0] & 0xFC), *h[1:6]))


@dataclass(frozen=True)
class Address:
    ip: ipaddress.IPv4Interface
    dev: str

    def command(self) -> str:
        return f"ip addr add {self.ip} dev {self.dev}"


@dataclass(frozen=True)
class Route:
    """``dst`` via the gateway ``via`` out of ``dev``; without ``via`` the destination is on the link."""

    dst: ipaddress.IPv4Network
    dev: str
    via: ipaddress.IPv4Address | None = None
    scope_link: bool = False

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0

    def command(self) -> str:
        line = f"ip route add {'default' if self.is_default else self.dst}"
        if self.via is not None:
            line += f" via {self.via}"
        line += f" dev {self.dev}"
        return line + (" scope link" if self.scope_link else "")


@dataclass(frozen=True)
class Neighbour:
    """A permanent ARP entry: ``ip`` is at ``mac`` behind ``dev``."""

    ip: ipaddress.IPv4Address
    mac: str
    dev: str

    def command(self) -> str:
        return f"ip neigh replace {self.ip} lladdr {self.mac} dev {self.dev} nud permanent"


@dataclass(frozen=True)
class Veth:
    """A veth pair: ``name1`` (``mac1``) in ``target1``'s namespace, its peer in ``target2``'s.

    It is created inside ``target1``'s namespace with the peer moved straight into ``target2``'s.
    """

    target1: str
    name1: str
    mac1: str
    target2: str
    name2: str
    mac2: str


@dataclass(frozen=True)
class NamespacePlan:
    """One namespace: what it is for and how it is configured once its veths exist."""

    target: str            # pod key, node name, "lan" or "external"
    kind: str              # "lan", "node", "pod" or "external"
    netns: str             # name under /run/netns
    host_name: str         # name of its Mininet host (its shell's command line carries it)
    node: str | None       # the node it belongs to (a node's own name, a pod's node)
    sysctls: tuple[tuple[str, str], ...]
    local_devices: tuple[str, ...]     # devices created inside this namespace (br0, cilium_host)
    up: tuple[str, ...]                # interfaces to set up, in order
    bridge_ports: tuple[str, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    neighbours: tuple[Neighbour, ...]

    @property
    def path(self) -> str:
        """``/run/netns/twn-<run>-<name>``: usable by setns(2), ``ip netns`` and pyroute2."""
        return str(NETNS_DIR / self.netns)

    def commands(self) -> tuple[str, ...]:
        """The shell lines (``sh -e``) that configure this namespace, in order."""
        out = ["sysctl -qw " + " ".join(f"{k}={v}" for k, v in self.sysctls), "ip link set lo up"]
        out += [_LOCAL_DEVICE_ADD[dev] for dev in self.local_devices]
        for dev in self.up:
            out.append(f"ip link set {dev} up" + (f" master {BRIDGE}" if dev in self.bridge_ports else ""))
        out += [a.command() for a in self.addresses]
        out += [r.command() for r in self.routes]
        out += [n.command() for n in self.neighbours]
        return tuple(out)


@dataclass(frozen=True)
class ServerPlan:
    """An app server started in ``target``'s namespace (its argv runs under mnexec)."""

    target: str
    app: str
    hostname: str
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]
    ips: tuple[str, ...]

    @property
    def argv(self) -> tuple[str, ...]:
        return server_argv(self.app, self.hostname, self.tcp_ports, self.udp_ports, self.ips)

    @property
    def log_name(self) -> str:
        return self.target.replace("/", ".") + ".log"


def server_argv(app: str, hostname: str, tcp: Iterable[int], udp: Iterable[int],
                ips: Iterable[str]) -> tuple[str, ...]:
    argv = [sys.executable, "-m", "harness.apps.server", "--app", app, "--hostname", hostname]
    for port in tcp:
        argv += ["--tcp", str(port)]
    for port in udp:
        argv += ["--udp", str(port)]
    for ip in ips:
        argv += ["--ip", str(ip)]
    return tuple(argv)


@dataclass(frozen=True)
class TopologyPlan:
    """Everything the real topology of one run consists of, in creation order."""

    run_id: str
    namespaces: tuple[NamespacePlan, ...]   # LAN, nodes, pods, external
    veths: tuple[Veth, ...]                 # LAN ports, then pods' lxc pairs
    servers: tuple[ServerPlan, ...]         # pods with an app, then the external host
    external_ip: ipaddress.IPv4Address
    cgroup_dir: str                         # /sys/fs/cgroup/unified/twn-<run> (made by the real backend)

    @property
    def prefix(self) -> str:
        """Prefix of every namespace name this run uses."""
        return f"{NETNS_PREFIX}{self.run_id}-"

    def namespace(self, target: str) -> NamespacePlan:
        for ns in self.namespaces:
            if ns.target == target:
                return ns
        raise TopologyError(f"run {self.run_id}: no namespace for {target!r} in the plan")

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(ns.target for ns in self.namespaces)

    def node_cgroup(self, node: str) -> str:
        return f"{self.cgroup_dir}/{node}"

    def interfaces(self, target: str) -> tuple[str, ...]:
        """Every interface name in ``target``'s namespace (veth ends and local devices)."""
        names = [v.name1 for v in self.veths if v.target1 == target]
        names += [v.name2 for v in self.veths if v.target2 == target]
        for dev in self.namespace(target).local_devices:
            names += [dev, ROUTER_PEER] if dev == ROUTER_DEV else [dev]
        return tuple(names)


def plan_topology(cluster: Cluster, run_id: str, *, static_neighbours: bool = True,
                  start_apps: bool = True,
                  external_ip: ipaddress.IPv4Address = topodefaults.EXTERNAL_HOST_IP) -> TopologyPlan:
    """The plan for ``cluster``; raises :class:`TopologyError` naming the object it cannot place."""
    c = cluster
    prefix = f"{NETNS_PREFIX}{run_id}-"
    nodes = {n.name: n for n in c.nodes}
    _check(c, run_id, external_ip)

    def ns_name(target: str) -> str:
        return prefix + target.replace("/", ".")

    def host_name(target: str) -> str:
        return f"twn{run_id}-{target.replace('/', '.')}"

    def veth(t1: str, n1: str, t2: str, n2: str) -> Veth:
        seed = f"{run_id}/{host_name(t1)}/{n1}"
        return Veth(t1, n1, mac_address(seed + "/1"), t2, n2, mac_address(seed + "/2"))

    lan_ports = [veth(LAN, f"n{i}.{n.name}"[:IFNAMSIZ], n.name, n.uplink) for i, n in enumerate(c.nodes)]
    lan_ports.append(veth(LAN, "ext", EXTERNAL, "eth0"))
    pod_veths = {p.key: veth(p.node, lxc_name(p.key), p.key, "eth0") for p in c.pods}
    common = tuple(_COMMON_SYSCTLS.items())
    plen = c.node_network.prefixlen

    namespaces = [NamespacePlan(
        LAN, LAN, ns_name(LAN), host_name(LAN), None, common,
        (BRIDGE,),
        (BRIDGE, *(v.name1 for v in lan_ports)), tuple(v.name1 for v in lan_ports), (), (), ())]

    for node in c.nodes:
        local = [p for p in c.pods if p.node == node.name]
        router = topodefaults.router_ip(node.pod_cidr)
        sysctls = common + (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                            ("net.ipv4.conf.default.rp_filter", "0"))
        for p in local:
            lxc = pod_veths[p.key].name1
            sysctls += ((f"net.ipv4.conf.{lxc}.proxy_arp", "1"), (f"net.ipv4.conf.{lxc}.rp_filter", "0"))
        routes = [Route(ipaddress.IPv4Network(f"{p.ip}/32"), pod_veths[p.key].name1) for p in local]
        routes += [Route(o.pod_cidr, node.uplink, o.ip) for o in c.nodes if o.name != node.name]
        neigh = [Neighbour(p.ip, pod_veths[p.key].mac2, pod_veths[p.key].name1) for p in local] \
            if static_neighbours else []
        namespaces.append(NamespacePlan(
            node.name, NODE, ns_name(node.name), host_name(node.name), node.name, sysctls,
            (ROUTER_DEV,),
            (node.uplink, ROUTER_PEER, ROUTER_DEV, *(pod_veths[p.key].name1 for p in local)), (),
            (Address(ipaddress.IPv4Interface(f"{node.ip}/{plen}"), node.uplink),
             Address(ipaddress.IPv4Interface(f"{router}/32"), ROUTER_DEV)),
            tuple(routes), tuple(neigh)))

    for p in c.pods:
        router = topodefaults.router_ip(nodes[p.node].pod_cidr)
        v = pod_veths[p.key]
        neigh = (Neighbour(router, v.mac1, "eth0"),) if static_neighbours else ()
        namespaces.append(NamespacePlan(
            p.key, POD, ns_name(p.key), host_name(p.key), p.node, common, (), ("eth0",), (),
            (Address(ipaddress.IPv4Interface(f"{p.ip}/32"), "eth0"),),
            (Route(ipaddress.IPv4Network(f"{router}/32"), "eth0", scope_link=True),
             Route(ipaddress.IPv4Network("0.0.0.0/0"), "eth0", router)),
            neigh))

    namespaces.append(NamespacePlan(
        EXTERNAL, EXTERNAL, ns_name(EXTERNAL), host_name(EXTERNAL), None, common, (), ("eth0",), (),
        (Address(ipaddress.IPv4Interface(f"{external_ip}/{plen}"), "eth0"),),
        tuple(Route(n.pod_cidr, "eth0", n.ip) for n in c.nodes), ()))

    servers: list[ServerPlan] = []
    if start_apps:
        for p in c.pods:
            app = app_of_pod(p)
            if app.name != "none":
                servers.append(ServerPlan(p.key, app.name, p.name, tuple(app.tcp_ports), tuple(app.udp_ports),
                                          (str(p.ip),)))
        ext = apps.EXTERNAL_APP
        servers.append(ServerPlan(EXTERNAL, ext.name, apps.EXTERNAL_HOSTNAME, tuple(ext.tcp_ports),
                                  tuple(ext.udp_ports), (str(external_ip),)))

    plan = TopologyPlan(run_id, tuple(namespaces), tuple(lan_ports) + tuple(pod_veths.values()),
                        tuple(servers), external_ip, str(CGROUP_ROOT / f"{CGROUP_PREFIX}{run_id}"))
    _check_names(plan)
    return plan


def _check(c: Cluster, run_id: str, external_ip: ipaddress.IPv4Address) -> None:
    nodes = {n.name for n in c.nodes}
    for n in c.nodes:
        if not 0 < len(n.uplink) <= IFNAMSIZ:
            raise TopologyError(f"node {n.name}: uplink name {n.uplink!r} must be 1-{IFNAMSIZ} characters")
        if n.ip not in c.node_network:
            raise TopologyError(f"node {n.name}: IP {n.ip} is outside the node network {c.node_network}")
    if external_ip not in c.node_network:
        raise TopologyError(f"external host {external_ip} is outside the node network {c.node_network}")
    for p in c.pods:
        if p.node not in nodes:
            raise TopologyError(f"pod {p.key}: node {p.node!r} is not in the cluster")


def _check_names(plan: TopologyPlan) -> None:
    names = [ns.netns for ns in plan.namespaces]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TopologyError(f"run {plan.run_id}: namespace names collide: {dup} (a node named like a pod?)")
    for ns in plan.namespaces:
        ifs = plan.interfaces(ns.target)
        same = sorted({i for i in ifs if ifs.count(i) > 1})
        if same:
            raise TopologyError(f"{ns.target}: interface names collide: {same} (two pods hash to one lxc name?)")
        long = [i for i in ifs if len(i) > IFNAMSIZ]
        if long:
            raise TopologyError(f"{ns.target}: interface names longer than {IFNAMSIZ} characters: {long}")
