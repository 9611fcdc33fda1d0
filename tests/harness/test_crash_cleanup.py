"""Harness tier: a real run killed with SIGKILL (no teardown at all) is cleaned
up by the next run's cleanup: processes, namespaces and its cgroups (whose
socket-LB programs detach with them)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cleanup import CGROUP_ROOT, NETNS_DIR, _is_zombie, cleanup_leftovers
from harness.real import real_unavailable_reason

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

CHILD = r"""
import sys, time
from harness.inputs import load_cluster
from harness.real import RealCluster
rc = RealCluster(load_cluster(["examples/seed/pods.yaml", "examples/seed/service.yaml"])).__enter__()
print(rc.topo.run_id, rc.topo.server_pid("default/webpod1"), flush=True)
time.sleep(600)
"""


def test_sigkilled_run_leaves_nothing_after_the_next_cleanup():
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        run_id, server_pid = child.stdout.readline().split()
        assert (CGROUP_ROOT / f"twn-{run_id}").is_dir()
        assert any(p.name.startswith(f"twn-{run_id}-") for p in NETNS_DIR.iterdir())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    lines = cleanup_leftovers()
    assert any(run_id in ln for ln in lines), lines
    assert not (CGROUP_ROOT / f"twn-{run_id}").exists()
    assert not any(p.name.startswith(f"twn-{run_id}-") for p in NETNS_DIR.iterdir())
    deadline = time.monotonic() + 5  # killed; reaped by init when it gets to it
    while Path(f"/proc/{server_pid}").exists() and not _is_zombie(int(server_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server_pid}").exists() or _is_zombie(int(server_pid))
