"""Services for the benchmark, and the rulesets kube-proxy would write for them (pure).

* :func:`make_services`        N ClusterIP services, each with B endpoints
* :func:`lb_table`             the same services as the project's ``LBTable``
* :func:`iptables_full`        ``iptables-restore`` input for the whole nat table
                               (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*, statistic
                               mode random), what kube-proxy's full sync writes
* :func:`iptables_add_noflush` ``iptables-restore --noflush`` input adding one service:
                               only its new chains and its KUBE-SERVICES jump
* :func:`iptables_partial_sync` ``--noflush`` input as kube-proxy >= 1.28 writes it for
                               one new service: KUBE-SERVICES rewritten whole, plus the
                               new service's chains
* :func:`nft_full`             ``nft -f`` input: the kube-proxy nftables-mode ruleset
                               (``service-ips`` verdict map -> service chain with
                               ``numgen random mod N vmap`` -> endpoint chains)
* :func:`nft_add`              ``nft -f`` input adding one service to it

Chain names are built like kube-proxy's (``KUBE-SVC-`` + 16 base32 characters of
a SHA-256 of the service port name).  The cluster CIDR ``10.244.0.0/15`` covers
the benchmark's clients and backends, so the masquerade marks never fire (as for
pod-to-service traffic in a real cluster), but the rules are there and evaluated.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from twin.model.enums import Protocol
from twin.semantics.tables import LBBackend, LBService, LBTable

__all__ = [
    "Service", "make_services", "lb_table", "iptables_full", "iptables_add_noflush",
    "iptables_partial_sync", "nft_full", "nft_add", "CLUSTER_CIDR", "VIP_NET", "BACKEND_NET",
    "SERVICE_PORT", "TARGET_PORT", "NFT_TABLE",
]

VIP_NET = ipaddress.IPv4Network("10.96.0.0/16")
BACKEND_NET = ipaddress.IPv4Network("10.245.0.0/16")
CLUSTER_CIDR = "10.244.0.0/15"
SERVICE_PORT = 80
TARGET_PORT = 8080
NFT_TABLE = "kube-proxy"
_VIP_OFFSET = 16  # first VIP is 10.96.0.16


@dataclass(frozen=True)
class Service:
    index: int
    name: str  # ns/name
    vip: ipaddress.IPv4Address
    port: int
    backends: tuple[tuple[ipaddress.IPv4Address, int], ...]

    @property
    def port_name(self) -> str:
        return f"{self.name}:http"


def service(index: int, backends_per_service: int = 2) -> Service:
    """Service ``index``: VIP 10.96.x.y:80, endpoints 10.245.x.y:8080 (all distinct)."""
    vip = VIP_NET.network_address + _VIP_OFFSET + index
    first = BACKEND_NET.network_address + 1 + index * backends_per_service
    bes = tuple((first + j, TARGET_PORT) for j in range(backends_per_service))
    if vip not in VIP_NET or bes[-1][0] not in BACKEND_NET:
        raise ValueError(f"service {index} does not fit in {VIP_NET} / {BACKEND_NET}")
    return Service(index, f"bench/svc-{index:05d}", vip, SERVICE_PORT, bes)


def make_services(n: int, backends_per_service: int = 2, start: int = 0) -> list[Service]:
    return [service(i, backends_per_service) for i in range(start, start + n)]


def lb_table(services: Iterable[Service]) -> LBTable:
    """The services as the project's LBTable (TCP, ClusterIP, every backend active)."""
    return LBTable(tuple(
        LBService(s.name, s.vip, s.port, Protocol.TCP, "ClusterIP", tuple(
            LBBackend(ip, port, Protocol.TCP, f"bench/pod-{ip}") for ip, port in s.backends))
        for s in services))


# -- iptables (kube-proxy iptables mode) ----------------------------------------------

def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(s: Service) -> str:
    return "KUBE-SVC-" + _hash16(s.port_name + "tcp")


def sep_chain(s: Service, ip: ipaddress.IPv4Address, port: int) -> str:
    return "KUBE-SEP-" + _hash16(s.port_name + "tcp" + f"{ip}:{port}")


_IPT_HEAD_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")


def _ipt_static_rules() -> list[str]:
    return [
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]


def _ipt_services_jump(s: Service) -> str:
    return (f'-A KUBE-SERVICES -d {s.vip}/32 -p tcp -m comment --comment "{s.port_name} cluster IP" '
            f"-m tcp --dport {s.port} -j {svc_chain(s)}")


_IPT_NODEPORTS_JUMP = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                       'this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')


def _ipt_service_chains(s: Service) -> tuple[list[str], list[str]]:
    """(chain declarations, rules) of one service's KUBE-SVC and KUBE-SEP chains."""
    decl = [f":{svc_chain(s)} - [0:0]"] + [f":{sep_chain(s, ip, p)} - [0:0]" for ip, p in s.backends]
    rules = [f'-A {svc_chain(s)} ! -s {CLUSTER_CIDR} -d {s.vip}/32 -p tcp -m comment --comment '
             f'"{s.port_name} cluster IP" -m tcp --dport {s.port} -j KUBE-MARK-MASQ']
    n = len(s.backends)
    for k, (ip, p) in enumerate(s.backends):
        stat = "" if k == n - 1 else f"-m statistic --mode random --probability {1.0 / (n - k):.11f} "
        rules.append(f'-A {svc_chain(s)} -m comment --comment "{s.port_name} -> {ip}:{p}" '
                     f"{stat}-j {sep_chain(s, ip, p)}")
    for ip, p in s.backends:
        sep = sep_chain(s, ip, p)
        rules.append(f'-A {sep} -s {ip}/32 -m comment --comment "{s.port_name}" -j KUBE-MARK-MASQ')
        rules.append(f'-A {sep} -p tcp -m comment --comment "{s.port_name}" -m tcp '
                     f"-j DNAT --to-destination {ip}:{p}")
    return decl, rules


def iptables_full(services: Sequence[Service]) -> str:
    """The whole nat table (``iptables-restore`` without --noflush replaces it)."""
    decl = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]"] + [f":{c} - [0:0]" for c in _IPT_HEAD_CHAINS]
    rules = _ipt_static_rules()
    body: list[str] = []
    for s in services:
        d, r = _ipt_service_chains(s)
        decl += d
        body += r
    rules += [_ipt_services_jump(s) for s in services] + [_IPT_NODEPORTS_JUMP] + body
    return "\n".join(["*nat", *decl, *rules, "COMMIT", ""])


def iptables_add_noflush(s: Service) -> str:
    """``--noflush`` input that adds just ``s``: its new chains and one KUBE-SERVICES rule."""
    decl, rules = _ipt_service_chains(s)
    jump = _ipt_services_jump(s).replace("-A KUBE-SERVICES", "-I KUBE-SERVICES 1", 1)
    return "\n".join(["*nat", *decl, jump, *rules, "COMMIT", ""])


def iptables_partial_sync(all_services: Sequence[Service], new: Service) -> str:
    """``--noflush`` input as kube-proxy >= 1.28 writes it when ``new`` appears:
    KUBE-SERVICES declared (so flushed) and rewritten whole, plus ``new``'s chains."""
    decl, rules = _ipt_service_chains(new)
    head = [":KUBE-SERVICES - [0:0]", *decl]
    jumps = [_ipt_services_jump(s) for s in all_services] + [_IPT_NODEPORTS_JUMP]
    return "\n".join(["*nat", *head, *jumps, *rules, "COMMIT", ""])


# -- nftables (kube-proxy nftables mode) ------------------------------------------------

def _nft_name(prefix: str, text: str) -> str:
    return f"{prefix}-{_hash16(text)[:8]}"


def nft_svc_chain(s: Service) -> str:
    return _nft_name("service", s.port_name) + f"-{s.name.replace('/', '-')}-tcp-{s.port}"


def nft_ep_chain(s: Service, ip: ipaddress.IPv4Address, port: int) -> str:
    return _nft_name("endpoint", f"{s.port_name}{ip}:{port}") + f"-{s.name.replace('/', '-')}-{ip}-{port}"


def _nft_service(s: Service) -> list[str]:
    t = f"ip {NFT_TABLE}"
    out: list[str] = []
    for ip, p in s.backends:
        ep = nft_ep_chain(s, ip, p)
        out += [f"add chain {t} {ep}",
                f"add rule {t} {ep} ip saddr {ip} jump mark-for-masquerade",
                f"add rule {t} {ep} meta l4proto tcp dnat to {ip}:{p}"]
    sc = nft_svc_chain(s)
    n = len(s.backends)
    vmap = " , ".join(f"{k} : goto {nft_ep_chain(s, ip, p)}" for k, (ip, p) in enumerate(s.backends))
    out += [f"add chain {t} {sc}",
            f"add rule {t} {sc} ip daddr {s.vip} tcp dport {s.port} ip saddr != {CLUSTER_CIDR} "
            "jump mark-for-masquerade",
            f"add rule {t} {sc} numgen random mod {n} vmap {{ {vmap} }}",
            f"add element {t} service-ips {{ {s.vip} . tcp . {s.port} : goto {sc} }}"]
    return out


def nft_full(services: Sequence[Service], replace: bool = False) -> str:
    """The kube-proxy table; ``replace``: delete the old table first (one transaction)."""
    t = f"ip {NFT_TABLE}"
    out = [f"add table {t}", f"delete table {t}"] if replace else []
    out += [
        f"add table {t}",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add chain {t} masquerading {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add chain {t} services",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add rule {t} nat-output jump services",
    ]
    for s in services:
        out += _nft_service(s)
    return "\n".join(out) + "\n"


def nft_add(s: Service) -> str:
    """``nft -f`` input adding one service to the table of :func:`nft_full`."""
    return "\n".join(_nft_service(s)) + "\n"
