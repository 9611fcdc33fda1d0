"""Golden files: the map contents the datapath compiles from the seed's manifests.

Scenario in (YAML), a sorted one-line-per-entry dump out, compared with a
file under tests/pure/golden/.  After an intended change, regenerate with
``UPDATE_GOLDEN=1 make test`` and review the diff like code.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from datapath.compile import compile_ipcache, compile_policy, policy_dump_lines
from datapath.compile_lb import LBIds, compile_lb, lb_dump_lines
from harness.inputs import load_cluster
from twin.semantics.lb import lb_table
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")


def check_golden(name: str, lines: list[str]) -> None:
    path = GOLDEN / name
    text = "\n".join(lines) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def test_seed_rule1_compiles_to_the_golden_policy_map():
    view = ClusterView(load_cluster([str(ROOT / "examples/seed/http-sw-app.yaml"),
                                     str(ROOT / "examples/policies/sw_l3_l4_policy.yaml")]))
    entries = compile_policy(view.engine.policy_table(), endpoint_identities=view.ids.pod_identities)
    check_golden("seed-rule1.policy.txt", policy_dump_lines(entries))


def test_seed_node_ipcache_compiles_to_the_golden_map():
    view = ClusterView(load_cluster([str(ROOT / "examples/seed/pods.yaml")]))
    entries = compile_ipcache(view.ids.ipcache("k8s-w1"))
    check_golden("seed-k8s-w1.ipcache.txt", [f"{k} -> {v}" for k, v in sorted(entries.items())])


def test_seed_service_compiles_to_the_golden_lb_maps():
    cluster = load_cluster([str(ROOT / "examples/seed/pods.yaml"), str(ROOT / "examples/seed/service.yaml"),
                            str(ROOT / "examples/services/udp-echo.yaml")])
    maps = compile_lb(lb_table(cluster), LBIds())
    check_golden("seed-services.lb.txt", lb_dump_lines(maps.services, maps.backends, maps.revnat))
