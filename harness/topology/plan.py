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

With ``l2=True`` (the L2-announcement scenarios) the LAN gets one more port,
the **apiserver** host (``192.168.10.250/24`` on its ``eth0``: etcd and the
Lease API run there, :mod:`harness.apiserver`), every node's uplink answers ARP
only for its own address (``arp_ignore=1``, ``proxy_arp=0``: nothing but the
BPF responder answers for LB IPs), each node reaches ``192.168.10.250/32``
over its uplink (metric 10), and the external host routes every LB-IPAM pool
on-link (it ARPs for LB IPs itself).  With ``backup_path=True`` each node i
also has ``mgmt0`` (``192.168.30.(i+1)/32``), a veth straight to the
apiserver host's ``bk<i>`` (``192.168.30.254/32``), and a second route
``192.168.10.250/32 via 192.168.30.254 dev mgmt0 metric 100``: the API stays
reachable when the uplink is down (cilium#35507).  ``external`` (a scenario's
:class:`~twin.model.scenario.ExternalHost`) sets the external host's
``arp_accept`` and ``base_reachable_time_ms`` on ``eth0``; ``garp: ignore``
adds an nft ``arp`` input rule there dropping ARP whose sender IP equals its
target IP.  nft cannot compare two packet fields and this kernel has no tc
``gact`` action, so the rule matches a set of ``X . X`` pairs listing every
address of the node network and of the cluster's pools
(:meth:`~harness.topology.RealTopology.external_add_pool` adds pools that
appear later).

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
from twin.model.objects import Cluster, LBIPPool
from twin.model.scenario import ExternalHost

__all__ = [
    "EXTERNAL", "LAN", "APISERVER", "BACKUP_PEER_IP", "GARP_TABLE", "PARTITION_TABLE", "BRIDGE", "ROUTER_DEV",
    "ROUTER_PEER", "IFNAMSIZ", "lxc_name", "mac_address", "pool_networks", "garp_filter",
    "Address", "Route", "Neighbour", "Veth", "NamespacePlan", "ServerPlan", "TopologyPlan", "plan_topology",
    "server_argv",
]

EXTERNAL = "external"
LAN = "lan"
APISERVER = "apiserver"
#: the apiserver host's end of every backup path (each node's mgmt0 peer)
BACKUP_PEER_IP = topodefaults.BACKUP_NETWORK.network_address + 254
GARP_TABLE = "twin_garp"     # nft arp table in the external namespace (garp: ignore)
PARTITION_TABLE = "twin_partition"  # nft ip table in a node cut off from the API server
#: route metrics to the API server host: over the LAN first, then the backup path
API_LAN_METRIC, API_BACKUP_METRIC = 10, 100
_GARP_MAX_ADDRESSES = 65536
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
    metric: int | None = None

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0

    def command(self) -> str:
        line = f"ip route add {'default' if self.is_default else self.dst}"
        if self.via is not None:
            line += f" via {self.via}"
        line += f" dev {self.dev}"
        if self.metric is not None:
            line += f" metric {self.metric}"
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
    nft: str = ""          # an nft ruleset (``nft -f -``) loaded last

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
        if self.nft:
            out.append(f"nft -f - <<'EOF'\n{self.nft}\nEOF")
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
    l2: bool = False                        # the apiserver host exists (and ARP hardening on uplinks)
    backup_path: bool = False               # nodes' mgmt0 veths to the apiserver host
    backup_ips: tuple[tuple[str, ipaddress.IPv4Address], ...] = ()  # (node, its mgmt0 address)

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

    def uplink_mac(self, node: str) -> str:
        """MAC of ``node``'s LAN interface (its uplink, ``ens5``)."""
        for v in self.veths:
            if v.target1 == LAN and v.target2 == node:
                return v.mac2
        raise TopologyError(f"run {self.run_id}: node {node!r} has no LAN port in the plan")

    def backup_ip(self, node: str) -> ipaddress.IPv4Address:
        for n, ip in self.backup_ips:
            if n == node:
                return ip
        raise TopologyError(f"run {self.run_id}: node {node!r} has no backup path (backup_path=False?)")

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
                  external_ip: ipaddress.IPv4Address = topodefaults.EXTERNAL_HOST_IP,
                  l2: bool = False, backup_path: bool = False,
                  external: ExternalHost | None = None) -> TopologyPlan:
    """The plan for ``cluster``; raises :class:`TopologyError` naming the object it cannot place.

    ``l2`` adds the apiserver host, ``backup_path`` (needs ``l2``) the nodes'
    ``mgmt0`` paths to it, ``external`` the external host's ARP settings.
    """
    c = cluster
    if backup_path and not l2:
        raise TopologyError("backup_path=True needs l2=True (the backup path leads to the apiserver host)")
    prefix = f"{NETNS_PREFIX}{run_id}-"
    nodes = {n.name: n for n in c.nodes}
    _check(c, run_id, external_ip)
    if l2:
        _check_l2(c, external_ip, backup_path)

    def ns_name(target: str) -> str:
        return prefix + target.replace("/", ".")

    def host_name(target: str) -> str:
        return f"twn{run_id}-{target.replace('/', '.')}"

    def veth(t1: str, n1: str, t2: str, n2: str) -> Veth:
        seed = f"{run_id}/{host_name(t1)}/{n1}"
        return Veth(t1, n1, mac_address(seed + "/1"), t2, n2, mac_address(seed + "/2"))

    lan_ports = [veth(LAN, f"n{i}.{n.name}"[:IFNAMSIZ], n.name, n.uplink) for i, n in enumerate(c.nodes)]
    lan_ports.append(veth(LAN, "ext", EXTERNAL, "eth0"))
    if l2:
        lan_ports.append(veth(LAN, "api", APISERVER, "eth0"))
    backup = {n.name: veth(n.name, topodefaults.BACKUP_DEV, APISERVER, f"bk{i}")
              for i, n in enumerate(c.nodes)} if backup_path else {}
    backup_ips = {n.name: topodefaults.BACKUP_NETWORK.network_address + i + 1 for i, n in enumerate(c.nodes)} \
        if backup_path else {}
    api_host = ipaddress.IPv4Network(f"{topodefaults.APISERVER_IP}/32")
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
        if l2:  # the uplink answers ARP for its own address only: LB IPs are the BPF responder's
            sysctls += ((f"net.ipv4.conf.{node.uplink}.arp_ignore", "1"),
                        (f"net.ipv4.conf.{node.uplink}.proxy_arp", "0"))
        routes = [Route(ipaddress.IPv4Network(f"{p.ip}/32"), pod_veths[p.key].name1) for p in local]
        routes += [Route(o.pod_cidr, node.uplink, o.ip) for o in c.nodes if o.name != node.name]
        addrs = [Address(ipaddress.IPv4Interface(f"{node.ip}/{plen}"), node.uplink),
                 Address(ipaddress.IPv4Interface(f"{router}/32"), ROUTER_DEV)]
        up_extra: tuple[str, ...] = ()
        if l2:
            routes.append(Route(api_host, node.uplink, metric=API_LAN_METRIC, scope_link=True))
        if backup_path:
            dev = topodefaults.BACKUP_DEV
            up_extra = (dev,)
            addrs.append(Address(ipaddress.IPv4Interface(f"{backup_ips[node.name]}/32"), dev))
            routes += [Route(ipaddress.IPv4Network(f"{BACKUP_PEER_IP}/32"), dev, scope_link=True),
                       Route(api_host, dev, BACKUP_PEER_IP, metric=API_BACKUP_METRIC)]
        neigh = [Neighbour(p.ip, pod_veths[p.key].mac2, pod_veths[p.key].name1) for p in local] \
            if static_neighbours else []
        namespaces.append(NamespacePlan(
            node.name, NODE, ns_name(node.name), host_name(node.name), node.name, sysctls,
            (ROUTER_DEV,),
            (node.uplink, ROUTER_PEER, ROUTER_DEV, *(pod_veths[p.key].name1 for p in local), *up_extra), (),
            tuple(addrs), tuple(routes), tuple(neigh)))

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

    ext_sysctls = common
    ext_routes = [Route(n.pod_cidr, "eth0", n.ip) for n in c.nodes]
    ext_nft = ""
    if l2:  # LB IPs are on the LAN: the external host ARPs for them
        ext_routes += [Route(net, "eth0", scope_link=True) for net in pool_networks(c.pools)]
    if external is not None:
        ext_sysctls += (("net.ipv4.conf.eth0.arp_accept", "1" if external.arp_accept else "0"),
                        ("net.ipv4.neigh.eth0.base_reachable_time_ms",
                         str(int(round(external.base_reachable_time_s * 1000)))))
        if external.garp == "ignore":
            ext_nft = garp_filter(c.node_network, pool_networks(c.pools))
        elif external.garp != "honour":
            raise TopologyError(f"external host: garp must be 'honour' or 'ignore', not {external.garp!r}")
    namespaces.append(NamespacePlan(
        EXTERNAL, EXTERNAL, ns_name(EXTERNAL), host_name(EXTERNAL), None, ext_sysctls, (), ("eth0",), (),
        (Address(ipaddress.IPv4Interface(f"{external_ip}/{plen}"), "eth0"),),
        tuple(ext_routes), (), ext_nft))

    if l2:
        bk = [backup[n.name] for n in c.nodes] if backup_path else []
        namespaces.append(NamespacePlan(
            APISERVER, APISERVER, ns_name(APISERVER), host_name(APISERVER), None,
            common + (("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")), (),
            ("eth0", *(v.name2 for v in bk)), (),
            (Address(ipaddress.IPv4Interface(f"{topodefaults.APISERVER_IP}/{plen}"), "eth0"),
             *(Address(ipaddress.IPv4Interface(f"{BACKUP_PEER_IP}/32"), v.name2) for v in bk)),
            tuple(Route(ipaddress.IPv4Network(f"{backup_ips[v.target1]}/32"), v.name2, scope_link=True)
                  for v in bk), ()))

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

    plan = TopologyPlan(run_id, tuple(namespaces),
                        tuple(lan_ports) + tuple(pod_veths.values()) + tuple(backup.values()),
                        tuple(servers), external_ip, str(CGROUP_ROOT / f"{CGROUP_PREFIX}{run_id}"),
                        l2, backup_path, tuple(backup_ips.items()))
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


def pool_networks(pools: Iterable[LBIPPool]) -> tuple[ipaddress.IPv4Network, ...]:
    """Every LB-IPAM pool block as networks (``start``-``stop`` ranges summarised), sorted, merged."""
    nets: list[ipaddress.IPv4Network] = []
    for pool in pools:
        for b in pool.blocks:
            if b.cidr is not None:
                nets.append(b.cidr)
            elif b.start is not None:
                nets += ipaddress.summarize_address_range(b.start, b.stop or b.start)
    return tuple(ipaddress.collapse_addresses(nets))


def garp_filter(node_network: ipaddress.IPv4Network, pools: Iterable[ipaddress.IPv4Network]) -> str:
    """An nft ``arp`` table dropping, on input, ARP whose sender IP equals its target IP (gratuitous
    ARP) for every address of the node network and the pools.  nft cannot compare two packet fields,
    so the pairs are listed in a concatenated set."""
    nets = list(ipaddress.collapse_addresses([node_network, *pools]))
    count = sum(n.num_addresses for n in nets)
    if count > _GARP_MAX_ADDRESSES:
        raise TopologyError(f"external host garp: ignore: {count} addresses in the node network and pools "
                            f"(at most {_GARP_MAX_ADDRESSES} can be listed in the ARP filter)")
    elems = ", ".join(f"{a} . {a}" for n in nets for a in n)
    return (f"table arp {GARP_TABLE} {{\n"
            f"  set garp {{ type ipv4_addr . ipv4_addr; elements = {{ {elems} }} }}\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; "
            f"arp saddr ip . arp daddr ip @garp counter drop; }}\n}}")


def _check_l2(c: Cluster, external_ip: ipaddress.IPv4Address, backup_path: bool) -> None:
    api = topodefaults.APISERVER_IP
    if api not in c.node_network:
        raise TopologyError(f"API server host {api} is outside the node network {c.node_network}")
    taken = {n.ip: f"node {n.name}" for n in c.nodes} | {external_ip: "the external host"}
    if api in taken:
        raise TopologyError(f"API server host {api} collides with {taken[api]}")
    if any(n.name == APISERVER for n in c.nodes):
        raise TopologyError(f"node {APISERVER!r}: the name is taken by the API server host")
    if backup_path and len(c.nodes) > 253:
        raise TopologyError(f"backup path: {len(c.nodes)} nodes do not fit {topodefaults.BACKUP_NETWORK} "
                            "(.1-.253 for nodes, .254 for the API server host)")


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
