"""Fixtures for datapath tests: privilege checks, namespaces, a loaded node."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from topology import Pod, Topology  # noqa: E402

_DEFAULT_HEADERS = str(Path(__file__).resolve().parents[2] / ".build" / "kernel-headers")


def require_kernel() -> None:
    """Skip unless we are root, bcc imports and kernel headers are configured."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and loads BPF programs")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("needs bcc (python3-bpfcc): run with /usr/bin/python3 or a --system-site-packages venv")
    if not os.environ.get("BCC_KERNEL_SOURCE"):
        if Path(_DEFAULT_HEADERS, "include").is_dir():
            os.environ["BCC_KERNEL_SOURCE"] = _DEFAULT_HEADERS
        else:
            pytest.skip("needs kernel headers for bcc: set BCC_KERNEL_SOURCE")


@pytest.fixture
def topo() -> Iterator[Topology]:
    """One node netns with pods a (10.200.0.1) and b (10.200.0.2); removed afterwards."""
    require_kernel()
    t = Topology()
    try:
        t.create_node()
        t.add_pod("a", "10.200.0.1")
        t.add_pod("b", "10.200.0.2")
        yield t
    finally:
        t.destroy()


@pytest.fixture
def pods(topo: Topology) -> tuple[Pod, Pod]:
    return topo.pods[0], topo.pods[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "datapath: needs root, bcc and network namespaces")


ID_A = 1001
ID_B = 1002


@pytest.fixture
def node_dp(topo: Topology) -> Iterator[object]:
    """A NodeDatapath on the node netns, attached to both lxcs, endpoints and ipcache set."""
    import ipaddress

    from datapath.node import EndpointSpec, NodeDatapath

    a, b = topo.pods
    with NodeDatapath(topo.node_netns) as dp:
        dp.attach([a.lxc, b.lxc])
        dp.set_endpoints([EndpointSpec(a.lxc, ID_A, a.ip), EndpointSpec(b.lxc, ID_B, b.ip)])
        dp.set_ipcache({
            ipaddress.IPv4Network(f"{a.ip}/32"): ID_A,
            ipaddress.IPv4Network(f"{b.ip}/32"): ID_B,
        })
        yield dp
