"""Topology defaults, documented in one place.

When the manifests name no Node objects, the cluster has the seed lab's three
nodes.  Fields a Node manifest leaves out are filled from these defaults, by
the node's position in manifest order.

| setting              | default                    | seed evidence                         |
|----------------------|----------------------------|---------------------------------------|
| node network         | 192.168.10.0/24            | KANS lab node LAN                     |
| node IPs             | .10 for the first node, then .101, .102, ...| k8s-s, k8s-w1, k8s-w2  |
| pod CIDRs            | 172.16.<i>.0/24 by node index | netpod on k8s-s got 172.16.0.249   |
| pod IPs              | .10, .11, ... of the node's pod CIDR, manifest order (status.podIP honoured if inside the CIDR) | |
| node router address  | .1 of the pod CIDR (cilium_host) |                                 |
| service CIDR         | 10.10.0.0/16               | ClusterIP 10.10.27.212                |
| ClusterIP allocation | hash of namespace/name into the service CIDR, linear probing; spec.clusterIP honoured | |
| node uplink          | ens5                       | `tc qdisc show dev ens5`, `^ens[0-9]+` |
| external host        | 192.168.10.200 on the node LAN (stands in for 8.8.8.8 / wttr.in) | |
| API server host      | 192.168.10.250:6443 on the node LAN (Lease API, etcd inside) | |
| API backup path      | 192.168.30.0/24: node i at .(i+1), point-to-point to the API server host (`mgmt0`) | |
"""
from __future__ import annotations

import ipaddress

NODE_NETWORK = ipaddress.IPv4Network("192.168.10.0/24")
POD_CIDR_BASE = ipaddress.IPv4Network("172.16.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.10.0.0/16")
UPLINK = "ens5"
EXTERNAL_HOST_IP = ipaddress.IPv4Address("192.168.10.200")
FIRST_POD_HOST = 10
#: the control plane's host on the node LAN: the Lease API (coordination.k8s.io/v1 subset)
APISERVER_IP = ipaddress.IPv4Address("192.168.10.250")
APISERVER_PORT = 6443
#: a second path from each node to the API server (``settings.api_backup_path``), not on the LAN
BACKUP_NETWORK = ipaddress.IPv4Network("192.168.30.0/24")
BACKUP_DEV = "mgmt0"

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"

#: The seed lab's nodes (used when the manifests contain no Node objects).
SEED_NODES = (
    ("k8s-s", {CONTROL_PLANE_LABEL: "", "kubernetes.io/hostname": "k8s-s"}, True),
    ("k8s-w1", {"kubernetes.io/hostname": "k8s-w1"}, False),
    ("k8s-w2", {"kubernetes.io/hostname": "k8s-w2"}, False),
)


def node_ip(index: int) -> ipaddress.IPv4Address:
    host = 10 if index == 0 else 100 + index
    return NODE_NETWORK.network_address + host


def pod_cidr(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"172.16.{index}.0/24")


def router_ip(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return cidr.network_address + 1
