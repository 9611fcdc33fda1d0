"""Smoke test of the benchmark (``bench/run.py``) in quick mode: small numbers,
every metric present, and the socket-LB connects really reached a backend.

Not a timing test: no latency or speed is asserted, only that the run is
complete and its reach checks hold.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
HEADERS = ROOT / ".build" / "kernel-headers"


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the benchmark creates network namespaces, cgroups and BPF programs")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("needs bcc (python3-bpfcc) in this interpreter")
    if not os.environ.get("BCC_KERNEL_SOURCE") and not (HEADERS / "include").is_dir():
        pytest.skip("needs kernel headers for bcc: set BCC_KERNEL_SOURCE (make setup builds .build/kernel-headers)")
    for tool in ("iptables-legacy-restore", "nft", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian packages iptables, nftables; make setup installs them)")


def test_quick_bench_writes_every_metric(tmp_path: Path) -> None:
    _require()
    env = dict(os.environ)
    env.setdefault("BCC_KERNEL_SOURCE", str(HEADERS))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--services", "50", "--small", "10",
         "--connects", "100", "--rounds", "2", "--add-repeats", "2", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Socket LB vs kube-proxy")

    assert res["params"]["services"] == 50 and res["params"]["small"] == 10
    for key in ("kernel", "cpu_model", "cores", "memory_gib", "python", "bcc", "iptables", "nft", "date", "client"):
        assert res["machine"].get(key) not in (None, ""), key

    lat = res["connect_latency"]
    assert set(lat) == {"direct", "socklb_small", "socklb_large", "iptables", "nftables"}
    for config, v in lat.items():
        for metric in ("n", "p50_us", "p90_us", "p99_us", "mean_us", "errors"):
            assert metric in v, (config, metric)
        assert v["n"] == 100 and v["errors"] == 0, (config, v)
        assert 0 < v["p50_us"] <= v["p99_us"], (config, v)

    add = res["add_service"]
    for metric in ("bpf_map_update", "bpf_project_set_services", "iptables_restore_full",
                   "iptables_restore_noflush_new_chains", "iptables_restore_partial_sync",
                   "nft_add_incremental", "spawn_baseline_nsenter_true"):
        assert add[metric]["samples"] >= 2, metric
    assert add["bpf_new_services_reachable"] is True
    assert add["bpf_map_writes_per_service"] == 6  # 2 backends, 1 revnat, 2 slots, 1 master
    assert add["iptables_kube_services_rules_after"] == 50 + 3 * 2 + 1  # + added services + nodeports jump

    for name in ("socklb_scaling_p50", "socklb_scaling_p99", "speedup_p99_vs_iptables",
                 "speedup_p99_vs_nftables", "add_service_vs_iptables_restore"):
        assert name in res["ratios"] and isinstance(res["goals"][name]["met"], bool), name

    # the socket-LB connects reached the backend: every connect succeeded, the backend
    # accepted exactly as many from that client, all on backend addresses of targeted
    # services, and connect4 recorded one reverse translation per socket
    for config in ("socklb_small", "socklb_large"):
        r = res["reach"][config]
        assert r["connects"] >= 100 and r["connects"] == r["connects_ok"] == r["accepted_at_backend"], r
        assert r["unexpected_destination"] == 0, r
        assert r["sock_revnat_entries"] == r["connects"], r
        assert r["ok"] is True
    assert res["reach"]["socklb_small"]["distinct_backends"] <= 2 * 10
    assert all(v["ok"] for v in res["reach"].values()), res["reach"]

    # nothing of this run is left behind
    sys.path.insert(0, str(ROOT))
    from bench.env import leftovers

    ns, cgs = leftovers()
    mine = [n for n in ns if n.startswith(res["run_id"])] + [str(c) for c in cgs if c.name == res["run_id"]]
    assert not mine, mine
